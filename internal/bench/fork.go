package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/baseimage"
)

// ForkSection is the "fork" section (issue 19): a live fork of an idle
// python3 that has done its set-up (imported modules, built a table) into
// 1, 4 and 8 copies, timed from the fork call until every copy has
// answered a line on its stdin; against the same program started fresh on
// a settled warm pool, set-up included, until it answers; and against one
// cold `runsc run` of it on a prepared bundle until it answers. Runs on a
// daemon of its own (warm pool on, Slots enough for a parent and 8 copies).
type ForkSection struct {
	Runtime   string `json:"runtime"`
	Program   string `json:"program"`    // what the python3 does before it is forked
	Reps      int    `json:"reps"`       // samples per series, interleaved
	Slots     int    `json:"slots"`      // of the fork daemon
	MemoryMiB int    `json:"memory_mib"` // each instance's memory limit
	// SetupMs is the program's set-up as it times itself, in a fresh warm
	// sandbox (p50); ColdSetupMs the same in the cold runsc run.
	SetupMs         float64     `json:"setup_ms"`
	ColdSetupMs     float64     `json:"cold_setup_ms"`
	CheckpointBytes int64       `json:"checkpoint_bytes"` // of the idle parent
	ColdRun         Dist        `json:"cold_run"`         // raw runsc run until the answer
	FreshWarm       Dist        `json:"fresh_warm"`       // spawn on a settled pool until the answer
	Forks           []ForkWidth `json:"forks"`
}

// ForkWidth is one fork width.
type ForkWidth struct {
	Copies     int     `json:"copies"`
	Wall       Dist    `json:"wall"`        // fork call until every copy answered
	FreshRatio float64 `json:"fresh_ratio"` // Wall / FreshWarm (p50)
	ColdRatio  float64 `json:"cold_ratio"`  // Wall / ColdRun (p50)
}

// forkWidths are the fork section's copy counts.
var forkWidths = []int{1, 4, 8}

// forkProgram is the benchmark's python3: its set-up imports a dozen
// modules and builds a 100 000-entry table; then it answers each stdin
// line "q TAG" with "answer TAG <entries> <setup ms>", or, given the
// argument "once", answers once and exits (the raw run).
const forkProgram = `import sys, time
t0 = time.monotonic()
import asyncio, decimal, email.mime.multipart, hashlib, http.server, json, sqlite3, urllib.request, xml.etree.ElementTree
table = {f"key-{i}": {"n": i, "sq": i * i, "tags": [str(i % 7), str(i % 11)]} for i in range(100000)}
setup = (time.monotonic() - t0) * 1000
once = sys.argv[1:] == ["once"]
while True:
    line = "q once" if once else sys.stdin.readline()
    if not line:
        break
    print("answer", line.split()[1], len(table), round(setup), flush=True)
    if once:
        break
`

// forkProgramDesc is forkProgram for the report.
const forkProgramDesc = "python3: imports 9 modules (asyncio, decimal, email, hashlib, http.server, json, sqlite3, urllib, xml), builds a 100 000-entry dict, then answers stdin lines"

// forkMemory is each instance's memory limit: small enough that the
// budget admits a parent and 8 copies at once.
const forkMemory = 512 << 20

