// Package fakeruntime is an in-memory [runtime.Runtime] for unit tests of
// logic that drives sandboxes: it keeps the contract's lifecycle (ids,
// states, Destroy, cancellation, results, errors) but runs no process on
// the host. What a "process" does is played by a [Handler], a Go func
// given the process's spec: it may read stdin, write stdout and stderr,
// write files into the root directory it was given, block until killed,
// and end with an exit code or a signal.
//
// It passes the conformance suite in runtime/runtimetest with the
// capabilities it honestly has: no host pid to signal (OnStart gets 0),
// and user ids are only reported to the handler, never enforced.
package fakeruntime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/runtime"
)

// Process is what a [Handler] is asked to play.
type Process struct {
	ID       string // the sandbox's id
	Exec     bool   // exec'd into a running sandbox, not its main process
	Args     []string
	Env      []string
	Cwd      string
	UID, GID uint32
	Rootfs   string // the sandbox's root directory (Spec.Rootfs)

	Stdin          io.Reader // never nil
	Stdout, Stderr io.Writer // never nil
}

// Exit is how a played process ended.
type Exit struct {
	Code   int
	Signal syscall.Signal // non-zero: died of this signal (Code is ignored)
}

// Exited returns an exit with code.
func Exited(code int) Exit { return Exit{Code: code} }

// Signaled returns a death by sig.
func Signaled(sig syscall.Signal) Exit { return Exit{Signal: sig} }

// Handler plays one process until it would end and reports how. ctx ends
// when the process is killed (its Run or Exec ctx ended, or its sandbox was
// destroyed or stopped): the handler must then return promptly, and what
// it returns is ignored, as a killed process has no say in its status.
type Handler func(ctx context.Context, p *Process) Exit

// Call records one call made to the fake.
type Call struct {
	Op   string // "Run", "Boot", "WaitRunning", "Exec", "Destroy", "Cleanup", "Close", "Checkpoint", "Restore", "Resume"
	ID   string
	Args []string
}

// Runtime is the fake. Its zero value is not usable: call [New].
type Runtime struct {
	handler Handler

	mu        sync.Mutex
	sandboxes map[string]*sandbox
	changed   chan struct{} // closed and replaced on every state change
	calls     []Call
}

var _ runtime.Runtime = (*Runtime)(nil)

// sandbox is one created sandbox.
type sandbox struct {
	spec  runtime.Spec
	kill  context.CancelFunc // ends every process of the sandbox
	ctx   context.Context    // done once stopped or being deleted
	procs sync.WaitGroup     // running handlers, main and exec'd
	crash atomic.Bool        // see Crash
}

// New returns a fake that plays every process with h.
func New(h Handler) *Runtime {
	return &Runtime{handler: h, sandboxes: map[string]*sandbox{}, changed: make(chan struct{})}
}

// Name implements runtime.Runtime.
func (f *Runtime) Name() string { return "fake" }

// Calls returns the calls made so far, in order.
func (f *Runtime) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Sandboxes returns the ids of the sandboxes that exist (running or
// stopped), sorted.
func (f *Runtime) Sandboxes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for id := range f.sandboxes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// record appends a call and, under the same lock, runs fn.
func (f *Runtime) record(c Call, fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	if fn != nil {
		fn()
	}
}

// end kills every process of sb, under f.mu so that Exec adds no process
// to a sandbox once it is ending (stopped, or being deleted).
func (f *Runtime) end(sb *sandbox) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb.kill()
	f.notify()
}

// notify wakes WaitRunning; f.mu must be held.
func (f *Runtime) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// create adds a running sandbox for spec, or fails as the contract says.
func (f *Runtime) create(op string, spec runtime.Spec) (*sandbox, error) {
	if err := spec.Validate(); err != nil {
		f.record(Call{Op: op, ID: spec.ID, Args: spec.Args}, nil)
		return nil, err
	}
	var sb *sandbox
	var err error
	f.record(Call{Op: op, ID: spec.ID, Args: spec.Args}, func() {
		if _, ok := f.sandboxes[spec.ID]; ok {
			err = errdefs.Conflict("sandbox %s exists already in fake: destroy it or pick another id", spec.ID)
			return
		}
		sb = &sandbox{spec: spec}
		sb.ctx, sb.kill = context.WithCancel(context.Background())
		f.sandboxes[spec.ID] = sb
		f.notify()
	})
	return sb, err
}

// remove deletes sb if it is still the sandbox of its id.
func (f *Runtime) remove(sb *sandbox) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sandboxes[sb.spec.ID] == sb {
		delete(f.sandboxes, sb.spec.ID)
		f.notify()
	}
}

