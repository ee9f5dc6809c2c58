package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/bench"
	"github.com/arborsh/arbor/internal/cli"
	"github.com/arborsh/arbor/internal/daemon"
	"github.com/arborsh/arbor/internal/testutil"
)

// TestQuick runs the CI smoke of `arbor bench` and checks that every
// section holds positive numbers and that the report survives JSON. It
// asserts nothing about speed.
func TestQuick(t *testing.T) {
	testutil.RequiresRoot(t)
	// A bound on hangs, not on speed: ~2 min in CI, 5 on a machine shared
	// with other developers' benchmarks.
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	var out bytes.Buffer
	opts := bench.Options{Serve: cli.BenchServe, HardenedBundle: daemon.HardenedBundle, Quick: true, Home: testutil.Home(t), InitBinary: staticInit(t)}
	if testing.Verbose() {
		opts.Progress = os.Stderr
	}
	start := time.Now()
	r, err := bench.Run(ctx, opts, &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("quick bench took %v\n%s", time.Since(start).Round(time.Second), out.String())

	checkReport(t, r, true, true)
	for _, want := range []string{"1. Time to result", "2. Fan-out", "3. Commit", "4. Deep chains", "5. Inspect", "6. Storage", "7. Agent loop", "8. Live forks", "Targets"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}

	b, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("json.Marshal(report): %v", err)
	}
	var back bench.Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("json.Unmarshal(report): %v", err)
	}
	if !reflect.DeepEqual(r, back) {
		t.Errorf("report changed through JSON:\n got %+v\nwant %+v", back, r)
	}
	b2, _ := json.Marshal(back)
	if !bytes.Equal(b, b2) {
		t.Errorf("JSON of the decoded report differs:\n%s\n%s", b2, b)
	}
}

// staticInit builds cmd/arbor-init without cgo, as scripts/setup.sh does,
// for the warm pool's sandboxes (the test binary itself is not static).
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

