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
