package api_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/engine"
)

// TestStatusReportsWarmPool: GET /v1/status says whether the warm pool is
// on, why not, its size and its hits and misses.
func TestStatusReportsWarmPool(t *testing.T) {
	t.Run("off by configuration", func(t *testing.T) {
		d := startRealDaemon(t, engine.Config{WarmPerImage: -1}, api.Options{})
		st, err := d.c.Status(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if st.WarmPool.Enabled || !strings.Contains(st.WarmPool.Reason, "configuration") || st.DefaultRuntime != "runc" || len(st.Runtimes) == 0 {
			t.Errorf("status = %+v, want the pool off by configuration", st)
		}
	})
	t.Run("this test binary", func(t *testing.T) {
		// A default `go test` build with cgo is dynamic, like a default
		// `go build` of arbor: the pool must say it is off and why.
		d := startRealDaemon(t, engine.Config{WarmPerImage: 2}, api.Options{})
		st, err := d.c.Status(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		exe, _ := os.Executable()
		w := st.WarmPool
		if static := baseimage.IsStatic(exe); w.Enabled != static {
			t.Fatalf("warm pool enabled = %v for a test binary with static = %v", w.Enabled, static)
		}
		if !w.Enabled && (!strings.Contains(w.Reason, "dynamically linked") || !strings.Contains(w.Reason, "CGO_ENABLED=0")) {
			t.Errorf("reason %q does not say the binary is dynamic and how to fix it", w.Reason)
		}
	})
	t.Run("on with a static init", func(t *testing.T) {
		singleNode(t, "GET /v1/status reports the answering node's own warm pool, and an API node runs no sandbox: a cluster's pools are its workers'")
		d := startRealDaemon(t, engine.Config{InitBinary: staticInit(t), WarmPerImage: 2, WarmMax: 8}, api.Options{})
		d.run(t, d.c, d.base, "true", func(r *apitypes.InstanceSpawnRequest) { r.Disposable = ptr(true) })
		st, err := d.c.Status(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		w := st.WarmPool
		if !w.Enabled || w.Reason != "" || w.PerImage != 2 || w.Max != 8 || w.Hits+w.Misses != 1 {
			t.Errorf("warm pool = %+v, want on, 2 per image, at most 8, one run counted", w)
		}
		// The run makes the pool boot one for its image: the status must
		// show it settling (what arbor bench waits for) and then idle.
		raw, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{`"wanted":`, `"active":`} {
			if !strings.Contains(string(raw), k) {
				t.Errorf("warm pool JSON %s lacks %s", raw, k)
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for !(w.Settled() && w.Idle >= 1) {
			if time.Now().After(deadline) {
				t.Fatalf("warm pool = %+v, want settled with an idle sandbox within 30 s", w)
			}
			time.Sleep(20 * time.Millisecond) // no event for the pool's state over the API: poll it
			if st, err = d.c.Status(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			w = st.WarmPool
		}
	})
}

// staticInit builds cmd/arbor-init without cgo, as scripts/setup.sh does.
func staticInit(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "arbor-init")
	cmd := exec.Command("go", "build", "-o", p, "github.com/arborsh/arbor/cmd/arbor-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build arbor-init: %v\n%s", err, out)
	}
	return p
}
