package cli

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
)

// runMetadata runs arbor run args (with --json) and returns the run's
// metadata as the daemon recorded it.
func runMetadata(t *testing.T, d *testDaemon, args ...string) apitypes.InstanceMetadata {
	t.Helper()
	res := okJSON[runResult](t, d, args...)
	op, err := d.c.Operation(t.Context(), res.Operation)
	if err != nil {
		t.Fatal(err)
	}
	var m apitypes.InstanceMetadata
	if err := json.Unmarshal(op.Metadata, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRunEgressFlags: --allow and --deny reach the daemon as the run's
// egress policy (echoed in its metadata) and turn networking on; a bad
// entry is refused naming the forms an entry takes.
func TestRunEgressFlags(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	m := runMetadata(t, d, "run", "--disposable", "--image", "busybox", "--allow", "pypi.org", "--allow", "*.pythonhosted.org", "--deny", "tcp:25", "--", "true")
	if e := m.Networking.Egress; !m.Networking.Enabled || e == nil || strings.Join(e.Allow, " ") != "pypi.org *.pythonhosted.org" || strings.Join(e.Deny, " ") != "tcp:25" {
		t.Errorf("--allow/--deny reached the daemon as %+v (egress %+v)", m.Networking, m.Networking.Egress)
	}
	if r := d.arbor(t, "run", "--disposable", "--image", "busybox", "--allow", "http://pypi.org", "--", "true"); r.code != 1 || !strings.Contains(r.stderr, "http://pypi.org") || !strings.Contains(r.stderr, "domain name") {
		t.Errorf("--allow http://pypi.org: %v", r)
	}
}

// TestRunEgressDenied: what a run's egress policy blocked is told on
// stderr when the run ends, and in --json's egress_denied. Nothing leaves
// the host: the name is refused by arbor's resolver, and the packets to a
// documentation address are dropped on the sandbox's host side.
func TestRunEgressDenied(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	cmd := "nslookup blocked.test 192.0.2.53; nc -w 2 203.0.113.5 80 </dev/null; echo done"
	args := []string{"run", "--disposable", "--image", "busybox", "--allow", "198.51.100.7/32", "--shell", "--", cmd}
	r := d.arbor(t, args...)
	if r.code != 0 || !strings.Contains(r.stdout, "done") ||
		!strings.Contains(r.stderr, "egress policy blocked names blocked.test; ") || !strings.Contains(r.stderr, "203.0.113.5:80/tcp") {
		t.Errorf("arbor run with a blocking policy: %v; want stderr naming blocked.test and 203.0.113.5:80/tcp", r)
	}
	res := okJSON[runResult](t, d, args...)
	if e := res.EgressDenied; e == nil || !slices.Contains(e.RefusedNames, "blocked.test") || e.DroppedPackets == 0 {
		t.Errorf("arbor run --json: egress_denied = %+v, want blocked.test refused and packets dropped", e)
	}
	if res := okJSON[runResult](t, d, "run", "--disposable", "--image", "busybox", "--allow", "198.51.100.7/32", "--", "true"); res.EgressDenied != nil {
		t.Errorf("a run that tried nothing: egress_denied = %+v, want none", res.EgressDenied)
	}
}
