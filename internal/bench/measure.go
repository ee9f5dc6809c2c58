package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

// sample is one run through the API, timed by the client.
type sample struct {
	wall       time.Duration
	start, end time.Time
	// CPU used meanwhile by this process (daemon and client: arbor's own
	// code) and by the child processes it reaped (the runtime binaries and
	// their sandboxes). Only meaningful for runs made one at a time.
	selfCPU, childCPU time.Duration
	op                string
	image             string // result image ("" for disposable runs)
}

// spawn describes a run: a command through the shell, or a plain argv.
type spawn struct {
	runtime    string
	image      string
	shell      string   // run through /bin/sh -c when set
	argv       []string // otherwise
	disposable bool
	timeout    float64 // seconds; 0: the daemon's default
}

func (s spawn) request() apitypes.InstanceSpawnRequest {
	req := apitypes.InstanceSpawnRequest{Image: s.image, Disposable: &s.disposable, Runtime: &s.runtime}
	if s.shell != "" {
		sh := true
		req.Command, req.Shell = s.shell, &sh
	} else {
		req.Command, req.Args = s.argv[0], s.argv[1:]
	}
	if s.timeout > 0 {
		req.Timeout = &s.timeout
	}
	return req
}

// runAPI runs s through the client (spawn, then follow events to
// completion, then read the operation) and checks it succeeded with exit
// code 0. The wall time covers exactly that, as a client sees it.
func (b *bench) runAPI(ctx context.Context, d *daemonConn, s spawn) (sample, error) {
	self0, child0 := cpuNow()
	t0 := time.Now()
	op, err := d.c.Run(ctx, s.request())
	t1 := time.Now()
	self1, child1 := cpuNow()
	what := fmt.Sprintf("%s run of %q (%s daemon)", s.runtime, s.request().Command, d.name)
	if err != nil {
		return sample{}, fmt.Errorf("%s: %w", what, err)
	}
	if op.Status != apitypes.StatusSuccess {
		return sample{}, fmt.Errorf("%s: operation %s %s: %s", what, op.UUID, op.Status, deref(op.Error))
	}
	var m apitypes.InstanceMetadata
	if err := json.Unmarshal(op.Metadata, &m); err != nil {
		return sample{}, fmt.Errorf("%s: decode metadata: %w", what, err)
	}
	if m.Result == nil {
		return sample{}, fmt.Errorf("%s: operation %s has no result", what, op.UUID)
	}
	if code := m.Result.State.ExitCode; code != 0 {
		stderr, _ := m.Result.Stderr.Bytes()
		return sample{}, fmt.Errorf("%s: exit code %d: %s", what, code, strings.TrimSpace(string(stderr)))
	}
	out := sample{wall: t1.Sub(t0), start: t0, end: t1, op: op.UUID, selfCPU: self1 - self0, childCPU: child1 - child0}
	if !s.disposable {
		out.image = resultImage(op)
		if out.image == "" {
			return sample{}, fmt.Errorf("%s: non-disposable run produced no image", what)
		}
	}
	return out, nil
}

// phaseSample is one run's split by event timestamps.
type phaseSample struct {
	setup, runtime, process, unmount, finish, delivery time.Duration
}

// phases reads s's event log (after the fact, untimed) and splits its wall
// time at the init, exit, shutdown and completion events.
func (b *bench) phases(ctx context.Context, d *daemonConn, s sample) (phaseSample, error) {
	var initTS, exitTS, shutTS, doneTS time.Time
	var process time.Duration
	err := d.c.StreamEvents(ctx, s.op, client.EventsOptions{After: -1}, func(ev apitypes.OperationEvent) error {
		ts, err := time.Parse(time.RFC3339Nano, ev.TS)
		if err != nil {
			return fmt.Errorf("event %d timestamp %q: %w", ev.ID, ev.TS, err)
		}
		switch {
		case ev.Type == apitypes.EventInit && initTS.IsZero():
			initTS = ts
		case ev.Type == apitypes.EventExit && ev.Spid == 1:
			exitTS = ts
			var d apitypes.EventDataExit
			if json.Unmarshal(ev.Data, &d) == nil {
				process = time.Duration(d.DurationMs) * time.Millisecond
			}
		case ev.Type == apitypes.EventShutdown:
			shutTS = ts
		case ev.Type == apitypes.EventCompletion:
			doneTS = ts
		}
		return nil
	})
	if err != nil {
		return phaseSample{}, fmt.Errorf("events of %s: %w", s.op, err)
	}
	if initTS.IsZero() || exitTS.IsZero() || shutTS.IsZero() || doneTS.IsZero() {
		return phaseSample{}, fmt.Errorf("events of %s: missing init, exit, shutdown or completion", s.op)
	}
	return phaseSample{
		setup:    initTS.Sub(s.start),
		runtime:  exitTS.Sub(initTS),
		process:  process,
		unmount:  shutTS.Sub(exitTS),
		finish:   doneTS.Sub(shutTS),
		delivery: s.end.Sub(doneTS),
	}, nil
}