// fork measures the fork section.
func (b *bench) fork(ctx context.Context) error {
	if !slices.Contains(b.o.Runtimes, "runsc") {
		b.note("fork: not measured: live forks need runsc (runtimes: %v)", b.o.Runtimes)
		return nil
	}
	var buf bytes.Buffer
	if err := baseimage.WriteHostPythonTar(&buf); err != nil {
		b.note("fork: not measured: %v", err)
		return nil
	}
	slots := max(b.rep.Setup.Slots, 2*(1+forkWidths[len(forkWidths)-1]))
	b.progress("fork: starting a daemon with the warm pool on and %d slots", slots)
	d, err := b.startDaemon(ctx, "fork", true, func(c *DaemonConfig) { c.Slots = slots })
	if err != nil {
		return err
	}
	defer func() { _ = d.stop() }()
	if ws, err := d.warmStatus(ctx); err != nil {
		return err
	} else if !ws.Enabled {
		b.note("fork: not measured: live forks need arbor's static init (%s); pass Options.InitBinary", ws.Reason)
		return nil
	}
	b.progress("fork: importing python3 (%d MiB tarball)", buf.Len()>>20)
	img, err := d.importTar(ctx, buf.Bytes())
	if err != nil {
		return err
	}
	raw, err := newRawSet(ctx, filepath.Join(b.home, "raw-python"), buf.Bytes(), []string{"runsc"})
	if err != nil {
		return err
	}
	defer raw.close()
	cold, err := raw.runners["runsc"].withSpec("python", minimalSpec(raw.rootfs, []string{"/usr/bin/python3", "-u", "-c", forkProgram, "once"}))
	if err != nil {
		return err
	}

	reps := max(2, b.o.Iterations/4)
	if b.o.Quick {
		reps = 1 // a smoke: the section works
	}
	sec := &ForkSection{Runtime: "runsc", Program: forkProgramDesc, Reps: reps, Slots: slots, MemoryMiB: forkMemory >> 20}
	f := &forker{d: d, image: img}
	var coldS, freshS []time.Duration
	var setups, coldSetups []float64
	walls := make([][]time.Duration, len(forkWidths))
	coldRun := func() error {
		wall, line, err := coldUntilAnswer(ctx, cold)
		coldS, coldSetups = append(coldS, wall), append(coldSetups, setupOf(line))
		return err
	}
	// Fresh starts first: the pool refills only while no run is in flight,
	// and the forks' parent runs throughout. A first run makes the pool
	// keep sandboxes for the program's image and limits.
	b.progress("fork: %d fresh starts on the warm pool, each after a cold runsc run", reps)
	if _, _, err := f.fresh(ctx, "warm-up"); err != nil {
		return err
	}
	for i := range reps {
		if err := coldRun(); err != nil {
			return err
		}
		if _, err := d.waitPoolSettled(ctx, "runsc", 1); err != nil {
			return err
		}
		wall, setup, err := f.fresh(ctx, fmt.Sprintf("fresh-%d", i))
		if err != nil {
			return err
		}
		freshS, setups = append(freshS, wall), append(setups, setup)
	}
	// The parent waits, idle, after its set-up.
	parent, err := f.spawn(ctx, "q ready\n")
	if err != nil {
		return err
	}
	defer f.end(ctx, parent)
	if _, err := f.answer(ctx, parent, "ready"); err != nil {
		return err
	}
	b.progress("fork: %d forks into each of %v, each round after a cold runsc run", reps, forkWidths)
	for i := range reps {
		if err := coldRun(); err != nil {
			return err
		}
		for j, n := range forkWidths {
			wall, size, err := f.forkAndAsk(ctx, parent, n, fmt.Sprintf("r%d", i))
			if err != nil {
				return err
			}
			walls[j] = append(walls[j], wall)
			sec.CheckpointBytes = size
		}
	}
	sec.ColdRun, sec.FreshWarm = dist(coldS), dist(freshS)
	sec.SetupMs, sec.ColdSetupMs = round3(medianMs(setups)), round3(medianMs(coldSetups))
	for j, n := range forkWidths {
		w := ForkWidth{Copies: n, Wall: dist(walls[j])}
		w.FreshRatio = ratio(w.Wall.P50Ms, sec.FreshWarm.P50Ms)
		w.ColdRatio = ratio(w.Wall.P50Ms, sec.ColdRun.P50Ms)
		sec.Forks = append(sec.Forks, w)
	}
	b.rep.Fork = sec
	for _, m := range d.logs.warnings() {
		b.note("fork daemon: %s", m)
	}
	return nil
}

// forker drives forkProgram instances on the fork daemon.
type forker struct {
	d     *daemonConn
	image string
}

// spawn starts forkProgram with its stdin open, first sending it line
// (if any).
func (f *forker) spawn(ctx context.Context, line string) (string, error) {
	rt, mem, no, yes, timeout := "runsc", int64(forkMemory), false, true, 3600.0 // the parent lives through the section
	sp, err := f.d.c.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: f.image, Command: "/usr/bin/python3", Args: []string{"-u", "-c", forkProgram},
		Shell: &no, Runtime: &rt, Disposable: &yes, ResourcesLimits: &apitypes.ResourcesLimits{MemoryBytes: &mem},
		Stdin: &apitypes.ClosableStreamRepr{Value: line, Close: &no}, Timeout: &timeout})
	if err != nil {
		return "", fmt.Errorf("fork: spawn python3: %w", err)
	}
	return sp.UUID, nil
}

// fresh starts the program on the pool and times it until it answers; it
// returns that and the set-up time the program reports.
func (f *forker) fresh(ctx context.Context, tag string) (time.Duration, float64, error) {
	t0 := time.Now()
	op, err := f.spawn(ctx, "q "+tag+"\n")
	if err != nil {
		return 0, 0, err
	}
	defer f.end(ctx, op)
	line, err := f.answer(ctx, op, tag)
	wall := time.Since(t0)
	if err != nil {
		return 0, 0, err
	}
	return wall, setupOf(line), nil
}

// setupOf is the set-up time in forkProgram's answer line "answer TAG
// ENTRIES SETUP".
func setupOf(line string) float64 {
	fs := strings.Fields(line)
	if len(fs) < 4 {
		return 0
	}
	setup, _ := strconv.ParseFloat(fs[3], 64)
	return setup
}