// play runs the handler for p in sb under ctx (the call's) and reports
// the result as the contract says.
func (f *Runtime) play(ctx context.Context, sb *sandbox, p *Process) runtime.Result {
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(sb.ctx, cancel) // the process dies with its sandbox
	defer stop()
	res := runtime.Result{Signal: -1, Exact: true, Started: time.Now()}
	x := f.handler(pctx, p)
	res.Duration = time.Since(res.Started)
	switch {
	case pctx.Err() != nil: // killed, whatever the handler said
		res.ExitCode, res.Signal = -1, int(syscall.SIGKILL)
		res.Killed = ctx.Err() != nil
	case x.Signal != 0:
		res.ExitCode, res.Signal = -1, int(x.Signal)
	default:
		res.ExitCode = x.Code
	}
	return res
}

// stdio sets p's stdio from r, w and e as a runtime would: nil is empty
// input or discarded output, and a file is duplicated (a real runtime's
// process gets its own descriptor, so the caller may close its copy once
// the process has started, as the engine does). close releases the
// duplicates, when the process has ended.
func stdio(p *Process, r io.Reader, w, e io.Writer) (close func(), err error) {
	var dups []*os.File
	close = func() {
		for _, f := range dups {
			f.Close()
		}
	}
	dup := func(v any) (*os.File, error) {
		f, ok := v.(*os.File)
		if !ok || f == nil {
			return nil, nil
		}
		fd, err := syscall.Dup(int(f.Fd()))
		if err != nil {
			return nil, fmt.Errorf("fake: duplicate %s: %w", f.Name(), err)
		}
		syscall.CloseOnExec(fd)
		d := os.NewFile(uintptr(fd), f.Name())
		dups = append(dups, d)
		return d, nil
	}
	p.Stdin, p.Stdout, p.Stderr = strings.NewReader(""), io.Discard, io.Discard
	if r != nil {
		p.Stdin = r
	}
	if w != nil {
		p.Stdout = w
	}
	if e != nil {
		p.Stderr = e
	}
	for _, s := range []struct {
		v   any
		set func(*os.File)
	}{
		{r, func(f *os.File) { p.Stdin = f }},
		{w, func(f *os.File) { p.Stdout = f }},
		{e, func(f *os.File) { p.Stderr = f }},
	} {
		f, err := dup(s.v)
		if err != nil {
			close()
			return nil, err
		}
		if f != nil {
			s.set(f)
		}
	}
	return close, nil
}

// Run implements runtime.Runtime.
func (f *Runtime) Run(ctx context.Context, spec runtime.Spec) (runtime.Result, error) {
	sb, err := f.create("Run", spec)
	if err != nil {
		return runtime.Result{Signal: -1}, err
	}
	p := &Process{ID: spec.ID, Args: spec.Args, Env: spec.Env, Cwd: spec.Cwd, UID: spec.UID, GID: spec.GID, Rootfs: spec.Rootfs}
	closeStdio, err := stdio(p, spec.Stdin, spec.Stdout, spec.Stderr)
	if err != nil {
		f.end(sb)
		f.remove(sb)
		return runtime.Result{Signal: -1}, err
	}
	sb.procs.Add(1)
	if spec.OnStart != nil {
		spec.OnStart(0) // no host process to signal
	}
	res := f.play(ctx, sb, p)
	closeStdio()
	sb.procs.Done()
	f.end(sb) // the sandbox ends with its main process
	sb.procs.Wait()
	f.remove(sb)
	if sb.crash.Load() && !res.Killed {
		return res, fmt.Errorf("fake runtime crashed under sandbox %s", spec.ID)
	}
	return res, nil
}

// Crash plays the runtime process of sandbox id dying under it: every
// process of the sandbox is killed and a Run in progress returns an error,
// as the contract says of a crashed runtime.
func (f *Runtime) Crash(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sb := f.sandboxes[id]; sb != nil {
		sb.crash.Store(true)
		sb.kill()
	}
}

