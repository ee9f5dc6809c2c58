// Package netns gives a sandbox outbound-only network access: its own
// network namespace joined to the host by a veth pair, NAT for traffic that
// leaves the host, and nftables rules that drop every new connection towards
// a sandbox (from the host, other sandboxes or outside), every new
// connection from a sandbox to the host itself, and everything a sandbox
// sends to private, link-local, loopback, multicast and other special
// ranges (DefaultDeny) unless the daemon's operator allowed the range.
package netns

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// Subnet holds every sandbox address: one /30 per networked run.
const Subnet = "10.88.0.0/16"

const maxNets = 1 << 14 // /30s in the /16

// firewall is applied once per daemon. Replacing the tables keeps it
// idempotent across restarts. What a sandbox sends must come from an
// address routed back through its own interface (strict reverse-path
// filtering): root in a runc sandbox has CAP_NET_RAW over its network
// (which its user namespace owns, see owned.go), as in a Docker container,
// and could otherwise send packets with any source address.
const firewall = `
table inet arbor
delete table inet arbor
table inet arbor {
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		iifname "arbh*" fib saddr . iif oif missing drop
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		ip daddr 10.88.0.0/16 ct state new drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "arbh*" ct mark 0x0a7b0053 accept
		iifname "arbh*" meta mark 0x0a7b0053 accept
		iifname "arbh*" ct state new drop
	}
	chain output {
		type filter hook output priority filter; policy accept;
		ip daddr 10.88.0.0/16 ct state new drop
	}
}
table ip arbor_nat
delete table ip arbor_nat
table ip arbor_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.88.0.0/16 oifname != "arbh*" masquerade
	}
}
`

// DNSMark marks what an egress policy (package egress) redirects from a
// sandbox to arbor's resolver on the host: the one new connection from a
// sandbox to the host the firewall lets through. Only host rules set it,
// on the connection (ct mark): NAT rules see only a flow's first packet,
// and a UDP flow's later packets are still "new" until an answer comes
// back (a resolver client's second query on its socket, sent before the
// first is answered, as busybox's nslookup sends A and AAAA). The packet
// mark is also accepted, for policies of daemons that set only that.
const DNSMark = 0x0a7b0053

// DefaultDeny lists the destinations a sandbox may not reach unless the
// operator allows them: addresses that are not the public internet, where
// a sandbox would find the host's neighbours, cloud metadata services
// (169.254.169.254) and internal networks.
var DefaultDeny = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("10.0.0.0/8"),     // RFC 1918
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT (RFC 6598)
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local, cloud metadata
	netip.MustParsePrefix("172.16.0.0/12"),  // RFC 1918
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("192.168.0.0/16"), // RFC 1918
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
	netip.MustParsePrefix("::/128"),         // unspecified
	netip.MustParsePrefix("::1/128"),        // loopback
	netip.MustParsePrefix("::ffff:0:0/96"),  // IPv4-mapped
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	netip.MustParsePrefix("fc00::/7"),       // unique local
	netip.MustParsePrefix("fe80::/10"),      // link-local
	netip.MustParsePrefix("fec0::/10"),      // site-local (deprecated)
	netip.MustParsePrefix("ff00::/8"),       // multicast
}

