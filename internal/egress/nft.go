package egress

import (
	"context"
	"encoding/json"
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
	w("\t\tiifname %q udp dport 53 meta mark set 0x%x dnat ip to %s", hostIf, netns.DNSMark, dns)
	w("\t\tiifname %q tcp dport 53 meta mark set 0x%x dnat ip to %s:%d", hostIf, netns.DNSMark, dns.Addr(), dnsTCP)
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

// admit adds addrs to the table's resolved set for ttl (bounded), renewing
// the timeout of addresses already there: add-delete-add is one
// transaction, so an address in use never leaves the set.
func admit(ctx context.Context, table string, addrs []netip.Addr, ttl time.Duration) error {
	ttl = min(max(ttl, minTTL), maxTTL)
	var els []string
	for _, a := range addrs {
		els = append(els, fmt.Sprintf("%s timeout %ds", a, int(ttl.Seconds())))
	}
	set := strings.Join(els, ", ")
	plain := make([]string, len(addrs))
	for i, a := range addrs {
		plain[i] = a.String()
	}
	return nft(ctx, fmt.Sprintf("add element inet %s dns4 { %s }\ndelete element inet %s dns4 { %s }\nadd element inet %s dns4 { %s }\n",
		table, set, table, strings.Join(plain, ", "), table, set))
}

// Dropped is one denied destination.
type Dropped struct {
	Addr  string `json:"addr"`
	Proto string `json:"proto"`
	Port  int    `json:"port"`
}

// readDenied returns the table's dropped packet count and the denied
// destinations it recorded.
func readDenied(ctx context.Context, table string) (int64, []Dropped, error) {
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets int64  `json:"packets"`
			} `json:"counter"`
			Set *struct {
				Name string            `json:"name"`
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	out, err := exec.CommandContext(ctx, "nft", "-j", "list", "table", "inet", table).Output()
	if err != nil {
		return 0, nil, fmt.Errorf("nft list table %s: %v", table, err)
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return 0, nil, fmt.Errorf("nft list table %s: %v", table, err)
	}
	var packets int64
	var dropped []Dropped
	for _, o := range doc.Nftables {
		if o.Counter != nil && o.Counter.Name == "dropped" {
			packets = o.Counter.Packets
		}
		if o.Set == nil || o.Set.Name != "denied" {
			continue
		}
		for _, raw := range o.Set.Elem {
			// An element is {"concat": [...]} or, with per-element
			// state, {"elem": {"val": {"concat": [...]}, ...}}.
			var el struct {
				Concat []any `json:"concat"`
				Elem   *struct {
					Val struct {
						Concat []any `json:"concat"`
					} `json:"val"`
				} `json:"elem"`
			}
			if json.Unmarshal(raw, &el) != nil {
				continue
			}
			c := el.Concat
			if el.Elem != nil {
				c = el.Elem.Val.Concat
			}
			if len(c) != 3 {
				continue
			}
			d := Dropped{}
			d.Addr, _ = c[0].(string)
			d.Proto, _ = c[1].(string)
			if port, ok := c[2].(float64); ok {
				d.Port = int(port)
			}
			dropped = append(dropped, d)
		}
	}
	return packets, dropped, nil
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
