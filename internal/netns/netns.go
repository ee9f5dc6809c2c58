// Package netns gives a sandbox outbound-only network access: its own
// network namespace joined to the host by a veth pair, NAT for traffic that
// leaves the host, and nftables rules that drop every new connection towards
// a sandbox (from the host, other sandboxes or outside) and every new
// connection from a sandbox to the host itself.
package netns

import (
	"context"
	"fmt"
	"os"
	"os/exec"
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

// Manager allocates sandbox networks.
type Manager struct {
	mu    sync.Mutex
	used  map[int]bool
	ready bool
}

// NewManager returns a Manager; the firewall is installed on first use.
func NewManager() *Manager { return &Manager{used: map[int]bool{}} }

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

// Create makes a network for sandbox id (any unique string).
func (m *Manager) Create(ctx context.Context, id string) (*Net, error) {
	m.mu.Lock()
	if err := m.setup(ctx); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	idx := -1
	for i := 1; i < maxNets; i++ {
		if !m.used[i] {
			idx = i
			break
		}
	}
	if idx < 0 {
		m.mu.Unlock()
		return nil, fmt.Errorf("no free sandbox networks")
	}
	m.used[idx] = true
	m.mu.Unlock()

	base := idx * 4
	short := id
	if len(short) > 8 {
		short = short[:8]
	}
	n := &Net{
		Name:    "arbor-" + short,
		HostIf:  "arbh" + short,
		Gateway: fmt.Sprintf("10.88.%d.%d", base/256, base%256+1),
		IP:      fmt.Sprintf("10.88.%d.%d", base/256, base%256+2),
		idx:     idx,
	}
	n.Path = "/var/run/netns/" + n.Name
	steps := [][]string{
		{"ip", "netns", "add", n.Name},
		{"ip", "link", "add", n.HostIf, "type", "veth", "peer", "name", "eth0", "netns", n.Name},
		{"ip", "addr", "add", n.Gateway + "/30", "dev", n.HostIf},
		{"ip", "link", "set", n.HostIf, "up"},
		{"ip", "-n", n.Name, "addr", "add", n.IP + "/30", "dev", "eth0"},
		{"ip", "-n", n.Name, "link", "set", "eth0", "up"},
		{"ip", "-n", n.Name, "link", "set", "lo", "up"},
		{"ip", "-n", n.Name, "route", "add", "default", "via", n.Gateway},
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			m.Release(n)
			return nil, err
		}
	}
	return n, nil
}

// Release deletes n's namespace (which removes the veth pair) and frees its addresses.
func (m *Manager) Release(n *Net) {
	ctx := context.Background()
	_ = run(ctx, "ip", "link", "del", n.HostIf)
	_ = run(ctx, "ip", "netns", "del", n.Name)
	m.mu.Lock()
	delete(m.used, n.idx)
	m.mu.Unlock()
}

// Cleanup removes every sandbox network left by an earlier daemon.
func Cleanup(ctx context.Context) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], "arbor-") {
			_ = run(ctx, "ip", "link", "del", "arbh"+strings.TrimPrefix(f[0], "arbor-"))
			_ = run(ctx, "ip", "netns", "del", f[0])
		}
	}
}
