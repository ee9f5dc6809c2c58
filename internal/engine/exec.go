package engine

import (
	"context"
	"encoding/json"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/runtime"
	"github.com/arborsh/arbor/internal/store"
)

// lateExecGrace bounds the wait, once a run's main process has exited, for
// its exec'd processes to end with it: those the sandbox's end (cold) or
// its init (warm: it kills everything before it reports the exit) killed
// end within moments.
const lateExecGrace = 2 * time.Second

// endLateExecs waits until run p's exec'd processes have ended, its main
// process having exited in sandbox sb. One that goes on past
// lateExecGrace was started after the init killed the sandbox's processes:
// admitted while the main process ran, but a runtime's exec takes tens of
// milliseconds to start a process. Such a process would keep the run from
// ending (a warm sandbox stays up until its teardown) and write into the
// step's image after the exit: the sandbox is killed, as a cold one ends
// with its main process, and does not continue into a next step.
func (e *Engine) endLateExecs(ctx context.Context, p *runPlan, a *activeOp, sb *sandboxRef) {
	if a.nsubs.Load() == 0 {
		// None running (the common case; no more are admitted): at most
		// one is between its release and its end.
		a.subs.Wait()
		return
	}
	done := make(chan struct{})
	go func() {
		a.subs.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(lateExecGrace):
	}
	p.lateExec = true
	if sb != nil {
		e.log.Info("an exec'd process outlived the main one: ending the sandbox", "operation", p.op, "sandbox", sb.cid)
		if err := sb.rt.Destroy(context.WithoutCancel(ctx), sb.cid); err != nil {
			e.log.Warn("end a sandbox with a late exec'd process", "operation", p.op, "err", err)
		}
	}
	<-done
}

func (e *Engine) activeOf(op string) *activeOp {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.active[op]
}

// stdinPipe returns the read end to hand to a process and, unless
// closeAfter, the write end for later writes. The initial bytes are written in the
// background so a process that never reads cannot block the engine.
func stdinPipe(initial []byte, closeAfter bool) (*os.File, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	if closeAfter {
		go func() {
			// A process that exits or closes stdin before reading it all
			// makes the write fail (EPIPE): nothing is left to deliver to.
			_, _ = w.Write(initial)
			w.Close()
		}()
		return r, nil, nil
	}
	if len(initial) > 0 {
		go func() { _, _ = w.Write(initial) }() // fails only once the reader is gone, as above
	}
	return r, w, nil
}

// running returns op's active record once its main process runs. It waits up
// to a few seconds for a PENDING or ASSIGNED run to start.
func (e *Engine) runningOp(ctx context.Context, account, op string) (*activeOp, error) {
	o, err := e.Operation(ctx, account, op)
	if err != nil {
		return nil, err
	}
	a := e.activeOf(o.UUID)
	if a == nil && e.cl != nil && !oplog.IsTerminal(o.Status) {
		a = e.cl.awaitLaunch(ctx, o.UUID) // claimed here, still being prepared
	}
	if a == nil || oplog.IsTerminal(o.Status) {
		return nil, errdefs.Conflict("operation %s is not running (status %s): subprocesses need a running instance", o.UUID, o.Status)
	}
	if o.Kind != oplog.KindInstance {
		return nil, errdefs.Conflict("operation %s is an %s, not an instance", o.UUID, o.Kind)
	}
	select {
	case <-a.running:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		return nil, errdefs.TooEarly("instance %s has not started yet; retry shortly", o.UUID)
	}
	return a, nil
}

