package cli

import (
	"encoding/json"
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
