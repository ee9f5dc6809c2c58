package apitypes

import (
	"fmt"
	"testing"
)

func TestEgressDeniedSummary(t *testing.T) {
	var many []string
	var far []EgressDestination
	for i := range 12 {
		many = append(many, fmt.Sprintf("n%d.test", i))
		far = append(far, EgressDestination{Addr: "203.0.113.5", Proto: "udp", Port: 1000 + i})
	}
	for _, tc := range []struct {
		d    EventDataEgressDenied
		want string
	}{
		{EventDataEgressDenied{}, ""},
		{EventDataEgressDenied{RefusedNames: []string{"other.test"}, RefusedQueries: 2, DroppedPackets: 3,
			Dropped: []EgressDestination{{Addr: "203.0.113.5", Proto: "tcp", Port: 80}}},
			"names other.test; 3 packets to 203.0.113.5:80/tcp"},
		{EventDataEgressDenied{RefusedQueries: 4}, "4 DNS queries"},
		{EventDataEgressDenied{DroppedPackets: 1}, "1 packets"},
		{EventDataEgressDenied{RefusedNames: many, DroppedPackets: 12, Dropped: far},
			"names n0.test, n1.test, n2.test, n3.test, n4.test, n5.test, n6.test, n7.test, n8.test, n9.test and 2 more; " +
				"12 packets to 203.0.113.5:1000/udp, 203.0.113.5:1001/udp, 203.0.113.5:1002/udp, 203.0.113.5:1003/udp, 203.0.113.5:1004/udp, " +
				"203.0.113.5:1005/udp, 203.0.113.5:1006/udp, 203.0.113.5:1007/udp, 203.0.113.5:1008/udp, 203.0.113.5:1009/udp and 2 more destinations"},
	} {
		if got := tc.d.Summary(); got != tc.want {
			t.Errorf("Summary(%+v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
