package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/initproc"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/runtime"
	"github.com/arborsh/arbor/internal/store"
)

// Live forks: a running instance's sandbox is checkpointed (runsc) and
// restored N times, each copy a new instance whose main process continues
// from the parent's memory. Memory and files must match exactly: the
// checkpoint is taken with the parent paused, and while it is paused its
// upper dir is copied once; that copy becomes the fork point's image,
// committed like a run's result, and every copy mounts that image as its
// lower layers with a fresh upper of its own (as a run of the image
// would), so no copy of the upper is made per fork and each copy's
// snapshot descends from the fork point.

// restorePlan is what a fork's run restores its sandbox from.
type restorePlan struct {
	image string // checkpoint image directory
	pid   int    // the main process's pid in the sandbox
	done  func() // the run has restored (or will not): the image may go
}

// testHookForkQuiet, when set by a test, runs while a forked sandbox is
// paused with its checkpoint written and its upper copied;
// testHookForkRestored once a copy's sandbox is restored, before the
// engine attaches to it.
var testHookForkQuiet, testHookForkRestored func()

// testHookForkResume, when set by a test, runs before a fork's parent is
// resumed (or, paused, released).
var testHookForkResume func()

// Fork checkpoints running instance op and starts req.Count new instances
// from the checkpoint; the parent goes on. It returns once the fork
// point's image is committed and the copies' operations are started.
func (e *Engine) Fork(ctx context.Context, account, op string, req ForkRequest) (ForkResult, error) {
	n := req.Count
	if n == 0 {
		n = 1
	}
	if n < 1 || n > MaxForks {
		return ForkResult{}, errdefs.InvalidArgument("count %d: fork into 1 to %d copies", req.Count, MaxForks)
	}
	f, err := e.checkpointable(ctx, account, op)
	if err != nil {
		return ForkResult{}, err
	}
	a, sb, p := f.a, f.sb, f.p
	if err := e.admit(ctx, account); err != nil {
		return ForkResult{}, err
	}
	if err := e.checkDisk(); err != nil {
		return ForkResult{}, err
	}

	dir := filepath.Join(e.cfg.Home, "run", "fork-"+newLayerID()[:16])
	if err := os.Mkdir(dir, 0o700); err != nil {
		return ForkResult{}, err
	}
	image, upper := filepath.Join(dir, "checkpoint"), filepath.Join(dir, "upper")
	var pending atomic.Int64 // copies yet to restore; the last removes dir
	pending.Store(int64(n))
	removeDir := func() {
		if err := os.RemoveAll(dir); err != nil {
			e.log.Warn("remove fork checkpoint", "dir", dir, "err", err)
		}
	}
	fail := func(err error) (ForkResult, error) {
		removeDir()
		return ForkResult{}, err
	}
	begin := time.Now()
	finish, err := e.saveStopped(ctx, f, image, upper, req.PauseParent)
	if err != nil {
		return fail(err)
	}
	paused := time.Since(begin)
	// The parent resumes beside the commit and the copies' start: a
	// runsc call less on their path.
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if testHookForkResume != nil {
			testHookForkResume()
		}
		if err := finish(); err != nil {
			e.log.Error("fork: the parent stays paused", "operation", a.id, "err", err)
		}
	}()
	if req.PauseParent {
		pausedParents.Store(a.id, sb)
		go func() { // forget it when it ends paused (cancelled, timed out)
			_, _ = e.WaitOperation(e.ctx, account, a.id)
			pausedParents.Delete(a.id)
		}()
	}
	point, err := e.commitForkPoint(ctx, p, upper)
	if err != nil {
		if req.PauseParent { // no fork: the parent goes on
			_, _ = resumeParent(context.WithoutCancel(ctx), a.id)
		}
		return fail(err)
	}
	st := dirBytes(image)
	e.log.Info("fork point", "operation", a.id, "image", point.UUID, "copies", n, "checkpoint_bytes", st, "paused", paused)
	res := ForkResult{Image: point.UUID, CheckpointBytes: st}
	for range n {
		var once sync.Once
		done := func() {
			once.Do(func() {
				if pending.Add(-1) == 0 {
					removeDir()
				}
			})
		}
		id, err := e.startFork(ctx, p, point, &restorePlan{image: image, pid: f.pid, done: done})
		if err != nil {
			done()
			for range n - 1 - len(res.Operations) { // the copies never started
				if pending.Add(-1) == 0 {
					removeDir()
				}
			}
			if len(res.Operations) == 0 {
				return ForkResult{}, err
			}
			e.log.Warn("fork: start a copy", "operation", a.id, "err", err)
			break
		}
		res.Operations = append(res.Operations, id)
	}
	return res, nil
}

// running is a running instance that can be checkpointed (checkpointable).
type running struct {
	a   *activeOp
	sb  *sandboxRef
	p   *runPlan
	pid int // its main process's, in the sandbox
}

