package engine

import (
	"context"
	"os"
	"time"

	"github.com/arborsh/arbor/internal/layers"
	"github.com/arborsh/arbor/internal/runtime"
	"github.com/arborsh/arbor/internal/store"
)

// Continued sandboxes: when a non-disposable run in a warm sandbox ends,
// the sandbox holds exactly the image the run made. Instead of destroying
// it, the engine commits the step as a layer while the sandbox stays up
// and puts the sandbox back into the pool under the new image, so the next
// run on that image (the agent's next step) continues in it at exec cost,
// with no boot and no teardown. It goes to exactly one run; a branch of the
// same image gets a pooled or cold sandbox.
//
// What makes a continued run the same as a cold one:
//   - the filesystem is the image: the live upper directory is coherent
//     with what the sandbox wrote once its processes are gone (measured
//     under runsc with the flags in design.md: contents, modes, times,
//     renames and MAP_SHARED writes are all there at once, and the upper
//     directory is byte for byte the same before and after a destroy), and
//     the step's layer is what changed in it since the last commit
//     (layers.DiffUpper; a layers.Tracker, watching the upper directory
//     since the sandbox's boot, makes that diff visit only what changed),
//     so the image chain is as a cold run's would be;
//   - nothing else survives a step: the init kills and reaps every process,
//     empties /dev/shm and /dev/mqueue, removes System V IPC objects, and
//     checks that it is alone and /dev is as at boot (initproc's
//     continue.go; after the exit is reported, so the result does not wait);
//     each command gets its environment, cwd, user and limits from its own
//     request. A sandbox the init reports otherwise, a run that was killed,
//     failed or timed out, and one whose stdin did not drain are destroyed
//     as before.
//   - RLIMIT_FSIZE can only be lowered inside the sandbox: a run whose
//     limit is higher than a continued sandbox's gets another sandbox
//     (fits); should the limit grow between that check and the start, the
//     run gets the sandbox's (warmFileSize).

// maxContinuedUpper bounds the upper directory of a sandbox kept to
// continue in.
const maxContinuedUpper = 1 << 30

// continueHold is how long the pool starts no boot after a sandbox was
// kept to continue in: its agent is likely to come back within it, and a
// boot (a few hundred ms of CPU, for another run's sandbox) during the
// next step made a chain's step after a 1 s pause ~40% slower than one
// straight back (15 against 21 ms, runsc, interleaved; the same without
// boots). An agent that thinks for longer finds the boots done.
const continueHold = 2 * time.Second

// continueWait bounds the wait for a finished run's stdin feed to end and
// for its init to report the sandbox fresh.
const continueWait = time.Second

// continueStep reports whether p's warm sandbox may serve another run
// after this one, which ended with res and err, and if so writes the
// step's layer (stepLayer; commitStep commits it) and returns its
// directory, upper's manifest now and the number of entries in the layer.
// The command's processes were all killed and reaped before its exit was
// reported, so upper is quiet: the diff runs while the init makes the
// sandbox fresh, and the result does not wait for the init (wb.freshen;
// the next run on the sandbox does, see settle). Should the init report
// the sandbox stale, the sandbox ends there; the image is the same either
// way, since nothing could write to upper after the exit.
func (e *Engine) continueStep(ctx context.Context, p *runPlan, res runtime.Result, err error) (string, layers.Manifest, int, bool) {
	wb := p.warm
	if wb == nil || p.meta.Disposable {
		return "", nil, 0, false
	}
	if why := notContinued(ctx, res, err, p.lateExec); why != "" {
		e.log.Debug("warm sandbox not continued", "operation", p.op, "sandbox", wb.cid, "why", why)
		return "", nil, 0, false
	}
	f := &freshening{done: make(chan struct{})}
	e.wg.Add(1) // Close waits for it: it may destroy the sandbox (the calling run is counted too: never from zero)
	go func() {
		defer e.wg.Done()
		f.err = wb.agent.Continue(continueWait)
		if e.freshened != nil {
			e.freshened()
		}
		close(f.done)
		if f.err != nil {
			e.dropStale(wb, f)
		}
	}()
	dir, now, n, derr := e.stepLayer(p.rt, wb)
	if derr != nil {
		e.log.Warn("diff a continued sandbox's upper dir", "operation", p.op, "err", derr)
		<-f.done // the run's teardown closes the agent
		return "", nil, 0, false
	}
	wb.freshen = f
	return dir, now, n, true
}

// notContinued says why a warm sandbox whose run ended so may not go on
// into a next step, "" if it may.
func notContinued(ctx context.Context, res runtime.Result, err error, lateExec bool) string {
	switch {
	case err != nil:
		return "the run failed: " + err.Error()
	case ctx.Err() != nil:
		return "the run was cancelled or timed out"
	case res.Killed:
		return "the run's process was killed"
	case !res.Exact:
		return "the run's exit status is not exact"
	case lateExec:
		return "an exec'd process outlived the main one"
	}
	return ""
}

// commitStep commits a continued step's layer as image im, as
// commitLayer commits an upper directory, but synced as a diff's layer
// (layers.SyncDiffed: one directory fsync, not one per directory). Synced
// here rather than while the init freshens the sandbox: under runsc, on
// two busy cores, the sync then took as much longer as the freshen it
// overlapped (exit to result unchanged, 6.6 against 6.8 ms in 100 steps
// each, alternating).
func (e *Engine) commitStep(ctx context.Context, dir string, im store.Image) error {
	if e.layers.SyncsLocally() {
		if err := layers.SyncDiffed(dir); err != nil {
			return err
		}
	}
	return e.layers.CommitSynced(ctx, dir, im.Layer, func() error { return e.recordImages(ctx, im) })
}

