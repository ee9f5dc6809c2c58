package oplog

// EventEgressDenied reports what a run's egress policy blocked (only when
// it blocked something): while the run runs (Live), and at its end.
const EventEgressDenied = "egress_denied"

// EgressEcho is a run's egress policy as it applies: the run's own, or
// its account's or the daemon's default.
type EgressEcho struct {
	Allow []string `json:"allow"`
	Deny  []string `json:"deny"`
}

// EventDataEgressDenied is what an egress policy blocked in a run.
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