// forkAndAsk forks parent into n copies and times it until each has
// answered a line; it returns that and the checkpoint's size.
func (f *forker) forkAndAsk(ctx context.Context, parent string, n int, tag string) (time.Duration, int64, error) {
	t0 := time.Now()
	res, err := f.d.c.Fork(ctx, parent, apitypes.ForkRequest{Count: n})
	if err != nil {
		return 0, 0, fmt.Errorf("fork into %d: %w", n, err)
	}
	defer f.end(ctx, res.Operations...)
	if len(res.Operations) != n {
		return 0, 0, fmt.Errorf("fork into %d started %d copies", n, len(res.Operations))
	}
	_, err = parallel(n, func(i int) error {
		op, t := res.Operations[i], fmt.Sprintf("%s-%d-%d", tag, n, i)
		open := false
		if err := f.d.c.WriteStdin(ctx, op, 1, apitypes.ClosableStreamRepr{Value: "q " + t + "\n", Close: &open}); err != nil {
			return fmt.Errorf("stdin of copy %s: %w", op, err)
		}
		_, err := f.answer(ctx, op, t)
		return err
	})
	return time.Since(t0), res.CheckpointBytes, err
}

// answer follows op's main process's stdout until it holds the line
// "answer TAG ..." and returns that line.
func (f *forker) answer(ctx context.Context, op, tag string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	want := "answer " + tag + " "
	var out strings.Builder
	found := errors.New("found")
	var line string
	spid := 1
	err := f.d.c.StreamEvents(ctx, op, client.EventsOptions{After: -1, Follow: true, Spid: &spid}, func(ev apitypes.OperationEvent) error {
		if ev.Type != apitypes.EventStdout {
			return nil
		}
		var s apitypes.EventDataStream
		if err := json.Unmarshal(ev.Data, &s); err != nil {
			return err
		}
		b, err := apitypes.StreamRepr{Value: s.Value, Encoding: s.Encoding}.Bytes()
		if err != nil {
			return err
		}
		out.Write(b)
		if i := strings.Index(out.String(), want); i >= 0 {
			if j := strings.IndexByte(out.String()[i:], '\n'); j >= 0 {
				line = out.String()[i : i+j]
				return found
			}
		}
		return nil
	})
	if errors.Is(err, found) {
		return line, nil
	}
	return "", fmt.Errorf("fork: operation %s never answered %q (stdout %q): %v", op, tag, out.String(), err)
}

// end cancels ops and waits for them, untimed.
func (f *forker) end(ctx context.Context, ops ...string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	for _, op := range ops {
		_ = f.d.c.Cancel(ctx, op)
	}
	for _, op := range ops {
		_, _ = f.d.c.Wait(ctx, op)
	}
}

// coldUntilAnswer times one `runsc run` of r's bundle from its start until
// the program's answer line, then waits for it to exit; it returns the
// time and the line.
func coldUntilAnswer(ctx context.Context, r *rawRunner) (time.Duration, string, error) {
	cmd := r.command(ctx)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, "", err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, "", err
	}
	var wall time.Duration
	var line string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "answer ") && wall == 0 {
			wall, line = time.Since(start), sc.Text()
		}
	}
	if err := cmd.Wait(); err != nil || wall == 0 {
		return 0, "", fmt.Errorf("raw runsc run of python3: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	return wall, line, nil
}

// forkTargets is issue 19's goal: a fork into 4 copies answers sooner than
// one cold runsc run of the same program.
func forkTargets(r *Report) []Target {
	if r.Fork == nil {
		return nil
	}
	for _, w := range r.Fork.Forks {
		if w.Copies == 4 {
			return []Target{{Name: "live fork into 4, all answered / one cold runsc run answered (p50)", Runtime: r.Fork.Runtime, Op: "<=", Limit: 1,
				Value: w.ColdRatio, Note: "python3 after its set-up"}}
		}
	}
	return nil
}

// writeFork writes the section's table.
func writeFork(p func(string, ...any), table func([][]string), r Report) {
	f := r.Fork
	if f == nil {
		return
	}
	p("\n8. Live forks (%s; %s; set-up %s in a warm sandbox, %s in the cold run; checkpoint %s; %d MiB limit; %d samples)",
		f.Runtime, f.Program, fmtMs(f.SetupMs), fmtMs(f.ColdSetupMs), sizeName(f.CheckpointBytes), f.MemoryMiB, f.Reps)
	rows := [][]string{{"series", "until every copy answered: p50", "p95", "× fresh on warm pool", "× cold runsc run"}}
	rows = append(rows,
		[]string{"cold `runsc run`, set-up included", fmtMs(f.ColdRun.P50Ms), fmtMs(f.ColdRun.P95Ms), fmtRatio(ratio(f.ColdRun.P50Ms, f.FreshWarm.P50Ms)), "1.00×"},
		[]string{"fresh start on the warm pool, set-up included", fmtMs(f.FreshWarm.P50Ms), fmtMs(f.FreshWarm.P95Ms), "1.00×", fmtRatio(ratio(f.FreshWarm.P50Ms, f.ColdRun.P50Ms))})
	for _, w := range f.Forks {
		rows = append(rows, []string{fmt.Sprintf("fork into %d", w.Copies), fmtMs(w.Wall.P50Ms), fmtMs(w.Wall.P95Ms), fmtRatio(w.FreshRatio), fmtRatio(w.ColdRatio)})
	}
	table(rows)
}
