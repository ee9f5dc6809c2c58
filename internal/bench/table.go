package bench

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// targets checks the report's ratios against the goals of the benchmark
// issue.
func targets(r *Report) []Target {
	var out []Target
	check := func(t Target) Target {
		switch {
		case t.Status != "":
		case t.Value <= 0:
			t.Status = StatusNA
		case t.Op == "<=" && t.Value <= t.Limit, t.Op == ">=" && t.Value >= t.Limit:
			t.Status = StatusMet
		default:
			t.Status = StatusMissed
		}
		return t
	}
	for _, t := range r.TimeToResult {
		if t.Runtime == "runsc" {
			warm := Target{Name: "warm gVisor time to result p50 / raw runsc run", Runtime: "runsc", Op: "<=", Limit: 0.35,
				Status: StatusNA, Note: "warm pool " + cmp.Or(r.Setup.WarmPool, "off")}
			if t.Warm != nil {
				warm.Status, warm.Value, warm.Note = "", t.Warm.DisposableRatio, "disposable /bin/true, pool settled"
			}
			out = append(out, check(warm))
			out = append(out, check(Target{Name: "cold gVisor time to result p50 / raw runsc run", Runtime: "runsc", Op: "<=", Limit: 1.2,
				Value: t.DisposableRatio, Note: "disposable /bin/true, pool off"}))
		} else {
			out = append(out, check(Target{Name: t.Runtime + " time to result p50 / raw " + t.Runtime + " run", Runtime: t.Runtime, Op: "<=", Limit: 1.5,
				Value: t.DisposableRatio, Note: "disposable /bin/true, pool off"}))
		}
	}
	if c := r.Commit; c != nil {
		size := sizeName(c.BigImageBytes)
		for _, res := range c.Results {
			out = append(out, check(Target{Name: "commit run on " + size + " image / small image (p50)", Runtime: res.Runtime, Op: "<=", Limit: 1.5,
				Value: res.Ratio, Note: "time to result of a 1-file change"}))
			out = append(out, check(Target{Name: "commit alone on " + size + " image / small image (p50)", Runtime: res.Runtime, Op: "<=", Limit: 1.5,
				Value: res.CommitRatio, Note: "server side: unmount (flush), syncfs, rename, image row"}))
		}
	}
	if c := r.DeepChain; c != nil {
		deepest := map[string]DepthPoint{}
		for _, p := range c.Points {
			if p.Depth > deepest[p.Runtime].Depth {
				deepest[p.Runtime] = p
			}
		}
		for _, rt := range r.Setup.Runtimes {
			p, ok := deepest[rt]
			if !ok || p.Depth <= 1 {
				continue
			}
			out = append(out, check(Target{Name: fmt.Sprintf("step latency at depth %d / depth 1 (p50)", p.Depth), Runtime: rt, Op: "<=", Limit: 1.3,
				Value: p.Ratio, Note: fmt.Sprintf("%d mounted layers", p.MountedLayers)}))
		}
	}
	at := map[string]FanOut{} // runtime/pool → the widest row ≤ 16
	for _, f := range r.FanOut {
		k := f.Runtime + "/" + f.Pool
		if f.Branches <= 16 && f.Branches >= at[k].Branches {
			at[k] = f
		}
	}
	for _, rt := range r.Setup.Runtimes {
		for _, x := range r.Burst {
			if x.Runtime == rt {
				out = append(out, check(Target{Name: fmt.Sprintf("fan-out burst of %d: wall / %d raw runs at once", x.Branches, x.Branches), Runtime: rt,
					Op: "<=", Limit: 0.4, Value: x.Ratio, Note: fmt.Sprintf("pool settled, bursts after the first (first: %.2f×)", x.FirstRatio)}))
			}
		}
		for _, pool := range []string{"off", "on"} {
			f, ok := at[rt+"/"+pool]
			if !ok {
				continue
			}
			t := Target{Name: fmt.Sprintf("fan-out %d runs/s / raw, warm pool %s", f.Branches, pool), Runtime: rt, Op: ">=", Limit: 0.8, Value: f.Ratio}
			if f.Branches != 16 {
				t.Note = "the target is set at 16 branches"
			}
			out = append(out, check(t))
		}
	}
	for _, t := range append(continueTargets(r), forkTargets(r)...) {
		out = append(out, check(t))
	}
	return out
}