// Exec starts a further process in a running instance and returns its spid
// (2, 3, ...). Its spawn, output and exit events go to the parent's log.
func (e *Engine) Exec(ctx context.Context, account, op string, spec ExecRequest) (int, error) {
	if strings.TrimSpace(spec.Command) == "" {
		return 0, errdefs.InvalidArgument("command is required")
	}
	var stdin []byte
	closeStdin := true
	if spec.Stdin != nil {
		b, err := spec.Stdin.Bytes()
		if err != nil {
			return 0, errdefs.InvalidArgument("stdin: %v", err)
		}
		stdin = b
		closeStdin = spec.Stdin.Close == nil || *spec.Stdin.Close
	}
	a, err := e.runningOp(ctx, account, op)
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	sb := a.sandbox
	a.mu.Unlock()
	if sb == nil {
		return 0, errdefs.Conflict("operation %s: the instance's main process has exited", op)
	}
	if err := sb.rt.WaitRunning(ctx, sb.cid); err != nil {
		return 0, errdefs.Conflict("operation %s: %v", op, err)
	}
	p := sb.p
	shell := spec.Shell != nil && *spec.Shell
	args := append([]string{spec.Command}, spec.Args...)
	if shell {
		args = []string{"/bin/sh", "-c", shellLine(spec.Command, spec.Args)} // as for the main process
	}
	env := map[string]string{}
	for k, v := range p.env {
		env[k] = v
	}
	for k, v := range spec.Env {
		env[k] = v
	}
	cwd := p.meta.Cwd
	if spec.Cwd != nil && *spec.Cwd != "" {
		if !path.IsAbs(*spec.Cwd) {
			return 0, errdefs.InvalidArgument("cwd %q must be an absolute path", *spec.Cwd)
		}
		cwd = *spec.Cwd
	}
	uid, gid := p.meta.UID, p.meta.GID
	if spec.UID != nil {
		uid = *spec.UID
	}
	if spec.GID != nil {
		gid = *spec.GID
	}
	limit := p.truncate
	if spec.TruncateOutputAt != nil && *spec.TruncateOutputAt >= 0 {
		limit = *spec.TruncateOutputAt
	}
	stdinR, stdinW, err := stdinPipe(stdin, closeStdin)
	if err != nil {
		return 0, err
	}
	pr := &proc{stdin: stdinW}
	if err := e.reserveSub(a, p); err != nil {
		stdinR.Close()
		if stdinW != nil {
			stdinW.Close()
		}
		return 0, err
	}
	a.mu.Lock()
	if a.exited {
		a.mu.Unlock()
		e.releaseSub(a)
		stdinR.Close()
		return 0, errdefs.Conflict("operation %s: the instance's main process has exited", op)
	}
	spid := a.nextSpid
	a.nextSpid++
	a.procs[spid] = pr
	a.subs.Add(1)
	a.mu.Unlock()
	stdout := &capture{e: e, op: op, spid: spid, stream: oplog.EventStdout, limit: limit}
	stderr := &capture{e: e, op: op, spid: spid, stream: oplog.EventStderr, limit: limit}
	ev := oplog.EventDataSpawn{Command: args[0], Args: args[1:], Shell: shell, Cwd: cwd, UID: uid, GID: gid,
		Timeout: p.meta.Timeout, TruncateAt: limit, Env: redactEnv(env)}
	started := make(chan struct{})
	go func() {
		defer a.subs.Done()
		if e.beforeExec != nil {
			e.beforeExec(op)
		}
		res, err := sb.rt.Exec(e.ctx, sb.cid, runtime.ExecSpec{
			Args: args, Env: envList(env), Cwd: cwd, UID: uint32(uid), GID: uint32(gid), FileSizeLimit: p.fileSize(), InitBinary: e.initBin,
			Stdin: stdinR, Stdout: stdout, Stderr: stderr,
			OnSignal: func(signal func(syscall.Signal) error) {
				a.mu.Lock()
				pr.signal = signal
				a.mu.Unlock()
			},
			OnStart: func(pid int) {
				stdinR.Close()
				a.mu.Lock()
				pr.pid = pid
				a.mu.Unlock()
				ev.Pid = pid
				e.events.emit(context.Background(), op, spid, oplog.EventSpawn, ev)
				close(started)
			},
		})
		if err != nil {
			stdinR.Close()
			select {
			case <-started:
			default:
				close(started)
			}
			res.ExitCode = 127
			_, _ = stderr.Write([]byte("arbor: exec failed: " + err.Error() + "\n")) // a capture never fails
		}
		stdout.finish()
		stderr.finish()
		a.mu.Lock()
		if pr.stdin != nil {
			pr.stdin.Close()
			pr.stdin = nil
		}
		a.mu.Unlock()
		code, sig := res.ExitCode, res.Signal
		if !res.Exact {
			sig = -1
			if code > 128 && code <= 128+64 {
				// Only the runtime's word (no static init, or the wrapper
				// was killed with the sandbox): it reports a signal death
				// as 128+n.
				code, sig = -1, code-128
			}
		}
		e.releaseSub(a) // before the exit event: a client that saw it may start another
		e.events.emit(context.Background(), op, spid, oplog.EventExit, oplog.EventDataExit{
			Pid: ev.Pid, Code: code, Signal: sig, DurationMs: res.Duration.Milliseconds(), Resources: resources(res.Rusage)})
	}()
	<-started
	return spid, nil
}

// WriteStdin writes in's bytes to process spid's stdin and closes it when
// in.Close is true.
func (e *Engine) WriteStdin(ctx context.Context, account, op string, spid int, in Stdin) error {
	data, err := in.Bytes()
	if err != nil {
		return errdefs.InvalidArgument("stdin: %v", err)
	}
	return e.writeStdin(ctx, account, op, spid, data, in.Close != nil && *in.Close)
}

