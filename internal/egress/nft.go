package egress

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/netns"
)

// TTL bounds for resolved addresses in a run's set: a short TTL must
// outlive the client's connect that follows the answer; a long one must
// not keep an address open after the name moved.
const (
	minTTL = 30 * time.Second
	maxTTL = time.Hour
)

// deniedMax bounds the distinct denied destinations a run records.
const deniedMax = 1024

// tableRules is a run's nftables table: DNS (UDP and TCP port 53, to any
// address) is redirected to the resolver at dns; what the sandbox sends on
// hostIf goes through the policy; denied packets are counted and their
// destinations recorded. It replaces an earlier table of the same name.
func tableRules(table, hostIf string, dns netip.AddrPort, dnsTCP uint16, r *Rules) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("table inet %s\ndelete table inet %s\ntable inet %s {", table, table, table)
	w("\tset dns4 { type ipv4_addr; flags timeout; size 65536; }")
	w("\tset denied { type ipv4_addr . inet_proto . inet_service; flags dynamic; size %d; }", deniedMax)
	w("\tcounter dropped { }")
	w("\tchain prerouting_dns {\n\t\ttype nat hook prerouting priority dstnat; policy accept;")
	// Marked on the connection, whose every packet the firewall must
	// admit (see netns.DNSMark), and on the packet, for firewalls of
	// daemons that look at that alone.
	w("\t\tiifname %q udp dport 53 meta mark set 0x%x ct mark set 0x%x dnat ip to %s", hostIf, netns.DNSMark, netns.DNSMark, dns)
	w("\t\tiifname %q tcp dport 53 meta mark set 0x%x ct mark set 0x%x dnat ip to %s:%d", hostIf, netns.DNSMark, netns.DNSMark, dns.Addr(), dnsTCP)
	w("\t}")
	w("\tchain forward_policy {\n\t\ttype filter hook forward priority filter; policy accept;")
	w("\t\tiifname != %q return", hostIf)
	w("\t\tct state established,related return")
	w("\t\tmeta nfproto != ipv4 goto policy_deny")
	if len(r.deny.prefixes) > 0 {
		w("\t\tip daddr { %s } goto policy_deny", joinPrefixes(r.deny.prefixes))
	}
	for _, p := range r.deny.ports {
		w("\t\t%s goto policy_deny", p.nft())
	}
	if r.Restricted() {
		w("\t\tip daddr @dns4 goto policy_ports")
		if len(r.allow.prefixes) > 0 {
			w("\t\tip daddr { %s } goto policy_ports", joinPrefixes(r.allow.prefixes))
		}
		w("\t\tgoto policy_deny")
	} else {
		w("\t\tgoto policy_ports")
	}
	w("\t}")
	w("\tchain policy_ports {")
	if len(r.allow.ports) > 0 {
		for _, p := range r.allow.ports {
			w("\t\t%s return", p.nft())
		}
		w("\t\tgoto policy_deny")
	}
	w("\t}")
	w("\tchain policy_deny {")
	w("\t\tmeta nfproto ipv4 meta l4proto { tcp, udp } add @denied { ip daddr . meta l4proto . th dport }")
	w("\t\tcounter name dropped drop")
	w("\t}\n}")
	return b.String()
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func nft(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Dropped is one denied destination.
type Dropped struct {
	Addr  string `json:"addr"`
	Proto string `json:"proto"`
	Port  int    `json:"port"`
}

// Cleanup deletes the tables of runs a killed daemon left behind: those
// whose names start with prefix.
func Cleanup(ctx context.Context, prefix string) {
	out, err := exec.CommandContext(ctx, "nft", "list", "tables", "inet").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && strings.HasPrefix(f[2], prefix) {
			_ = exec.CommandContext(ctx, "nft", "delete", "table", "inet", f[2]).Run()
		}
	}
}