// checkReport asserts that r has every section, filled with positive
// numbers, including the warm-pool figures if warm.
func checkReport(t *testing.T, r bench.Report, warm, hardened bool) {
	t.Helper()
	pos := func(what string, x float64) {
		t.Helper()
		if !(x > 0) {
			t.Errorf("%s = %v, want > 0", what, x)
		}
	}
	dist := func(what string, d bench.Dist) {
		t.Helper()
		if d.N <= 0 {
			t.Errorf("%s.N = %d, want > 0", what, d.N)
		}
		pos(what+".P50Ms", d.P50Ms)
		pos(what+".P95Ms", d.P95Ms)
		if d.P95Ms < d.P50Ms || d.MaxMs < d.P95Ms || d.MinMs > d.P50Ms {
			t.Errorf("%s = %+v: quantiles out of order", what, d)
		}
	}
	if r.Schema != bench.ReportSchema || !r.Quick || r.StartedAt == "" {
		t.Errorf("header = schema %d quick %v started %q", r.Schema, r.Quick, r.StartedAt)
	}
	pos("Seconds", r.Seconds)
	if r.Host.CPUs <= 0 || r.Host.MemoryBytes <= 0 || r.Host.Kernel == "" || len(r.Host.Runtimes) == 0 {
		t.Errorf("Host = %+v, want CPUs, memory, kernel and runtimes", r.Host)
	}
	rts := r.Setup.Runtimes
	if len(rts) == 0 {
		t.Fatal("Setup.Runtimes is empty")
	}

	if len(r.TimeToResult) != len(rts) {
		t.Errorf("TimeToResult has %d runtimes, want %d", len(r.TimeToResult), len(rts))
	}
	for _, x := range r.TimeToResult {
		dist(x.Runtime+" raw", x.Raw)
		dist(x.Runtime+" disposable", x.Disposable)
		dist(x.Runtime+" non-disposable", x.NonDisposable)
		pos(x.Runtime+" DisposableRatio", x.DisposableRatio)
		pos(x.Runtime+" NonDisposableRatio", x.NonDisposableRatio)
		pos(x.Runtime+" runtime phase", x.DisposablePhases.RuntimeMs)
		pos(x.Runtime+" commit phase", x.NonDisposablePhases.FinishMs)
		dist(x.Runtime+" raw shell", x.RawShell)
		if x.RawArborSpec != nil {
			dist(x.Runtime+" raw arbor spec", *x.RawArborSpec)
		}
		if warm {
			if x.Warm == nil {
				t.Errorf("%s: no warm figures (setup: warm pool %s)", x.Runtime, r.Setup.WarmPool)
				continue
			}
			dist(x.Runtime+" warm disposable", x.Warm.Disposable)
			dist(x.Runtime+" warm chained", x.Warm.Chained)
			dist(x.Runtime+" warm chained straight back", x.Warm.Straight)
			pos(x.Runtime+" warm ratio", x.Warm.DisposableRatio)
			pos(x.Runtime+" warm CPU", x.Warm.DisposableCPU.ChildrenMs)
		}
	}

	if warm && len(r.Continue) != len(rts) {
		t.Errorf("Continue has %d runtimes, want %d", len(r.Continue), len(rts))
	}
	for _, c := range r.Continue {
		dist(c.Runtime+" continue raw", c.RawShell)
		dist(c.Runtime+" continue paused", c.Paused)
		dist(c.Runtime+" continue straight", c.Straight)
		pos(c.Runtime+" continue paused ratio", c.PausedRatio)
		pos(c.Runtime+" continue straight ratio", c.StraightRatio)
	}

	widths := 2 // quick: 1 and 4 with the pool off
	if warm {
		widths++ // and 4 with the pool on
	}
	if want := widths * len(rts); len(r.FanOut) != want {
		t.Errorf("FanOut has %d rows, want %d", len(r.FanOut), want)
	}
	for _, f := range r.FanOut {
		pos("fan-out arbor wall", f.ArborWallMs)
		pos("fan-out raw wall", f.RawWallMs)
		pos("fan-out arbor runs/s", f.ArborPerSec)
		pos("fan-out raw runs/s", f.RawPerSec)
		pos("fan-out ratio", f.Ratio)
		// The hardened raw floor: runc and crun rows of the cold daemon,
		// when the report comes from a run given HardenedBundle.
		if h := f.Hardened; h != nil {
			if f.Runtime == "runsc" || f.Pool != "off" || len(h.WallsMs) != f.Reps {
				t.Errorf("%s pool %s n=%d: hardened floor %+v, want one wall per repetition on runc or crun, pool off", f.Runtime, f.Pool, f.Branches, h)
			}
			pos("fan-out hardened wall", h.WallMs)
			pos("fan-out hardened ratio", h.Ratio)
			pos("fan-out arbor ÷ hardened", h.ArborRatio)
		} else if hardened && f.Runtime != "runsc" && f.Pool == "off" {
			t.Errorf("%s pool off n=%d: no hardened raw floor", f.Runtime, f.Branches)
		}
	}
	if warm && len(r.Burst) != len(rts) {
		t.Errorf("Burst has %d runtimes, want %d", len(r.Burst), len(rts))
	}
	for _, x := range r.Burst {
		pos(x.Runtime+" first burst", x.FirstMs)
		pos(x.Runtime+" burst arbor wall", x.ArborWallMs)
		pos(x.Runtime+" burst raw wall", x.RawWallMs)
		pos(x.Runtime+" burst ratio", x.Ratio)
		if len(x.Hits) != x.Reps || len(x.ArborWallsMs) != x.Reps {
			t.Errorf("%s burst: %d walls and %d hit counts for %d repetitions", x.Runtime, len(x.ArborWallsMs), len(x.Hits), x.Reps)
		}
	}

	if c := r.Commit; c == nil {
		t.Error("Commit section missing")
	} else {
		pos("commit build", c.BuildMs)
		if len(c.Results) != len(rts) {
			t.Errorf("Commit has %d runtimes, want %d", len(c.Results), len(rts))
		}
		for _, x := range c.Results {
			dist(x.Runtime+" commit small", x.Small)
			dist(x.Runtime+" commit big", x.Big)
			dist(x.Runtime+" commit alone small", x.SmallCommit)
			dist(x.Runtime+" commit alone big", x.BigCommit)
			pos(x.Runtime+" commit ratio", x.Ratio)
		}
	}

	if c := r.DeepChain; c == nil {
		t.Error("DeepChain section missing")
	} else {
		if want := 2 * len(rts); len(c.Points) != want { // quick: depths 1 and 50
			t.Errorf("DeepChain has %d points, want %d", len(c.Points), want)
		}
		if c.Steps < 49 {
			t.Errorf("DeepChain built %d steps, want >= 49", c.Steps)
		}
		for _, p := range c.Points {
			dist(p.Runtime+" depth step", p.Step)
			pos(p.Runtime+" depth ratio", p.Ratio)
			if p.MountedLayers < 1 || p.MountedLayers > p.Depth {
				t.Errorf("depth %d: %d mounted layers", p.Depth, p.MountedLayers)
			}
		}
	}

	if c := r.Inspect; c == nil {
		t.Error("Inspect section missing")
	} else {
		if len(c.Ops) != 3 {
			t.Errorf("Inspect has %d ops, want list, read, grep", len(c.Ops))
		}
		for _, op := range c.Ops {
			dist("inspect "+op.Op, op.Deep)
			dist("inspect "+op.Op+" baseline", op.Baseline)
		}
	}

	if want := 2 * len(rts); len(r.Storage) != want {
		t.Errorf("Storage has %d rows, want %d", len(r.Storage), want)
	}
	for _, s := range r.Storage {
		if s.StoredBytes < s.ChangeBytes || s.LayerBytes < s.ChangeBytes || len(s.Entries) == 0 {
			t.Errorf("storage %s %d: stored %d, layer_bytes %d, entries %v; want at least the change", s.Runtime, s.ChangeBytes, s.StoredBytes, s.LayerBytes, s.Entries)
		}
	}

	if f := r.Fork; f == nil {
		t.Errorf("Fork section missing (notes: %v)", r.Notes)
	} else {
		dist("fork cold run", f.ColdRun)
		dist("fork fresh warm", f.FreshWarm)
		pos("fork set-up", f.SetupMs)
		pos("fork set-up in the cold run", f.ColdSetupMs)
		pos("fork checkpoint bytes", float64(f.CheckpointBytes))
		if len(f.Forks) != 3 {
			t.Errorf("Fork has %d widths, want 1, 4 and 8", len(f.Forks))
		}
		for _, w := range f.Forks {
			dist(fmt.Sprintf("fork into %d", w.Copies), w.Wall)
			pos(fmt.Sprintf("fork into %d / cold run", w.Copies), w.ColdRatio)
		}
	}

	if len(r.Targets) == 0 {
		t.Error("no targets checked")
	}
	for _, tg := range r.Targets {
		switch tg.Status {
		case bench.StatusMet, bench.StatusMissed:
			pos("target "+tg.Name, tg.Value)
		case bench.StatusNA:
		default:
			t.Errorf("target %q has status %q", tg.Name, tg.Status)
		}
	}
}

