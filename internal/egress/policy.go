// Package egress narrows a networked sandbox's outbound access to a
// policy: a DNS resolver that answers only allowed names, and nftables
// rules on the sandbox's host interface that pass only addresses those
// answers returned (for their TTL), allowed ranges and allowed ports. It
// sits on top of netns's outbound-only network and its default denial of
// private ranges, which keep holding whatever a policy allows.
package egress

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Policy is a run's egress policy as given: entries of Allow and Deny are
// each a domain name ("pypi.org", or "*.pythonhosted.org" for any name
// below it), a CIDR or address ("203.0.113.0/24", "203.0.113.7"), or a
// port ("443" for TCP and UDP, "tcp:443", "udp:8000-8100").
type Policy struct {
	Allow []string
	Deny  []string
}

// Empty reports whether p restricts nothing.
func (p Policy) Empty() bool { return len(p.Allow) == 0 && len(p.Deny) == 0 }

// PortRange is an inclusive destination port range; Proto is "tcp", "udp"
// or "" for both.
type PortRange struct {
	Proto    string
	From, To uint16
}

func (r PortRange) nft() string {
	ports := strconv.Itoa(int(r.From))
	if r.To != r.From {
		ports += "-" + strconv.Itoa(int(r.To))
	}
	if r.Proto == "" {
		return "meta l4proto { tcp, udp } th dport " + ports
	}
	return r.Proto + " dport " + ports
}

// list is one side (allow or deny) of a parsed policy.
type list struct {
	names    []string // exact names, lower case, no trailing dot
	suffixes []string // from "*.example.com": ".example.com"
	prefixes []netip.Prefix
	ports    []PortRange
}

func (l list) destinations() bool {
	return len(l.names)+len(l.suffixes)+len(l.prefixes) > 0
}

func (l list) matchName(name string) bool {
	for _, n := range l.names {
		if name == n {
			return true
		}
	}
	for _, s := range l.suffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// Rules is a checked Policy.
type Rules struct {
	allow, deny list
}

// Parse checks p; its errors name the entry and the forms it may take.
func Parse(p Policy) (*Rules, error) {
	r := &Rules{}
	for _, side := range []struct {
		name    string
		entries []string
		into    *list
	}{{"allow", p.Allow, &r.allow}, {"deny", p.Deny, &r.deny}} {
		for _, e := range side.entries {
			if err := side.into.add(strings.TrimSpace(e)); err != nil {
				return nil, fmt.Errorf("egress %s entry %q: %v; an entry is a domain name (pypi.org, *.pythonhosted.org), a CIDR or address (203.0.113.0/24) or a port (443, tcp:443, udp:8000-8100)", side.name, e, err)
			}
		}
	}
	return r, nil
}

func (l *list) add(e string) error {
	if e == "" {
		return fmt.Errorf("empty")
	}
	if pr, ok, err := parsePort(e); ok {
		if err != nil {
			return err
		}
		l.ports = append(l.ports, pr)
		return nil
	}
	if p, err := netip.ParsePrefix(e); err == nil {
		if !p.Addr().Is4() {
			return fmt.Errorf("sandbox networks are IPv4 only")
		}
		l.prefixes = append(l.prefixes, p.Masked())
		return nil
	}
	if a, err := netip.ParseAddr(e); err == nil {
		if !a.Is4() {
			return fmt.Errorf("sandbox networks are IPv4 only")
		}
		l.prefixes = append(l.prefixes, netip.PrefixFrom(a, 32))
		return nil
	}
	name := strings.TrimSuffix(strings.ToLower(e), ".")
	wild := strings.HasPrefix(name, "*.")
	if wild {
		name = name[2:]
	}
	if !validName(name) {
		return fmt.Errorf("not a domain name, CIDR, address or port")
	}
	if wild {
		l.suffixes = append(l.suffixes, "."+name)
	} else {
		l.names = append(l.names, name)
	}
	return nil
}

// parsePort reads "443", "tcp:443", "udp:8000-8100"; ok is false when e
// is not meant as a port.
func parsePort(e string) (PortRange, bool, error) {
	proto, ports := "", e
	if i := strings.IndexByte(e, ':'); i >= 0 && (e[:i] == "tcp" || e[:i] == "udp") {
		proto, ports = e[:i], e[i+1:]
	} else if strings.Trim(e, "0123456789-") != "" {
		return PortRange{}, false, nil
	}
	from, to, isRange := strings.Cut(ports, "-")
	if !isRange {
		to = from
	}
	f, err1 := strconv.ParseUint(from, 10, 16)
	t, err2 := strconv.ParseUint(to, 10, 16)
	if err1 != nil || err2 != nil || f == 0 || t < f {
		return PortRange{}, true, fmt.Errorf("bad port or port range")
	}
	return PortRange{Proto: proto, From: uint16(f), To: uint16(t)}, true, nil
}

func validName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// NameAllowed reports whether the resolver may answer for name: it is not
// denied, and it is allowed or the policy allows no destinations (a
// deny-only or port-only policy).
func (r *Rules) NameAllowed(name string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if r.deny.matchName(name) {
		return false
	}
	return !r.allow.destinations() || r.allow.matchName(name)
}

// Restricted reports whether packets may go only to allowed destinations
// (the allow list names some), rather than anywhere not denied.
func (r *Rules) Restricted() bool { return r.allow.destinations() }