// Boot implements runtime.Runtime.
func (f *Runtime) Boot(ctx context.Context, spec runtime.Spec) error {
	if err := ctx.Err(); err != nil {
		f.record(Call{Op: "Boot", ID: spec.ID, Args: spec.Args}, nil)
		return fmt.Errorf("boot sandbox %s: %w", spec.ID, err)
	}
	sb, err := f.create("Boot", spec)
	if err != nil {
		return err
	}
	// As for a real runtime, only files become the main process's stdio.
	p := &Process{ID: spec.ID, Args: spec.Args, Env: spec.Env, Cwd: spec.Cwd, UID: spec.UID, GID: spec.GID, Rootfs: spec.Rootfs}
	var in io.Reader
	var out io.Writer
	if fi, ok := spec.Stdin.(*os.File); ok {
		in = fi
	}
	if fo, ok := spec.Stdout.(*os.File); ok {
		out = fo
	}
	closeStdio, err := stdio(p, in, out, nil)
	if err != nil {
		f.end(sb)
		f.remove(sb)
		return err
	}
	sb.procs.Add(1)
	go func() {
		defer sb.procs.Done()
		f.play(context.Background(), sb, p)
		closeStdio()
		f.end(sb) // exec'd processes die with the main one
	}()
	return nil
}

// WaitRunning implements runtime.Runtime.
func (f *Runtime) WaitRunning(ctx context.Context, id string) error {
	f.record(Call{Op: "WaitRunning", ID: id}, nil)
	for {
		f.mu.Lock()
		sb, changed := f.sandboxes[id], f.changed
		f.mu.Unlock()
		switch {
		case sb != nil && sb.ctx.Err() != nil:
			return fmt.Errorf("sandbox %s has stopped", id)
		case sb != nil:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sandbox %s did not start: %w", id, ctx.Err())
		case <-changed:
		}
	}
}

// Exec implements runtime.Runtime.
func (f *Runtime) Exec(ctx context.Context, id string, spec runtime.ExecSpec) (runtime.Result, error) {
	var sb *sandbox
	err := runtime.ValidateExec(id, spec)
	f.record(Call{Op: "Exec", ID: id, Args: spec.Args}, func() {
		switch sb = f.sandboxes[id]; {
		case err != nil:
		case sb == nil:
			err = errdefs.NotFound("exec: no sandbox %s in fake", id)
		case sb.ctx.Err() != nil:
			err = errdefs.FailedPrecondition("exec: sandbox %s has stopped", id)
		default:
			sb.procs.Add(1) // under the lock, before any end: Destroy waits for it
		}
	})
	if err != nil {
		return runtime.Result{Signal: -1}, err
	}
	defer sb.procs.Done()
	p := &Process{ID: id, Exec: true, Args: spec.Args, Env: spec.Env, Cwd: spec.Cwd, UID: spec.UID, GID: spec.GID, Rootfs: sb.spec.Rootfs}
	closeStdio, err := stdio(p, spec.Stdin, spec.Stdout, spec.Stderr)
	if err != nil {
		return runtime.Result{Signal: -1}, err
	}
	defer closeStdio()
	if spec.OnStart != nil {
		spec.OnStart(0)
	}
	return f.play(ctx, sb, p), nil
}

// Destroy implements runtime.Runtime.
func (f *Runtime) Destroy(ctx context.Context, id string) error {
	var sb *sandbox
	f.record(Call{Op: "Destroy", ID: id}, func() {
		if sb = f.sandboxes[id]; sb != nil {
			sb.kill()
		}
	})
	if sb == nil {
		return nil
	}
	done := make(chan struct{})
	go func() { sb.procs.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("destroy sandbox %s: a handler ignores its ctx: %w", id, ctx.Err())
	}
	f.remove(sb)
	return nil
}

// Cleanup implements runtime.Runtime: it destroys every sandbox.
func (f *Runtime) Cleanup(ctx context.Context) error {
	f.record(Call{Op: "Cleanup"}, nil)
	var errs []error
	for _, id := range f.Sandboxes() {
		errs = append(errs, f.Destroy(ctx, id))
	}
	return errors.Join(errs...)
}

// Close implements runtime.Runtime. The fake has nothing in the
// background.
func (f *Runtime) Close(ctx context.Context) error {
	f.record(Call{Op: "Close"}, nil)
	return nil
}

// Checkpoint implements runtime.Runtime: the fake holds no memory to save.
func (f *Runtime) Checkpoint(ctx context.Context, id string, opt runtime.CheckpointOptions) error {
	f.record(Call{Op: "Checkpoint", ID: id}, nil)
	return runtime.NotCheckpointable(f.Name())
}

// Restore implements runtime.Runtime: see Checkpoint.
func (f *Runtime) Restore(ctx context.Context, spec runtime.Spec, image string) error {
	f.record(Call{Op: "Restore", ID: spec.ID}, nil)
	return runtime.NotCheckpointable(f.Name())
}

// Resume implements runtime.Runtime: see Checkpoint.
func (f *Runtime) Resume(ctx context.Context, id string) error {
	f.record(Call{Op: "Resume", ID: id}, nil)
	return runtime.NotCheckpointable(f.Name())
}