// checkpointable finds account's running instance op and checks that its
// sandbox can be checkpointed: runsc, arbor's init, booted forkable.
func (e *Engine) checkpointable(ctx context.Context, account, op string) (running, error) {
	a, err := e.runningOp(ctx, account, op)
	if err != nil {
		return running{}, err
	}
	a.mu.Lock()
	sb, main := a.sandbox, a.procs[1]
	a.mu.Unlock()
	if sb == nil || main == nil {
		return running{}, errdefs.Conflict("operation %s: the instance's main process has exited: nothing to checkpoint", a.id)
	}
	p := sb.p
	if p.rt.Name() != "runsc" {
		return running{}, runtime.NotCheckpointable(p.rt.Name())
	}
	if p.agent == nil {
		return running{}, errdefs.FailedPrecondition("operation %s runs without arbor's init (no static arbor-init found at startup): it cannot be checkpointed", a.id)
	}
	if p.warm == nil && p.restore == nil && !forkable(p) {
		return running{}, errdefs.FailedPrecondition("operation %s was spawned with its stdin closed, so its sandbox was not made checkpointable: spawn long-running instances with stdin.close=false", a.id)
	}
	return running{a: a, sb: sb, p: p, pid: main.pid}, nil
}

// saveRunning checkpoints r's sandbox into the new directory image and,
// while it is stopped, copies its upper dir to upper: memory and files
// match. keepPaused leaves it stopped (see CheckpointOptions).
func (e *Engine) saveRunning(ctx context.Context, r running, image, upper string, keepPaused bool) error {
	finish, err := e.saveStopped(ctx, r, image, upper, keepPaused)
	if err != nil {
		return err
	}
	return finish()
}

// saveStopped is saveRunning returning with the sandbox still stopped:
// finish, to be called once, resumes it (unless keepPaused) and only then
// lets the instance take input, relay previews or checkpoint again. A fork
// calls it beside the copies' start, off their path.
func (e *Engine) saveStopped(ctx context.Context, r running, image, upper string, keepPaused bool) (finish func() error, err error) {
	unhold := e.holdRelay(ctx, r.a.id) // no preview relay in the checkpoint (preview.go)
	// No frame may be half-sent to the init at the checkpoint. Holding its
	// input also takes checkpoints of one instance one at a time.
	release, err := r.p.agent.Quiesce(ctx)
	if err != nil {
		unhold()
		return nil, errdefs.Conflict("operation %s: %v", r.a.id, err)
	}
	err = r.sb.rt.Checkpoint(ctx, r.sb.cid, runtime.CheckpointOptions{Image: image, KeepPaused: true, Quiet: func() error {
		err := copyUpper(r.sb.upper, upper)
		if testHookForkQuiet != nil {
			testHookForkQuiet()
		}
		return err
	}})
	if err != nil {
		release()
		unhold()
		r.a.mu.Lock()
		exited := r.a.exited
		r.a.mu.Unlock()
		if exited {
			return nil, errdefs.Conflict("operation %s: the instance's main process exited during the checkpoint", r.a.id)
		}
		return nil, fmt.Errorf("checkpoint operation %s: %w", r.a.id, err)
	}
	return func() error {
		defer unhold()
		defer release()
		if keepPaused {
			return nil
		}
		if err := r.sb.rt.Resume(context.WithoutCancel(ctx), r.sb.cid); err != nil {
			return fmt.Errorf("resume operation %s after its checkpoint: %w", r.a.id, err)
		}
		return nil
	}, nil
}

// forkable says whether a cold run's sandbox is booted checkpointable (see
// runtime.Spec.Checkpointable): a long-running instance, one whose stdin
// stays open for commands. Batch runs do not pay for it.
func forkable(p *runPlan) bool { return !p.meta.Stdin.Close }

// pausedParents holds the sandboxes that forks left paused: op id →
// *sandboxRef, until a CONT signal to the main process (see resumeParent).
var pausedParents sync.Map

// resumeParent resumes op's sandbox if a fork left it paused, and reports
// whether it was.
func resumeParent(ctx context.Context, op string) (bool, error) {
	v, ok := pausedParents.LoadAndDelete(op)
	if !ok {
		return false, nil
	}
	sb := v.(*sandboxRef)
	return true, sb.rt.Resume(ctx, sb.cid)
}

// copyUpper copies the upper dir src to dst, as it is: overlayfs's
// whiteouts (0:0 devices), opaque and other xattrs, hard links, holes.
func copyUpper(src, dst string) error {
	out, err := exec.Command("cp", "-a", "--reflink=auto", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy upper dir: %v: %s", err, out)
	}
	return nil
}

// commitForkPoint commits the parent's copied upper as a child image of
// its input, or returns the input itself when the run has changed nothing.
func (e *Engine) commitForkPoint(ctx context.Context, p *runPlan, upper string) (store.Image, error) {
	empty, err := dirEmpty(upper)
	if err != nil {
		return store.Image{}, err
	}
	if empty {
		return p.image, nil
	}
	return e.commitPoint(ctx, p, upper, newID())
}

