package engine

import (
	"context"
	"time"

	"github.com/arborsh/arbor/internal/runtime"
)

// runDetached runs sandbox s as Runtime.Run does, from absent back to
// absent, but booted detached: no runtime process stays beside the
// sandbox while it runs. A `runsc run` waiting in the foreground costs
// ~3.7 MiB of host memory outside the sandbox's cgroup for as long as the
// run lasts (BENCHMARKS.md, "Idle instances"), for nothing the init does
// not report itself. The sandbox is destroyed once over is closed (the
// init reported the exit and ends, or is gone) or when ctx ends (then
// Killed); s.OnStart is called once it runs (with pid 0: the runtime
// process that Run reports has exited).
func (e *Engine) runDetached(ctx context.Context, rt runtime.Runtime, s runtime.Spec, over <-chan struct{}) (runtime.Result, error) {
	res := runtime.Result{Signal: -1, Started: time.Now()}
	if err := rt.Boot(ctx, s); err != nil {
		return res, err // Boot leaves nothing behind
	}
	if s.OnStart != nil {
		s.OnStart(0)
	}
	select {
	case <-over:
	case <-ctx.Done():
		res.Killed = true
	}
	// Destroy waits for the sandbox's processes (the gofer holds the root
	// filesystem's mount) before the upper directory is committed.
	err := rt.Destroy(context.WithoutCancel(ctx), s.ID)
	res.Duration = time.Since(res.Started)
	return res, err
}

// detachedRun is the outcome of runDetached, delivered on a channel.
type detachedRun struct {
	res runtime.Result
	err error
}

// deferTeardown lets a cold run's result go out before its sandbox is
// destroyed: once the init has reported the command's exit, every process
// in the sandbox is dead (the init killed and reaped them first), so what
// is left (killing the sentry and gofer, or runc's init, and waiting for
// them) changes nothing the result reports. The root filesystem must
// still outlive the sandbox: the run's unmount waits (awaitTeardown).
// A networked run keeps waiting in place, before its network is released.
func (e *Engine) deferTeardown(p *runPlan, done <-chan detachedRun) {
	p.teardown = func() bool {
		if r := <-done; r.err != nil {
			e.log.Warn("destroy sandbox", "operation", p.op, "err", r.err)
			return false
		}
		return true
	}
}

// awaitTeardown waits for the sandbox's teardown that deferTeardown left
// running, if any: before the run's root filesystem is unmounted. It
// reports whether the sandbox is known gone (false if its destroy failed).
func (p *runPlan) awaitTeardown() bool {
	if t := p.teardown; t != nil {
		p.teardown = nil
		return t()
	}
	return true
}
