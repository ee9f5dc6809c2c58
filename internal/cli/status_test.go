package cli

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// TestWhoamiShowsWarmPool: whoami says whether the daemon's warm pool is
// on, and when it is off, why and how to fix it.
func TestWhoamiShowsWarmPool(t *testing.T) {
	t.Parallel()
	// A daemon of its own, with the pool asked for and no init given, so
	// the engine looks for one itself (this test binary, or none).
	td := testdaemon.New(t, testdaemon.Options{Serve: serve, Engine: engine.Config{WarmPerImage: 2, WarmMax: 8}})
	d := &testDaemon{home: td.Home, url: td.URL, token: td.Token, c: td.Client}
	out := d.ok(t, "whoami")
	exe, _ := os.Executable()
	if baseimage.IsStatic(exe) {
		wantContains(t, "whoami", out, "warm:     on, 2 per new image, at most 8")
	} else {
		wantContains(t, "whoami", out, "warm:     OFF", "dynamically linked", "CGO_ENABLED=0")
	}
}

func TestWarmLine(t *testing.T) {
	for _, tc := range []struct {
		w    apitypes.WarmPoolStatus
		want string
	}{
		{apitypes.WarmPoolStatus{Reason: "turned off by configuration"}, "OFF (every run boots a cold sandbox): turned off by configuration"},
		{apitypes.WarmPoolStatus{Enabled: true, PerImage: 2, Max: 8, Idle: 3, Booting: 1, Hits: 5, Misses: 2}, "on, 2 per new image, at most 8: 3 idle, 1 booting; 5 hits, 2 misses"},
	} {
		if got := warmLine(tc.w); got != tc.want {
			t.Errorf("warmLine(%+v) = %q, want %q", tc.w, got, tc.want)
		}
	}
}

// TestStatus: `arbor status` shows the daemon, its runtimes, the warm
// pool's state and the account's usage; --json parses and names the
// pool's state.
func TestStatus(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t) // the shared daemon runs without a warm pool
	var st statusOutput
	if err := json.Unmarshal([]byte(d.ok(t, "--json", "status")), &st); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	if !st.Healthy || st.Daemon != d.url || st.DefaultRuntime != "runc" || len(st.Runtimes) == 0 {
		t.Errorf("status --json: %+v", st)
	}
	if st.WarmPoolState != "off" || st.WarmPool.Enabled || !strings.Contains(st.WarmPool.Reason, "configuration") {
		t.Errorf("warm pool: state %q, %+v; want off, with the reason", st.WarmPoolState, st.WarmPool)
	}
	// The busybox import at least, and the stored bytes it costs.
	if st.Account != "default" || st.Usage.Operations[apitypes.StatusSuccess] < 1 || st.Usage.StoredBytes <= 0 {
		t.Errorf("usage: account %q, %+v", st.Account, st.Usage)
	}
	if _, ok := st.Usage.Operations["cpu_seconds"]; ok {
		t.Errorf("cpu_seconds counted as a status: %+v", st.Usage.Operations)
	}
	out := d.ok(t, "status")
	wantContains(t, "status", out, "daemon:   "+d.url+": up", "runc (default)", "warm:     OFF", "account:  default: ", "ops:      ", "SUCCESS=")
}
