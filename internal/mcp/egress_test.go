package mcp

import (
	"strings"
	"testing"
)

// TestRequestEgress: run's allow and deny become the spawn request's
// egress policy and turn networking on; without them nothing is sent and
// the daemon's default applies.
func TestRequestEgress(t *testing.T) {
	s := &server{}
	req, err := s.request(spawnSpec{image: "x", timeout: 1, egress: egressOf([]string{"pypi.org"}, []string{"tcp:25"})}, "true")
	if err != nil {
		t.Fatal(err)
	}
	n := req.Networking
	if n == nil || n.Enabled == nil || !*n.Enabled || n.Egress == nil || strings.Join(n.Egress.Allow, ",") != "pypi.org" || strings.Join(n.Egress.Deny, ",") != "tcp:25" {
		t.Errorf("networking = %+v", n)
	}
	if req, _ = s.request(spawnSpec{image: "x", timeout: 1, egress: egressOf(nil, nil)}, "true"); req.Networking != nil {
		t.Errorf("no allow or deny: networking = %+v", req.Networking)
	}
}

// testRunEgressDenied: run and get_operation tell the agent what a run's
// egress policy blocked (a name refused by arbor's resolver, packets to a
// documentation address dropped on the host side: nothing leaves the
// host), and say nothing for a run that tried nothing blocked.
func testRunEgressDenied(t *testing.T, s *session) {
	cmd := "nslookup blocked.test 192.0.2.53; nc -w 2 203.0.113.5 80 </dev/null; echo done"
	var out RunOut
	s.call(t, "run", map[string]any{"image": "busybox:latest", "command": cmd, "disposable": true, "allow": []string{"198.51.100.7/32"}}, &out)
	if !strings.Contains(out.Stdout, "done") || !strings.HasPrefix(out.EgressDenied, "names blocked.test; ") || !strings.Contains(out.EgressDenied, "203.0.113.5:80/tcp") {
		t.Errorf("run under a blocking policy: egress_denied %q (stdout %q), want blocked.test and 203.0.113.5:80/tcp", out.EgressDenied, out.Stdout)
	}
	var oi OperationInfo
	s.call(t, "get_operation", map[string]any{"operation_id": out.OperationID}, &oi)
	if oi.EgressDenied != out.EgressDenied {
		t.Errorf("get_operation: egress_denied %q, want %q as run said", oi.EgressDenied, out.EgressDenied)
	}
	s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "true", "disposable": true, "allow": []string{"198.51.100.7/32"}}, &out)
	if out.EgressDenied != "" {
		t.Errorf("a run that tried nothing: egress_denied %q, want none", out.EgressDenied)
	}
}
