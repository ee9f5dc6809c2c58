package cli

import (
	"encoding/json"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// TestGCAndDF: arbor gc --dry-run and arbor df speak for the daemon, in
// words and in --json.
func TestGCAndDF(t *testing.T) {
	t.Parallel()
	td := testdaemon.New(t, testdaemon.Options{Serve: serve, Busybox: "busybox:latest", Engine: engine.Config{GCInterval: -1}})
	d := &testDaemon{home: td.Home, url: td.URL, token: td.Token, c: td.Client}
	wantContains(t, "gc --dry-run", d.ok(t, "gc", "--dry-run"), "would delete 0 image(s)", "would free 0 B: 0 B in 0 layer(s), 0 B in 0 export blob(s), 0 B of uploads")
	var r apitypes.GCResponse
	if err := json.Unmarshal([]byte(d.ok(t, "gc", "--dry-run", "--json")), &r); err != nil || !r.DryRun {
		t.Fatalf("gc --dry-run --json: %+v, %v", r, err)
	}
	out := d.ok(t, "df")
	wantContains(t, "df", out, "ACCOUNT", "ATTRIBUTED", "default", "never", "720h0m0s", "store: 1 layer(s)")
	var u apitypes.DiskUsageResponse
	if err := json.Unmarshal([]byte(d.ok(t, "df", "--all", "--json")), &u); err != nil || len(u.Accounts) != 1 || u.Accounts[0].Images != 1 {
		t.Fatalf("df --all --json: %+v, %v", u, err)
	}
}
