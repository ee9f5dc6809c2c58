// Package netns gives a sandbox outbound-only network access: its own
// network namespace joined to the host by a veth pair, NAT for traffic that
// leaves the host, and nftables rules that drop every new connection towards
// a sandbox (from the host, other sandboxes or outside) and every new
// connection from a sandbox to the host itself.
package netns

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
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
// idempotent across restarts.
const firewall = `
table inet arbor
delete table inet arbor
table inet arbor {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ip daddr 10.88.0.0/16 ct state new drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
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

// Manager allocates sandbox networks for one daemon. Several daemons may
// share a host (tests do): a network's addresses are claimed by creating
// its host interface, whose name the index fixes, so the kernel refuses a
// second claim; its namespace is named after the daemon's tag, so Cleanup
// removes one daemon's leftovers and never another's live networks.
type Manager struct {
	tag   string
	mu    sync.Mutex
	used  map[int]bool
	ready bool
}

// NewManager returns a Manager for the daemon tagged tag (a short string
// unique to its home, see Tag); the firewall is installed on first use.
func NewManager(tag string) *Manager { return &Manager{tag: tag, used: map[int]bool{}} }

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
	idx     int
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
	cmd.Stdin = strings.NewReader(firewall)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("install sandbox firewall (is nftables installed? run scripts/setup.sh): %v: %s", err, out)
	}
	m.ready = true
	return nil
}

// Create makes a network for a sandbox.
func (m *Manager) Create(ctx context.Context) (*Net, error) {
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
		n, err := m.create(ctx, idx)
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

func (m *Manager) create(ctx context.Context, idx int) (*Net, error) {
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
	if err := run(ctx, "ip", "link", "add", n.HostIf, "type", "veth", "peer", "name", "arbp"+strconv.Itoa(idx)); err != nil {
		if _, serr := net.InterfaceByName(n.HostIf); serr == nil {
			return nil, errTaken
		}
		return nil, err
	}
	steps := [][]string{
		{"ip", "netns", "add", n.Name},
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
	m.remove(n)
	m.mu.Lock()
	delete(m.used, n.idx)
	m.mu.Unlock()
}

func (m *Manager) remove(n *Net) {
	ctx := context.Background()
	_ = run(ctx, "ip", "link", "del", n.HostIf)
	_ = run(ctx, "ip", "netns", "del", n.Name)
}

// Cleanup removes every sandbox network an earlier run of this daemon
// left behind (after kill -9); other daemons' networks stay.
func (m *Manager) Cleanup(ctx context.Context) {
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
