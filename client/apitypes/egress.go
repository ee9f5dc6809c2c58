package apitypes

import (
	"fmt"
	"strings"
)

// Egress is an arbor extension of Networking: a run's egress policy. Each
// entry of Allow and Deny is a domain name ("pypi.org", or
// "*.pythonhosted.org" for the names below it), an IPv4 CIDR or address
// ("203.0.113.0/24"), or a port ("443" for TCP and UDP, "tcp:443",
// "udp:8000-8100"). When Allow names destinations, the sandbox resolves
// only those names (through arbor's resolver) and reaches only the
// addresses their answers gave and the CIDRs listed; Allow's ports, if
// any, are the only ports it reaches. Deny wins over Allow.
type Egress struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

// EventEgressDenied is an arbor extension event: what a run's egress
// policy blocked, while the run runs (Live) and at its end.
const EventEgressDenied = "egress_denied"

// EventDataEgressDenied is the data of an egress_denied event.
type EventDataEgressDenied struct {
	// Live marks an event sent while the run runs (at most one a second):
	// its lists and counts are what was blocked since the previous
	// egress_denied event. The final event (Live false, before exit) has
	// the run's totals.
	Live           bool                `json:"live,omitempty"`
	RefusedNames   []string            `json:"refused_names,omitempty"`
	RefusedQueries int                 `json:"refused_queries"`
	DroppedPackets int64               `json:"dropped_packets"`
	Dropped        []EgressDestination `json:"dropped,omitempty"`
}

// EgressDestination is a TCP or UDP destination packets were dropped to.
type EgressDestination struct {
	Addr  string `json:"addr"`
	Proto string `json:"proto"`
	Port  int    `json:"port"`
}

// Summary says in one line what d blocked, e.g. "names other.test; 3
// packets to 203.0.113.5:80/tcp", naming at most 10 names and 10
// destinations; "" if nothing.
func (d EventDataEgressDenied) Summary() string {
	const most = 10
	var parts []string
	switch n := len(d.RefusedNames); {
	case n > most:
		parts = append(parts, fmt.Sprintf("names %s and %d more", strings.Join(d.RefusedNames[:most], ", "), n-most))
	case n > 0:
		parts = append(parts, "names "+strings.Join(d.RefusedNames, ", "))
	case d.RefusedQueries > 0:
		parts = append(parts, fmt.Sprintf("%d DNS queries", d.RefusedQueries))
	}
	if d.DroppedPackets > 0 {
		s := fmt.Sprintf("%d packets", d.DroppedPackets)
		var to []string
		for _, x := range d.Dropped[:min(len(d.Dropped), most)] {
			to = append(to, fmt.Sprintf("%s:%d/%s", x.Addr, x.Port, x.Proto))
		}
		if len(to) > 0 {
			s += " to " + strings.Join(to, ", ")
		}
		if n := len(d.Dropped); n > most {
			s += fmt.Sprintf(" and %d more destinations", n-most)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}