// TestFull runs the whole benchmark when ARBOR_BENCH_FULL=1, writing the
// table to stdout and the JSON report to $ARBOR_BENCH_JSON if set;
// ARBOR_BENCH_SECTIONS (e.g. "ttr,fanout"), ARBOR_BENCH_RUNTIMES (e.g.
// "runsc"), ARBOR_BENCH_FANOUT (widths, e.g. "16") and ARBOR_BENCH_QUICK=1
// narrow it, and ARBOR_BENCH_LOG=1 shows
// the daemons' logs. It is
// how BENCHMARKS.md was produced (and how to profile the daemon during a
// benchmark with -cpuprofile):
//
//	ARBOR_BENCH_FULL=1 ARBOR_BENCH_JSON=/tmp/bench.json \
//	  go test -run TestFull -timeout 60m -v ./internal/bench/
func TestFull(t *testing.T) {
	if os.Getenv("ARBOR_BENCH_FULL") != "1" {
		t.Skip("set ARBOR_BENCH_FULL=1 to run the full benchmark")
	}
	testutil.RequiresRoot(t)
	opts := bench.Options{Serve: cli.BenchServe, HardenedBundle: daemon.HardenedBundle, Progress: os.Stderr, Quick: os.Getenv("ARBOR_BENCH_QUICK") == "1", InitBinary: staticInit(t)}
	if s := os.Getenv("ARBOR_BENCH_SECTIONS"); s != "" {
		opts.Sections = strings.Split(s, ",")
	}
	if s := os.Getenv("ARBOR_BENCH_RUNTIMES"); s != "" {
		opts.Runtimes = strings.Split(s, ",")
	}
	for _, s := range strings.FieldsFunc(os.Getenv("ARBOR_BENCH_FANOUT"), func(r rune) bool { return r == ',' }) {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("ARBOR_BENCH_FANOUT: %v", err)
		}
		opts.FanOut = append(opts.FanOut, n)
	}
	if os.Getenv("ARBOR_BENCH_LOG") == "1" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	r, err := bench.Run(context.Background(), opts, os.Stdout)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if p := os.Getenv("ARBOR_BENCH_JSON"); p != "" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