func (e *Engine) writeStdin(ctx context.Context, account, op string, spid int, data []byte, closeAfter bool) error {
	a, err := e.runningOp(ctx, account, op)
	if err != nil {
		return err
	}
	a.mu.Lock()
	pr := a.procs[spid]
	var w *os.File
	if pr != nil {
		w = pr.stdin
		if closeAfter {
			pr.stdin = nil
		}
	}
	a.mu.Unlock()
	if pr == nil {
		return errdefs.NotFound("operation %s has no process %d", op, spid)
	}
	if w == nil {
		return errdefs.Conflict("stdin of process %d is closed (spawn it with stdin.close=false to keep it open)", spid)
	}
	if len(data) > 0 {
		eventChunks(data, func(b []byte) { // cut as output is
			e.events.emit(ctx, op, spid, oplog.EventStdin, oplog.NewStreamRepr(b, false))
		})
		if _, err := w.Write(data); err != nil {
			return errdefs.Conflict("process %d no longer reads stdin: %v", spid, err)
		}
	}
	if closeAfter {
		return w.Close()
	}
	return nil
}

// signals maps the names clients send to numbers.
var signals = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "KILL": syscall.SIGKILL,
	"TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "STOP": syscall.SIGSTOP, "CONT": syscall.SIGCONT,
}

// ParseSignal accepts "TERM", "SIGTERM" or a number; "" means TERM.
func ParseSignal(s string) (syscall.Signal, error) {
	s = strings.ToUpper(strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "SIG"))
	if s == "" {
		return syscall.SIGTERM, nil
	}
	if sig, ok := signals[s]; ok {
		return sig, nil
	}
	var n int
	if err := json.Unmarshal([]byte(s), &n); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	return 0, errdefs.InvalidArgument("unknown signal %q: use a name like TERM, KILL, INT or a number", s)
}

// Signal sends sig to a process of a running instance. Killing spid 1 ends
// the run; other spids leave the parent running.
func (e *Engine) Signal(ctx context.Context, account, op string, spid int, sig syscall.Signal) error {
	a, err := e.runningOp(ctx, account, op)
	if err != nil {
		return err
	}
	if spid == 1 && sig == syscall.SIGCONT {
		if paused, err := resumeParent(ctx, a.id); paused { // see Fork
			return err
		}
	}
	a.mu.Lock()
	var pid int
	var signal func(syscall.Signal) error
	if pr := a.procs[spid]; pr != nil {
		pid, signal = pr.pid, pr.signal
	}
	a.mu.Unlock()
	if pid == 0 {
		return errdefs.NotFound("operation %s has no process %d", op, spid)
	}
	if signal != nil {
		if err := signal(sig); err != nil {
			return errdefs.Conflict("process %d has exited", spid)
		}
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return errdefs.Conflict("process %d has exited", spid)
	}
	return nil
}

// KillSubprocess sends the named signal ("TERM", "SIGKILL", "9"; "" = TERM)
// to process spid.
func (e *Engine) KillSubprocess(ctx context.Context, account, op string, spid int, signal string) error {
	sig, err := ParseSignal(signal)
	if err != nil {
		return err
	}
	return e.Signal(ctx, account, op, spid, sig)
}