// summarize takes the median of each phase.
func summarize(ps []phaseSample) Phases {
	pick := func(f func(phaseSample) time.Duration) float64 {
		ds := make([]time.Duration, len(ps))
		for i, p := range ps {
			ds[i] = f(p)
		}
		return dist(ds).P50Ms
	}
	return Phases{
		SetupMs:    pick(func(p phaseSample) time.Duration { return p.setup }),
		RuntimeMs:  pick(func(p phaseSample) time.Duration { return p.runtime }),
		ProcessMs:  pick(func(p phaseSample) time.Duration { return p.process }),
		UnmountMs:  pick(func(p phaseSample) time.Duration { return p.unmount }),
		FinishMs:   pick(func(p phaseSample) time.Duration { return p.finish }),
		DeliveryMs: pick(func(p phaseSample) time.Duration { return p.delivery }),
	}
}

// cpuNow returns the CPU time used so far by this process and by its
// reaped children.
func cpuNow() (self, children time.Duration) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) == nil {
		children = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return self, children
}

// series collects the samples of one measured point.
type series struct {
	walls    []time.Duration
	selfCPU  []time.Duration
	childCPU []time.Duration
	phases   []phaseSample
}

// addRaw records a raw run: its wall time and its CPU time (all in
// children).
func (sr *series) addRaw(wall, cpu time.Duration) {
	sr.walls = append(sr.walls, wall)
	sr.selfCPU = append(sr.selfCPU, 0)
	sr.childCPU = append(sr.childCPU, cpu)
}

// cpu summarises the series' CPU per run (p50s).
func (sr *series) cpu() CPU {
	return CPU{SelfMs: dist(sr.selfCPU).P50Ms, ChildrenMs: dist(sr.childCPU).P50Ms}
}

// add records s, and its phases if withPhases.
func (b *bench) add(ctx context.Context, d *daemonConn, sr *series, s sample, withPhases bool) error {
	sr.walls = append(sr.walls, s.wall)
	sr.selfCPU = append(sr.selfCPU, s.selfCPU)
	sr.childCPU = append(sr.childCPU, s.childCPU)
	if !withPhases {
		return nil
	}
	p, err := b.phases(ctx, d, s)
	if err != nil {
		return err
	}
	sr.phases = append(sr.phases, p)
	return nil
}

// commitDist summarises the series' commits: unmount and finish phases.
func (sr *series) commitDist() Dist {
	var ds []time.Duration
	for _, p := range sr.phases {
		ds = append(ds, p.unmount+p.finish)
	}
	return dist(ds)
}

// dist summarises ds (p50 and p95 by linear interpolation).
func dist(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	xs := make([]float64, len(ds))
	sum := 0.0
	for i, d := range ds {
		xs[i] = float64(d) / float64(time.Millisecond)
		sum += xs[i]
	}
	slices.Sort(xs)
	return Dist{
		N:      len(xs),
		P50Ms:  round3(quantile(xs, 0.50)),
		P95Ms:  round3(quantile(xs, 0.95)),
		MinMs:  round3(xs[0]),
		MaxMs:  round3(xs[len(xs)-1]),
		MeanMs: round3(sum / float64(len(xs))),
	}
}

// quantile of sorted xs, interpolating between order statistics.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 1 {
		return xs[0]
	}
	pos := q * float64(len(xs)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(xs)-1)
	return xs[lo] + (xs[hi]-xs[lo])*(pos-float64(lo))
}

func medianMs(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return round3(quantile(s, 0.5))
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// ratio is a/b rounded, or 0 when b is not positive.
func ratio(a, b float64) float64 {
	if b <= 0 || math.IsNaN(a) || math.IsInf(a, 0) {
		return 0
	}
	return round3(a / b)
}
