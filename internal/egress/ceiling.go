package egress

import (
	"fmt"
	"net/netip"
	"strings"
)

// Within bounds a run's policy by a ceiling (an account's or the daemon's
// policy): the run may narrow it, never widen it. It returns the policy to
// enforce, or an error naming the first entry of run that asks for more
// than the ceiling gives.
//
// A run is refused, not silently cut down: a request intersected behind
// its back would fail later as unreachable hosts, far from the cause. Each
// dimension is bounded on its own, so the result stays one flat policy:
//   - destinations: when the ceiling names some, each name or CIDR the run
//     allows must lie within one of the ceiling's (a name under a name or
//     wildcard, a wildcard under a wildcard, a CIDR inside a CIDR: a name
//     is never proven inside a CIDR, whose addresses DNS decides); a run
//     naming none gets the ceiling's;
//   - ports: likewise, each port range within one range of the ceiling's
//     (for the same protocol, or both); a run naming none gets the ceiling's;
//   - deny: the run's and the ceiling's together; a run may not allow what
//     the ceiling denies outright (a name, CIDR or range it denies whole).
func Within(run, ceiling Policy) (Policy, error) {
	c, err := Parse(ceiling)
	if err != nil {
		return Policy{}, err
	}
	if ceiling.Empty() {
		return run, nil
	}
	out := Policy{Deny: append(append([]string(nil), run.Deny...), ceiling.Deny...)}
	var runDests, runPorts, ceilDests, ceilPorts []string
	for _, e := range ceiling.Allow {
		if isPort(e) {
			ceilPorts = append(ceilPorts, e)
		} else {
			ceilDests = append(ceilDests, e)
		}
	}
	for _, e := range run.Allow {
		var l list
		if err := l.add(strings.TrimSpace(e)); err != nil {
			return Policy{}, fmt.Errorf("egress allow entry %q: %v", e, err)
		}
		if len(l.ports) > 0 {
			runPorts = append(runPorts, e)
		} else {
			runDests = append(runDests, e)
		}
		if why := c.refuses(l); why != "" {
			return Policy{}, fmt.Errorf("egress allow entry %q %s", e, why)
		}
	}
	if len(runDests) == 0 {
		runDests = ceilDests
	}
	if len(runPorts) == 0 {
		runPorts = ceilPorts
	}
	out.Allow = append(runDests, runPorts...)
	return out, nil
}

// isPort reports whether e (a valid entry) is a port entry.
func isPort(e string) bool {
	_, ok, _ := parsePort(strings.TrimSpace(e))
	return ok
}

// refuses says why ceiling r does not allow the one-entry list l, or "".
func (r *Rules) refuses(l list) string {
	switch {
	case len(l.ports) > 0:
		p := l.ports[0]
		if r.deny.coversPort(p) {
			return "is denied by the ceiling"
		}
		if len(r.allow.ports) > 0 && !r.allow.coversPort(p) {
			return "is outside the ports the ceiling allows"
		}
	case len(l.prefixes) > 0:
		p := l.prefixes[0]
		if r.deny.coversPrefix(p) {
			return "is denied by the ceiling"
		}
		if r.allow.destinations() && !r.allow.coversPrefix(p) {
			if len(r.allow.prefixes) == 0 {
				return "is an address range, and the ceiling allows names only"
			}
			return "is outside the address ranges the ceiling allows"
		}
	default:
		if r.deny.coversName(l) {
			return "is denied by the ceiling"
		}
		if r.allow.destinations() && !r.allow.coversName(l) {
			return "is outside the names the ceiling allows (a name is allowed only under a name or wildcard of the ceiling, not under an address range)"
		}
	}
	return ""
}

// coversPort reports whether one range of l holds all of p.
func (l list) coversPort(p PortRange) bool {
	for _, c := range l.ports {
		if c.From <= p.From && p.To <= c.To && (c.Proto == "" || c.Proto == p.Proto) {
			return true
		}
	}
	return false
}

// coversPrefix reports whether one CIDR of l holds all of p.
func (l list) coversPrefix(p netip.Prefix) bool {
	for _, c := range l.prefixes {
		if c.Bits() <= p.Bits() && c.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// coversName reports whether the one name or wildcard of n is within l:
// an exact name under an equal name or a wildcard above it, a wildcard
// under a wildcard at or above it.
func (l list) coversName(n list) bool {
	if len(n.names) > 0 {
		return l.matchName(n.names[0])
	}
	for _, s := range l.suffixes {
		if strings.HasSuffix(n.suffixes[0], s) {
			return true
		}
	}
	return false
}