// ParseAllow parses the ranges an operator allows despite DefaultDeny:
// CIDRs ("10.1.2.0/24") or single addresses ("169.254.169.254").
func ParseAllow(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("network allow %q is not a CIDR (like 10.1.2.0/24) or an address (like 169.254.169.254)", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Manager allocates sandbox networks for one daemon. Several daemons may
// share a host (tests do): a network's addresses are claimed by creating
// its host interface, whose name the index fixes, so the kernel refuses a
// second claim; its namespace is named after the daemon's tag, so Cleanup
// removes one daemon's leftovers and never another's live networks.
type Manager struct {
	tag   string
	allow []netip.Prefix
	mu    sync.Mutex
	used  map[int]bool
	ready bool
	// onRelease runs before a network is removed (see OnRelease).
	onRelease []func(*Net)
}

// OnRelease registers f to run, before its removal, for every network
// released: state kept per network (an egress policy) goes with it.
// Register before the first Create.
func (m *Manager) OnRelease(f func(*Net)) { m.onRelease = append(m.onRelease, f) }

// NewManager returns a Manager for the daemon tagged tag (a short string
// unique to its home, see Tag) whose sandboxes may reach the allow ranges
// despite DefaultDeny; the firewall is installed on first use.
func NewManager(tag string, allow ...netip.Prefix) *Manager {
	return &Manager{tag: tag, allow: allow, used: map[int]bool{}}
}

// group is the interface group of this daemon's host interfaces: its own
// egress rules match it, so daemons sharing a host (tests do) each apply
// their own allow list to their own sandboxes only.
func (m *Manager) group() uint32 {
	g, _ := strconv.ParseUint(m.tag, 16, 32)
	// ip(8) takes groups up to 2^31-1; 0 is every interface's default.
	return max(uint32(g)&0x7fffffff, 1)
}

func (m *Manager) egressTable() string { return "arbor_egress_" + m.tag }

// egressRules drops what this daemon's sandboxes send to denied ranges.
// It is its own table: an accept here ends only this chain, so the shared
// rules (no sandbox-to-sandbox traffic) still apply to allowed ranges.
func (m *Manager) egressRules() string {
	var b strings.Builder
	t := m.egressTable()
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\ntable inet %s {\n", t, t, t)
	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\tmeta iifgroup != %d return\n", m.group())
	for _, p := range m.allow {
		fmt.Fprintf(&b, "\t\t%s daddr %s accept\n", family(p), p)
	}
	for _, fam := range []string{"ip", "ip6"} {
		var set []string
		for _, p := range DefaultDeny {
			if family(p) == fam {
				set = append(set, p.String())
			}
		}
		fmt.Fprintf(&b, "\t\t%s daddr { %s } drop\n", fam, strings.Join(set, ", "))
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "ip"
	}
	return "ip6"
}

// Tag derives a daemon's network tag from its home directory.
func Tag(home string) string {
	sum := sha256.Sum256([]byte(home))
	return hex.EncodeToString(sum[:4])
}

// Net is one sandbox's network.
type Net struct {
	Name    string // netns name
	Path    string // /var/run/netns/<name>, for the OCI spec
	HostIf  string // host end of the veth pair
	IP      string // the sandbox's address
	Gateway string // the host end's address
	// UserNS is the path of the user namespace that owns the network
	// namespace, for a sandbox that must run in it (CreateOwned); "" when
	// the network namespace belongs to the host.
	UserNS string
	idx    int
}

func run(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (m *Manager) setup(ctx context.Context) error {
	if m.ready {
		return nil
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable IP forwarding: %w", err)
	}
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(firewall + m.egressRules())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("install sandbox firewall (is nftables installed? run scripts/setup.sh): %v: %s", err, out)
	}
	m.ready = true
	return nil
}

// Create makes a network for a sandbox that runs in the host's user
// namespace (runsc, or runc without a user namespace).
func (m *Manager) Create(ctx context.Context) (*Net, error) { return m.CreateOwned(ctx, nil) }

// Owner is the id mapping of the user namespace that is to own a network
// namespace: ids 0..Size-1 are host ids HostID...
type Owner struct{ HostID, Size uint32 }

// CreateOwned makes a network for a sandbox; with owner, its network
// namespace belongs to a new user namespace with owner's mapping (at
// Net.UserNS), which the sandbox must run in (see owned.go).
func (m *Manager) CreateOwned(ctx context.Context, owner *Owner) (*Net, error) {
	m.mu.Lock()
	if err := m.setup(ctx); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	m.mu.Unlock()
	for idx := 1; idx < maxNets; idx++ {
		m.mu.Lock()
		if m.used[idx] {
			m.mu.Unlock()
			continue
		}
		m.used[idx] = true
		m.mu.Unlock()
		n, err := m.create(ctx, idx, owner)
		if err == nil {
			return n, nil
		}
		m.mu.Lock()
		delete(m.used, idx)
		m.mu.Unlock()
		if !errors.Is(err, errTaken) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no free sandbox networks (%d in use on this host)", maxNets-1)
}

// errTaken means another daemon holds the network with that index.
var errTaken = errors.New("network index in use")

func (m *Manager) create(ctx context.Context, idx int, owner *Owner) (*Net, error) {
	base := idx * 4
	n := &Net{
		Name:    fmt.Sprintf("arbor-%s-%d", m.tag, idx),
		HostIf:  fmt.Sprintf("arbh%d", idx),
		Gateway: fmt.Sprintf("10.88.%d.%d", base/256, base%256+1),
		IP:      fmt.Sprintf("10.88.%d.%d", base/256, base%256+2),
		idx:     idx,
	}
	n.Path = "/var/run/netns/" + n.Name
	// The host interface is the claim: creating it fails if it exists.
	// Its group puts it under this daemon's egress rules from the start.
	if err := run(ctx, "ip", "link", "add", n.HostIf, "group", strconv.FormatUint(uint64(m.group()), 10), "type", "veth", "peer", "name", "arbp"+strconv.Itoa(idx)); err != nil {
		// "File exists" means another daemon holds the name, or held it
		// a moment ago (it may be gone by the time we look): either way
		// the next index is the one to try.
		if _, serr := net.InterfaceByName(n.HostIf); serr == nil || strings.Contains(err.Error(), "File exists") {
			return nil, errTaken
		}
		return nil, err
	}
	if owner != nil {
		if err := createOwned(n, owner.HostID, owner.Size); err != nil {
			m.remove(n)
			return nil, err
		}
	} else if err := run(ctx, "ip", "netns", "add", n.Name); err != nil {
		m.remove(n)
		return nil, err
	}
	steps := [][]string{
		{"ip", "link", "set", "arbp" + strconv.Itoa(idx), "netns", n.Name, "name", "eth0"},
		{"ip", "addr", "add", n.Gateway + "/30", "dev", n.HostIf},
		{"ip", "link", "set", n.HostIf, "up"},
		{"ip", "-n", n.Name, "addr", "add", n.IP + "/30", "dev", "eth0"},
		{"ip", "-n", n.Name, "link", "set", "eth0", "up"},
		{"ip", "-n", n.Name, "link", "set", "lo", "up"},
		{"ip", "-n", n.Name, "route", "add", "default", "via", n.Gateway},
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			m.remove(n)
			return nil, err
		}
	}
	return n, nil
}

// Release deletes n's namespace (which removes the veth pair) and frees its addresses.
func (m *Manager) Release(n *Net) {
	for _, f := range m.onRelease {
		f(n)
	}
	m.remove(n)
	m.mu.Lock()
	delete(m.used, n.idx)
	m.mu.Unlock()
}

func (m *Manager) remove(n *Net) {
	ctx := context.Background()
	_ = run(ctx, "ip", "link", "del", n.HostIf)
	_ = run(ctx, "ip", "netns", "del", n.Name)
	unbindNS(n.UserNS)
}

// Close removes this daemon's egress rules once its sandboxes are gone.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ready {
		_ = run(context.Background(), "nft", "delete", "table", "inet", m.egressTable())
		m.ready = false
	}
}

// Cleanup removes every sandbox network an earlier run of this daemon
// left behind (after kill -9), and its egress rules (installed again on
// first use, with this run's allow list); other daemons' networks stay.
func (m *Manager) Cleanup(ctx context.Context) {
	m.mu.Lock()
	if !m.ready {
		_ = run(ctx, "nft", "delete", "table", "inet", m.egressTable())
	}
	m.mu.Unlock()
	defer m.cleanupUserns(ctx)
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return
	}
	prefix := "arbor-" + m.tag + "-"
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix) {
			continue
		}
		if idx, err := strconv.Atoi(strings.TrimPrefix(f[0], prefix)); err == nil {
			_ = run(ctx, "ip", "link", "del", fmt.Sprintf("arbh%d", idx))
		}
		_ = run(ctx, "ip", "netns", "del", f[0])
	}
}