// SubprocessResult folds the events of one process into an InstanceResult.
// While it runs, exit_code and signal are -1.
func (e *Engine) SubprocessResult(ctx context.Context, account, op string, spid int) (oplog.InstanceResult, error) {
	o, err := e.Operation(ctx, account, op)
	if err != nil {
		return oplog.InstanceResult{}, err
	}
	evs, err := e.st.Events(ctx, o.UUID, -1, 0)
	if err != nil {
		return oplog.InstanceResult{}, err
	}
	var r oplog.InstanceResult
	r.State.ExitCode, r.State.Signal = -1, -1
	var out, errb []byte
	var outTrunc, errTrunc, spawned bool
	// The engine wrote these events; one that does not decode (a damaged
	// store) is logged and folds as empty rather than hiding the others.
	bad := func(ev store.Event, err error) {
		e.log.Warn("decode event", "operation", o.UUID, "event", ev.ID, "type", ev.Type, "err", err)
	}
	decode := func(ev store.Event, v any) {
		if err := json.Unmarshal([]byte(ev.Data), v); err != nil {
			bad(ev, err)
		}
	}
	for _, ev := range evs {
		if ev.Spid != spid {
			continue
		}
		switch ev.Type {
		case oplog.EventSpawn:
			var d oplog.EventDataSpawn
			decode(ev, &d)
			r.State.Pid = d.Pid
			spawned = true
		case oplog.EventStdout, oplog.EventStderr:
			var d oplog.EventDataStream
			decode(ev, &d)
			b, err := oplog.StreamRepr{Value: d.Value, Encoding: d.Encoding}.Bytes()
			if err != nil {
				bad(ev, err)
			}
			if ev.Type == oplog.EventStdout {
				out = append(out, b...)
			} else {
				errb = append(errb, b...)
			}
		case oplog.EventTruncated:
			var d oplog.EventDataTruncated
			decode(ev, &d)
			if d.Stream == oplog.EventStdout {
				outTrunc = true
			} else {
				errTrunc = true
			}
		case oplog.EventExit:
			var d oplog.EventDataExit
			decode(ev, &d)
			r.State.ExitCode, r.State.Signal, r.State.TimedOut = d.Code, d.Signal, d.TimedOut
			res := d.Resources
			r.Resources = oplog.InstanceResultResources{
				BlockInput: res.BlockInputOps, BlockOutput: res.BlockOutputOps, ElapsedTime: float64(d.DurationMs) / 1000,
				InvoluntarySwitches: res.InvoluntaryCtxSwitches, MaxRSS: res.MaxRSSKB, MonotonicTime: float64(d.DurationMs) / 1000,
				PageFaults: res.MinorFaults, PageFaultsIO: res.MajorFaults, SharedMemory: res.SharedMemory, Signals: res.SignalsReceived,
				Swaps: res.Swaps, SystemCPUTime: float64(res.SysTimeUs) / 1e6, UnsharedMemory: res.UnsharedMemory,
				UserCPUTime: float64(res.UserTimeUs) / 1e6, VoluntarySwitches: res.VoluntaryCtxSwitches,
			}
		}
	}
	if !spawned {
		if oplog.IsTerminal(o.Status) || o.Kind != oplog.KindInstance || !e.spidAllocated(o.UUID, spid) {
			return r, errdefs.NotFound("operation %s has no process %d", o.UUID, spid)
		}
		return r, errdefs.TooEarly("process %d of operation %s has not started yet", spid, o.UUID)
	}
	r.Stdout = oplog.NewStreamRepr(out, outTrunc)
	r.Stderr = oplog.NewStreamRepr(errb, errTrunc)
	return r, nil
}

// spidAllocated reports whether spid names a process of active operation op
// that exists or is about to start: the main process (1) of a run that has
// not finished, or a subprocess Exec has numbered. A spid never handed out
// is not worth a client's retries.
func (e *Engine) spidAllocated(op string, spid int) bool {
	if spid == 1 {
		return true
	}
	a := e.activeOf(op)
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return spid < a.nextSpid
}

// resources converts rusage to the exit event's resource block.
func resources(ru syscall.Rusage) oplog.EventResources {
	return oplog.EventResources{
		UserTimeUs: ru.Utime.Usec + ru.Utime.Sec*1e6, SysTimeUs: ru.Stime.Usec + ru.Stime.Sec*1e6, MaxRSSKB: ru.Maxrss,
		SharedMemory: ru.Ixrss, UnsharedMemory: ru.Idrss, Swaps: ru.Nswap, MinorFaults: ru.Minflt, MajorFaults: ru.Majflt,
		VoluntaryCtxSwitches: ru.Nvcsw, InvoluntaryCtxSwitches: ru.Nivcsw, BlockInputOps: ru.Inblock, BlockOutputOps: ru.Oublock,
		IPCMsgsSent: ru.Msgsnd, IPCMsgsReceived: ru.Msgrcv, SignalsReceived: ru.Nsignals,
	}
}

// reserveSub counts a new subprocess of run a against the limits on
// subprocesses running at once: per run (MaxSubprocesses, and never more
// than the run's pids limit) and per account (MaxAccountSubprocesses).
// Each costs a host process while it runs.
func (e *Engine) reserveSub(a *activeOp, p *runPlan) error {
	perRun := int64(e.cfg.MaxSubprocesses)
	if p.pids > 0 && p.pids < perRun {
		perRun = p.pids
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if n := a.nsubs.Load(); n >= perRun {
		return errdefs.ResourceExhausted("operation %s already runs %d subprocesses (limit %d per run, limits.max_subprocesses): wait for one to exit or kill it", a.id, n, perRun)
	}
	var n int64
	for _, o := range e.active {
		if o.account == a.account {
			n += o.nsubs.Load()
		}
	}
	if n >= int64(e.cfg.MaxAccountSubprocesses) {
		return errdefs.ResourceExhausted("the account already runs %d subprocesses (limit %d per account, limits.max_account_subprocesses): wait for some to exit or kill them", n, e.cfg.MaxAccountSubprocesses)
	}
	a.nsubs.Add(1)
	return nil
}

func (e *Engine) releaseSub(a *activeOp) {
	e.mu.Lock()
	a.nsubs.Add(-1)
	e.mu.Unlock()
}