func sizeName(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func fmtMs(x float64) string {
	switch {
	case x >= 10000:
		return fmt.Sprintf("%.1fs", x/1000)
	case x >= 100:
		return fmt.Sprintf("%.0fms", x)
	case x >= 10:
		return fmt.Sprintf("%.1fms", x)
	}
	return fmt.Sprintf("%.2fms", x)
}

func fmtRatio(x float64) string {
	if x <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", x)
}

// fmtCPU renders CPU per run as "self + children".
func fmtCPU(c CPU) string {
	if c.SelfMs == 0 {
		return fmtMs(c.ChildrenMs)
	}
	return fmtMs(c.SelfMs) + " + " + fmtMs(c.ChildrenMs)
}

func fmtPhases(p Phases) string {
	return fmt.Sprintf("setup %s · runtime %s (process %s) · unmount %s · finish %s · delivery %s",
		fmtMs(p.SetupMs), fmtMs(p.RuntimeMs), fmtMs(p.ProcessMs), fmtMs(p.UnmountMs), fmtMs(p.FinishMs), fmtMs(p.DeliveryMs))
}

// WriteTable writes r as the human-readable tables of `arbor bench`.
func WriteTable(w io.Writer, r Report) error {
	ew := &errWriter{w: w}
	p := func(format string, args ...any) { fmt.Fprintf(ew, format+"\n", args...) }
	table := func(rows [][]string) {
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		for _, row := range rows {
			fmt.Fprintln(tw, "  "+strings.Join(row, "\t"))
		}
		tw.Flush()
	}
	h := r.Host
	mode := ""
	if r.Quick {
		mode = " (quick)"
	}
	p("arbor bench%s — %s, %.0f s", mode, r.StartedAt, r.Seconds)
	p("host: %d CPUs (%s), %s memory, Linux %s, %s; load %s → %s", h.CPUs, h.CPUModel, sizeName(h.MemoryBytes), h.Kernel, h.GoVersion, h.LoadBefore, h.LoadAfter)
	if h.Build != "" {
		p("arbor build %s", h.Build)
	}
	for _, rt := range h.Runtimes {
		p("runtime %s: %s (%s)", rt.Name, rt.Path, rt.Version)
	}
	p("home on %s; %d samples per point after a warm-up; %d run slots; squash beyond %d layers; warm pool %s", h.Filesystem, r.Setup.Iterations, r.Setup.Slots, r.Setup.SquashDepth, r.Setup.WarmPool)
	p("ratios are arbor ÷ raw runtime (or big ÷ small, deep ÷ shallow) within this run")

	if len(r.TimeToResult) > 0 {
		p("\n1. Time to result (spawn → completion through the HTTP API, busybox image; one run at a time)")
		rows := [][]string{{"runtime", "series", "p50", "p95", "× raw p50", "CPU/run: arbor + runtime"}}
		for _, t := range r.TimeToResult {
			rows = append(rows, []string{t.Runtime, "raw `" + t.Runtime + " run` /bin/true", fmtMs(t.Raw.P50Ms), fmtMs(t.Raw.P95Ms), "1.00×", fmtCPU(t.RawCPU)})
			if t.RawArborSpec != nil {
				cpu := ""
				if t.RawArborSpecCPU != nil {
					cpu = fmtCPU(*t.RawArborSpecCPU)
				}
				rows = append(rows, []string{"", "raw /bin/true, arbor's config.json", fmtMs(t.RawArborSpec.P50Ms), fmtMs(t.RawArborSpec.P95Ms), fmtRatio(t.ArborSpecRatio), cpu})
			}
			rows = append(rows, []string{"", "raw sh -c 'echo > file'", fmtMs(t.RawShell.P50Ms), fmtMs(t.RawShell.P95Ms), "(1.00×)", fmtCPU(t.RawShellCPU)})
			rows = append(rows, []string{"", "cold: disposable /bin/true", fmtMs(t.Disposable.P50Ms), fmtMs(t.Disposable.P95Ms), fmtRatio(t.DisposableRatio), fmtCPU(t.DisposableCPU)})
			rows = append(rows, []string{"", "cold: non-disposable, 1 file (÷ raw sh)", fmtMs(t.NonDisposable.P50Ms), fmtMs(t.NonDisposable.P95Ms), fmtRatio(t.NonDisposableRatio), fmtCPU(t.NonDisposableCPU)})
			if w := t.Warm; w != nil {
				rows = append(rows, []string{"", "warm: disposable /bin/true", fmtMs(w.Disposable.P50Ms), fmtMs(w.Disposable.P95Ms), fmtRatio(w.DisposableRatio), fmtCPU(w.DisposableCPU)})
				rows = append(rows, []string{"", "warm: chained non-disposable (÷ raw sh)", fmtMs(w.Chained.P50Ms), fmtMs(w.Chained.P95Ms), fmtRatio(w.ChainedRatio), fmtCPU(w.ChainedCPU)})
				rows = append(rows, []string{"", "warm: chained, straight back (÷ raw sh)", fmtMs(w.Straight.P50Ms), fmtMs(w.Straight.P95Ms), fmtRatio(w.StraightRatio), ""})
			} else {
				rows = append(rows, []string{"", "warm: not measured: warm pool " + cmp.Or(r.Setup.WarmPool, "off"), "-", "-", "-", ""})
			}
		}
		table(rows)
		for _, t := range r.TimeToResult {
			p("  %s cold disposable, p50 phases: %s", t.Runtime, fmtPhases(t.DisposablePhases))
			p("  %s cold non-disposable, p50 phases: %s", t.Runtime, fmtPhases(t.NonDisposablePhases))
			if w := t.Warm; w != nil {
				p("  %s warm disposable, p50 phases: %s", t.Runtime, fmtPhases(w.DisposablePhases))
				p("  %s warm chained, p50 phases: %s", t.Runtime, fmtPhases(w.ChainedPhases))
				p("  %s warm chained straight back, p50 phases: %s", t.Runtime, fmtPhases(w.StraightPhases))
			}
		}
		p("  (warm CPU/run includes booting the sandboxes the run makes the pool replace)")
	}
	if len(r.FanOut) > 0 {
		p("\n2. Fan-out (n non-disposable branches of one image at once vs n raw runs of the same shell command at once; median wall)")
		rows := [][]string{{"runtime", "pool", "n", "arbor wall", "arbor runs/s", "raw wall", "raw runs/s", "arbor ÷ raw runs/s", "CPU/run arbor", "CPU/run raw"}}
		for _, f := range r.FanOut {
			rows = append(rows, []string{f.Runtime, f.Pool, fmt.Sprint(f.Branches), fmtMs(f.ArborWallMs), fmt.Sprintf("%.2f", f.ArborPerSec),
				fmtMs(f.RawWallMs), fmt.Sprintf("%.2f", f.RawPerSec), fmtRatio(f.Ratio), fmtCPU(f.ArborCPU), fmtCPU(f.RawCPU)})
		}
		table(rows)
		var hard [][]string
		for _, f := range r.FanOut {
			if h := f.Hardened; h != nil {
				hard = append(hard, []string{f.Runtime, f.Pool, fmt.Sprint(f.Branches), fmtMs(h.WallMs), fmt.Sprintf("%.2f", h.PerSec),
					fmtRatio(h.Ratio), fmtRatio(h.ArborRatio), fmtCPU(h.CPU)})
			}
		}
		if len(hard) > 0 {
			p("\n   Hardened raw floor (the same shell command, n at once, in the bundle arbor writes for a runc or crun sandbox: user namespace, seccomp, masked paths, limits)")
			table(append([][]string{{"runtime", "pool", "n", "hardened raw wall", "runs/s", "hardened ÷ raw runs/s", "arbor ÷ hardened runs/s", "CPU/run"}}, hard...))
		}
	}
	if len(r.Burst) > 0 {
		p("\n   Fan-out burst (warm pool on, settled before each burst; %d branches of a fresh image at once vs as many raw runs at once; wall to every result)", r.Burst[0].Branches)
		rows := [][]string{{"runtime", "first burst", "warm", "÷ raw", "later bursts (median)", "warm", "÷ raw", "raw wall"}}
		for _, x := range r.Burst {
			rows = append(rows, []string{x.Runtime, fmtMs(x.FirstMs), fmt.Sprintf("%d/%d", x.FirstHits, x.Branches), fmtRatio(x.FirstRatio),
				fmtMs(x.ArborWallMs), fmt.Sprint(x.Hits), fmtRatio(x.Ratio), fmtMs(x.RawWallMs)})
		}
		table(rows)
	}
	if c := r.Commit; c != nil {
		p("\n3. Commit cost (1-file change; small = busybox, big = + a %s file)", sizeName(c.BigImageBytes))
		p("  building the big image took %s: %s", fmtMs(c.BuildMs), fmtPhases(c.BuildPhases))
		rows := [][]string{{"runtime", "small p50", "big p50", "big ÷ small", "commit alone: small p50", "big p50", "big ÷ small"}}
		for _, x := range c.Results {
			rows = append(rows, []string{x.Runtime, fmtMs(x.Small.P50Ms), fmtMs(x.Big.P50Ms), fmtRatio(x.Ratio),
				fmtMs(x.SmallCommit.P50Ms), fmtMs(x.BigCommit.P50Ms), fmtRatio(x.CommitRatio)})
		}
		table(rows)
	}
	if c := r.DeepChain; c != nil {
		p("\n4. Deep chains (one more non-disposable step on the image at each depth, %d samples round robin; chain built with %s: %d steps in %s, step p50 first %s / last %s; %d background squashes, longest %s)",
			c.Probes, c.ChainRuntime, c.Steps, fmtMs(c.BuildMs), fmtMs(c.FirstSteps.P50Ms), fmtMs(c.LastSteps.P50Ms), c.Squashes, fmtMs(c.SquashMaxMs))
		rows := [][]string{{"runtime", "depth", "mounted layers", "step p50", "p95", "÷ depth 1", "setup p50", "finish p50"}}
		for _, x := range c.Points {
			rows = append(rows, []string{x.Runtime, fmt.Sprint(x.Depth), fmt.Sprint(x.MountedLayers), fmtMs(x.Step.P50Ms), fmtMs(x.Step.P95Ms),
				fmtRatio(x.Ratio), fmtMs(x.Phases.SetupMs), fmtMs(x.Phases.FinishMs)})
		}
		table(rows)
	}
	if c := r.Inspect; c != nil {
		p("\n5. Inspect (image at depth %d, %d mounted layers, vs depth %d; through the HTTP API)", c.Depth, c.MountedLayers, c.BaselineDepth)
		rows := [][]string{{"op", "call", "deep p50", "p95", "shallow p50", "deep ÷ shallow"}}
		for _, x := range c.Ops {
			rows = append(rows, []string{x.Op, x.Call, fmtMs(x.Deep.P50Ms), fmtMs(x.Deep.P95Ms), fmtMs(x.Baseline.P50Ms), fmtRatio(x.Ratio)})
		}
		table(rows)
	}
	if len(r.Storage) > 0 {
		p("\n6. Storage per snapshot (growth of <home>/layers as du counts it, median)")
		rows := [][]string{{"runtime", "change", "stored", "overhead", "layer_bytes (API)", "layer contents"}}
		for _, s := range r.Storage {
			rows = append(rows, []string{s.Runtime, sizeName(s.ChangeBytes), fmt.Sprintf("%d B", s.StoredBytes), fmt.Sprintf("%+d B", s.OverheadBytes),
				fmt.Sprintf("%d B", s.LayerBytes), strings.Join(s.Entries, " ")})
		}
		table(rows)
	}
	writeContinue(p, table, r)
	writeCluster(p, table, r)
	writeFork(p, table, r)
	if len(r.Targets) > 0 {
		p("\nTargets (goals of the benchmark issue; not pass/fail)")
		rows := [][]string{{"target", "runtime", "measured", "goal", "status", "note"}}
		for _, t := range r.Targets {
			val, note := fmt.Sprintf("%.3f×", t.Value), t.Note
			if t.Status == StatusNA {
				val, note = "n/a", ""
				if t.Note != "" {
					val = "n/a (" + t.Note + ")"
				}
			}
			rows = append(rows, []string{t.Name, t.Runtime, val, fmt.Sprintf("%s %.2f×", t.Op, t.Limit), t.Status, note})
		}
		table(rows)
	}
	for _, n := range r.Notes {
		p("note: %s", n)
	}
	return ew.err
}

// errWriter remembers the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(b []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(b)
	e.err = err
	return n, err
}