// bootToContinue boots, for a non-disposable run that found no warm
// sandbox, one of its own (as the pool would) instead of a cold sandbox
// that ends with the command: it costs about what a cold start costs, and
// the sandbox can then continue into the run's next step, so an agent that
// comes straight back is served warm from its second step on. The pool
// boots it (warmpool.BootFor): when several runs on one image come at
// once (a fan-out of branches), their boots share the cores one per core
// and each run takes the first sandbox ready. nil when the pool is off,
// the run is disposable, or the boot failed (the run then starts cold).
func (e *Engine) bootToContinue(ctx context.Context, p *runPlan) *warmBox {
	if !e.warmEnabled() || p.meta.Disposable {
		return nil
	}
	wb, err := e.warm.BootFor(ctx, keyOf(p, p.image.UUID))
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("boot a sandbox to continue in; running cold", "operation", p.op, "err", err)
		}
		return nil
	}
	if !e.settle(wb) { // one kept to continue in, come meanwhile
		return nil
	}
	if !e.fits(ctx, p, wb) {
		e.destroyWarm(wb)
		return nil
	}
	return wb
}

// fits reports whether continued sandbox wb can give p its file-size
// limit: the init can lower its RLIMIT_FSIZE but not raise it (no
// CAP_SYS_RESOURCE), so a run whose limit is higher than the one the
// sandbox's last run had (its account's quota grew) gets another sandbox.
func (e *Engine) fits(ctx context.Context, p *runPlan, wb *warmBox) bool {
	if wb.fsize <= 0 {
		return true
	}
	limit, _ := e.growthLimit(ctx, p)
	return (&runPlan{limit: limit}).fileSize() <= wb.fsize
}

// stepLayer writes the layer of the step wb just ran (what changed in its
// upper directory since its last commit) into a fresh staging directory.
// It returns the directory, upper's manifest now and the number of entries
// in the layer.
func (e *Engine) stepLayer(rt runtime.Runtime, wb *warmBox) (string, layers.Manifest, int, error) {
	dir, err := os.MkdirTemp(e.layersTmp(), "step-*")
	if err != nil {
		return "", nil, 0, err
	}
	var now layers.Manifest
	var n int
	if wb.track != nil {
		// Files the sandbox still holds open for writing (runsc) may have
		// been written through a mapping, which reports no event.
		if h, ok := rt.(runtime.WriteHolder); ok {
			held, herr := h.HeldForWrite(wb.cid, wb.merged)
			if herr != nil {
				os.RemoveAll(dir)
				return "", nil, 0, herr
			}
			wb.track.Changed(held...)
		}
		now, n, err = wb.track.Diff(wb.committed, dir)
	} else {
		now, n, err = layers.DiffUpper(wb.upper, wb.committed, dir)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, 0, err
	}
	return dir, now, n, nil
}

// keepBox puts wb, whose step was committed as image, back into the pool
// for image's next run; it reports false if the pool would not take it
// (the caller destroys it then).
func (e *Engine) keepBox(p *runPlan, wb *warmBox, image string, now layers.Manifest) bool {
	wb.committed, wb.base, wb.steps = now, now.Bytes(inodeCharge), wb.steps+1
	// The upper directory grows with every step and doubles on disk what
	// the chain's layers hold: a sandbox whose upper outgrew
	// maxContinuedUpper (or what one run may write) is not kept.
	if wb.base > min(p.maxLayer, maxContinuedUpper) || now.Linked() {
		e.log.Debug("warm sandbox not continued", "operation", p.op, "sandbox", wb.cid, "why", "its upper directory is too big or holds hard links")
		return false
	}
	// Once Put returns, a run on image may take wb (one that changed
	// nothing is pooled under the image others run on): wb is not read
	// after it.
	k, f := keyOf(p, image), wb.freshen
	wb.key = k
	if !e.warm.Put(k, wb) {
		e.log.Debug("warm sandbox not continued", "operation", p.op, "sandbox", wb.cid, "why", "the pool is full")
		return false
	}
	if f != nil && !f.pooledUnder(k) {
		// Its init already said it is not fresh: out again, unless a run
		// took it meanwhile (settle ends it then).
		_, out := e.warm.Withdraw(k, func(b *warmBox) bool { return b == wb })
		return !out
	}
	return true
}

// withdrawBox takes wb back out of the pool after its image failed to
// commit; false if a run took it meanwhile (it cannot have: nobody knows
// the image before the commit).
func (e *Engine) withdrawBox(wb *warmBox) bool {
	_, ok := e.warm.Withdraw(wb.key, func(b *warmBox) bool { return b == wb })
	return ok
}

// growthBase is what p's upper directory held before its run: a continued
// sandbox's earlier steps, which its growth does not count.
func (p *runPlan) growthBase() int64 {
	if p.warm == nil {
		return 0
	}
	return p.warm.base
}

// warmFileSize is the RLIMIT_FSIZE a warm run gets (see above).
func (p *runPlan) warmFileSize(want int64) int64 {
	if f := p.warm.fsize; f > 0 && (want <= 0 || want > f) {
		want = f
	}
	p.warm.fsize = want
	return want
}

// trackUpper follows the changes to a warm sandbox's upper directory from
// before anything writes to it, so that each step's diff visits what the
// step changed instead of walking the whole directory (layers.Tracker).
// nil, and the diffs walk, if inotify is not to be had (its per-user
// limits).
func (e *Engine) trackUpper(upper string) *layers.Tracker {
	t, err := layers.NewTracker(upper)
	if err != nil {
		e.log.Debug("continued sandboxes' diffs walk their upper directory", "err", err)
		return nil
	}
	return t
}