// commitPoint commits the upper dir copied from run p as image id, a
// child of p's input image.
func (e *Engine) commitPoint(ctx context.Context, p *runPlan, upper, id string) (store.Image, error) {
	env := p.image.Env
	if p.meta.PreserveEnv {
		b, _ := json.Marshal(p.env) // a string map: cannot fail
		env = string(b)
	}
	im := store.Image{UUID: id, Account: p.account, Parent: p.image.UUID, Layer: newLayerID(), Depth: p.image.Depth + 1,
		Operation: p.op, Env: env, LayerBytes: dirBytes(upper), CreatedAt: e.now()}
	if err := e.commitLayer(ctx, upper, im); err != nil {
		return store.Image{}, fmt.Errorf("commit the fork point: %w", err)
	}
	return im, nil
}

// startFork records and starts one copy: a run of the parent's plan on
// the fork point's image whose sandbox is restored from the checkpoint.
func (e *Engine) startFork(ctx context.Context, p *runPlan, point store.Image, rp *restorePlan) (string, error) {
	q := *p
	q.image, q.restore = point, rp
	q.files, q.stdin, q.warm, q.agent, q.ids, q.ticket = nil, nil, nil, nil, nil, nil
	q.meta.Image = point.UUID
	q.meta.Files = map[string]oplog.FileSpec{} // in the image already
	meta, _ := json.Marshal(redactMeta(q.meta))
	o := store.Operation{UUID: newID(), Account: p.account, Kind: oplog.KindInstance, Status: oplog.StatusPending,
		CreatedAt: e.now(), ImageUUID: point.UUID, Metadata: string(meta)}
	q.op = o.UUID
	lease, err := e.leaseImage(point.UUID, o.UUID, false)
	if err != nil {
		return "", err
	}
	q.ticket = e.queue.enqueue(o.UUID, q.memory)
	err = e.startOp(ctx, o, func(ctx context.Context, o *op) outcome {
		defer lease.Release()
		defer rp.done()
		return e.execute(ctx, o, &q)
	})
	if err != nil {
		e.queue.cancel(q.ticket)
		lease.Release()
		return "", err
	}
	return o.UUID, nil
}

// execRestored is execWarm for a fork: the sandbox is restored from the
// checkpoint onto spec's root, and the engine attaches to the command
// its init was running. The sandbox is destroyed when the command ends.
func (e *Engine) execRestored(ctx context.Context, p *runPlan, spec runtime.Spec) (runtime.Result, error) {
	res := runtime.Result{Signal: -1, Started: time.Now()}
	agent, pipes, err := initproc.NewAgentPipes()
	if err != nil {
		return res, err
	}
	defer agent.Close()
	p.agent = agent
	err = p.rt.Restore(ctx, runtime.Spec{ID: spec.ID, Bundle: spec.Bundle, Rootfs: spec.Rootfs, Hostname: spec.Hostname, NetNS: spec.NetNS,
		Stdin: pipes.Stdin, Stdout: pipes.Stdout}, p.restore.image)
	pipes.Close() // the sandbox has its copies
	p.restore.done()
	if err != nil {
		return res, fmt.Errorf("restore the fork: %w", err)
	}
	if testHookForkRestored != nil {
		testHookForkRestored()
	}
	destroy := e.destroyer(ctx, p, spec.ID)
	defer destroy() // its init may outlive the command (a warm parent's does)
	return runWatched(ctx, res, destroy, func() (initproc.Exit, time.Duration, error) {
		return agent.Attach(spec.Stdin, spec.Stdout, spec.Stderr, func() { spec.OnStart(p.restore.pid) })
	})
}

// destroyer returns a function that destroys run p's sandbox id, also
// after ctx has ended, and logs a failure.
func (e *Engine) destroyer(ctx context.Context, p *runPlan, id string) func() {
	return func() {
		if err := p.rt.Destroy(context.WithoutCancel(ctx), id); err != nil {
			e.log.Warn("destroy sandbox", "operation", p.op, "sandbox", id, "err", err)
		}
	}
}

// runWatched runs a sandbox's command through its init (run: the agent's
// Run or Attach; execWarm, execRestored) and folds its exit into res. If
// ctx ends first, destroy ends the sandbox and res says the run was
// killed. The sandbox going away with the command is no error.
func runWatched(ctx context.Context, res runtime.Result, destroy func(), run func() (initproc.Exit, time.Duration, error)) (runtime.Result, error) {
	done := make(chan struct{})
	killed := make(chan bool, 1)
	go func() {
		select {
		case <-ctx.Done():
			destroy()
			killed <- true
		case <-done:
			killed <- false
		}
	}()
	x, dur, err := run()
	close(done)
	res = exitResult(res, x, dur, err)
	res.Killed = <-killed
	if initproc.IsSandboxGone(err) {
		err = nil
	}
	return res, err
}
