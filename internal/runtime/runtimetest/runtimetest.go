// Package runtimetest is the conformance suite of the [runtime.Runtime]
// contract: every implementation, fakes included, runs [Run] and so keeps
// the promises the interface's doc comment makes.
//
// The suite runs its processes as busybox shell lines (/bin/sh -c Script),
// given by the constants below. A real runtime runs them in a root
// filesystem with busybox at /bin (see [Options.NewRoot]); a fake plays the
// same behaviour for each line in Go (see fakeruntime's test). What a
// runtime cannot honestly do is a capability in [Options], never a
// pretence.
package runtimetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/runtime"
)

// The shell lines the suite runs, and what each must do.
const (
	// ScriptExit exits with code 3.
	ScriptExit = "exit 3"
	// ScriptExit0 exits with code 0.
	ScriptExit0 = "exit 0"
	// ScriptStdio copies stdin to stdout, then writes "oops\n" to stderr.
	ScriptStdio = "cat; echo oops >&2"
	// ScriptIdentity prints $FOO, the working directory, the uid and the gid, a line each.
	ScriptIdentity = `echo "$FOO"; pwd; id -u; id -g`
	// ScriptWrite writes "data\n" to /written in the root filesystem.
	ScriptWrite = "echo data > /written"
	// ScriptSleep blocks until killed.
	ScriptSleep = "sleep 1000"
	// ScriptUpSleep prints "up\n", then blocks until killed.
	ScriptUpSleep = "echo up; exec sleep 1000"
	// ScriptEcho prints "hi\n".
	ScriptEcho = "echo hi"
	// ScriptSelfSignal dies of SIGTERM it sends itself (exec'd only: a
	// sandbox's pid 1 ignores it).
	ScriptSelfSignal = "kill -TERM $$"
)

// Options says what the runtime under test can do, and how to give it a
// root filesystem.
type Options struct {
	// NewRoot returns a fresh root filesystem directory with busybox at
	// /bin/sh (and its applets) and a /tmp. Nil gives an empty directory
	// with a /tmp (enough for a fake).
	NewRoot func(t *testing.T) string
	// ExecInit, if set, is a static arbor init given as
	// ExecSpec.InitBinary: exec'd processes must then report Exact results.
	ExecInit string
	// HostPids: OnStart gets the pid of a host process (real runtimes).
	// Without it OnStart must get 0.
	HostPids bool
	// ExecSignals: a signal sent to the pid an Exec's OnStart got reaches
	// the exec'd process.
	ExecSignals bool
	// Crash, if set, makes the runtime die under sandbox id, whose Run got
	// pid in OnStart (a real runtime's process is killed with SIGKILL).
	Crash func(id string, pid int)
	// EnforcesIDs: the process really runs as Spec.UID and GID, so files it
	// writes are owned by them. A fake only reports ids to its handler.
	EnforcesIDs bool
	// Checkpoints: Checkpoint and Restore work (runsc). Without it both
	// must fail with errdefs.ErrFailedPrecondition.
	Checkpoints bool
}

// timeout bounds each call of the suite: a hang is a failure, not a stall.
const timeout = 2 * time.Minute

// Run runs the conformance suite against runtimes made by newRuntime,
// one per subtest; the suite closes each.
func Run(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime, opts Options) {
	s := &suite{newRuntime: newRuntime, opts: opts}
	for _, c := range []struct {
		name string
		fn   func(t *testing.T, rt runtime.Runtime)
	}{
		{"ExitCode", s.exitCode},
		{"Stdio", s.stdio},
		{"Identity", s.identity},
		{"WritesRoot", s.writesRoot},
		{"CancelKills", s.cancelKills},
		{"RuntimeCrash", s.runtimeCrash},
		{"BadSpecs", s.badSpecs},
		{"BootExecDestroy", s.bootExecDestroy},
		{"ExecSignal", s.execSignal},
		{"ExecCancel", s.execCancel},
		{"ExecDiesWithSandbox", s.execDiesWithSandbox},
		{"WaitRunningTimesOut", s.waitRunningTimesOut},
		{"CheckpointRestore", s.checkpointRestore},
	} {
		t.Run(c.name, func(t *testing.T) {
			rt := newRuntime(t)
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				if err := rt.Close(ctx); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			c.fn(t, rt)
		})
	}
}

type suite struct {
	newRuntime func(t *testing.T) runtime.Runtime
	opts       Options
	n          atomic.Int64
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// spec returns a Spec for script in a fresh root and bundle, with a unique id.
func (s *suite) spec(t *testing.T, script string) runtime.Spec {
	t.Helper()
	root := s.root(t)
	bundle := t.TempDir()
	id := fmt.Sprintf("rtt-%d-%d", os.Getpid(), s.n.Add(1))
	return runtime.Spec{ID: id, Bundle: bundle, Rootfs: root, Args: sh(script), Env: []string{"PATH=/bin"}, Cwd: "/", Hostname: "rtt"}
}

func (s *suite) root(t *testing.T) string {
	t.Helper()
	if s.opts.NewRoot != nil {
		return s.opts.NewRoot(t)
	}
	d := t.TempDir()
	if err := os.Mkdir(filepath.Join(d, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	return d
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

// buffer is a bytes.Buffer safe for the runtime's copying goroutines.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// checkExited fails unless res is a plain exit with code.
func checkExited(t *testing.T, what string, res runtime.Result, code int) {
	t.Helper()
	if res.ExitCode != code || res.Signal != -1 || res.Killed {
		t.Errorf("%s = exit %d signal %d killed %v, want exit %d signal -1 killed false", what, res.ExitCode, res.Signal, res.Killed, code)
	}
}

// checkSignaled fails unless res reports a death by sig as the contract
// says: exactly, or as the runtime's 128+n.
func checkSignaled(t *testing.T, what string, res runtime.Result, sig syscall.Signal, wantExact bool) {
	t.Helper()
	switch {
	case res.Exact && (res.Signal != int(sig) || res.ExitCode != -1):
		t.Errorf("%s = exact exit %d signal %d, want exit -1 signal %d", what, res.ExitCode, res.Signal, sig)
	case !res.Exact && wantExact:
		t.Errorf("%s = inexact exit %d, want an exact result (signal %d)", what, res.ExitCode, sig)
	case !res.Exact && (res.ExitCode != 128+int(sig) || res.Signal != -1):
		t.Errorf("%s = inexact exit %d signal %d, want exit %d signal -1", what, res.ExitCode, res.Signal, 128+int(sig))
	}
}

func (s *suite) exitCode(t *testing.T, rt runtime.Runtime) {
	ctx := ctxFor(t)
	starts := 0
	sp := s.spec(t, ScriptExit)
	sp.OnStart = func(pid int) {
		starts++
		if s.opts.HostPids != (pid > 0) || pid < 0 {
			t.Errorf("OnStart(%d), want a host pid: %v", pid, s.opts.HostPids)
		}
	}
	res, err := rt.Run(ctx, sp)
	if err != nil {
		t.Fatalf("Run(%q): %v", ScriptExit, err)
	}
	checkExited(t, "Run(exit 3)", res, 3)
	if starts != 1 {
		t.Errorf("OnStart called %d times, want once before Run returns", starts)
	}
	// The sandbox is gone once Run has returned: its id is free again.
	sp2 := s.spec(t, ScriptExit0)
	sp2.ID = sp.ID
	res, err = rt.Run(ctx, sp2)
	if err != nil {
		t.Fatalf("Run again with the id of a finished run: %v", err)
	}
	checkExited(t, "Run(exit 0)", res, 0)
}

func (s *suite) stdio(t *testing.T, rt runtime.Runtime) {
	ctx := ctxFor(t)
	var out, errOut buffer
	sp := s.spec(t, ScriptStdio)
	sp.Stdin, sp.Stdout, sp.Stderr = strings.NewReader("hello\nworld\n"), &out, &errOut
	res, err := rt.Run(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	checkExited(t, "Run(cat)", res, 0)
	if out.String() != "hello\nworld\n" || errOut.String() != "oops\n" {
		t.Errorf("stdout %q stderr %q, want %q and %q", out.String(), errOut.String(), "hello\nworld\n", "oops\n")
	}
	// No stdin reads as empty; no stdout or stderr discards.
	out = buffer{}
	sp = s.spec(t, ScriptStdio)
	sp.Stdout = &out
	if res, err = rt.Run(ctx, sp); err != nil {
		t.Fatal(err)
	}
	checkExited(t, "Run(cat) without stdin", res, 0)
	if out.String() != "" {
		t.Errorf("stdout without stdin = %q, want empty", out.String())
	}
}

func (s *suite) identity(t *testing.T, rt runtime.Runtime) {
	ctx := ctxFor(t)
	var out buffer
	sp := s.spec(t, ScriptIdentity)
	sp.Env = append(sp.Env, "FOO=bar baz")
	sp.Cwd, sp.UID, sp.GID, sp.Stdout = "/tmp", 1000, 1001, &out
	res, err := rt.Run(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	checkExited(t, "Run(identity)", res, 0)
	if want := "bar baz\n/tmp\n1000\n1001\n"; out.String() != want {
		t.Errorf("stdout = %q, want %q", out.String(), want)
	}
	// The same for an exec'd process.
	sp = s.spec(t, ScriptSleep)
	if err := rt.Boot(ctx, sp); err != nil {
		t.Fatal(err)
	}
	defer destroy(t, rt, sp.ID)
	out = buffer{}
	res, err = rt.Exec(ctx, sp.ID, runtime.ExecSpec{Args: sh(ScriptIdentity), InitBinary: s.opts.ExecInit,
		Env: []string{"PATH=/bin", "FOO=qux"}, Cwd: "/bin", UID: 1002, GID: 1003, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	checkExited(t, "Exec(identity)", res, 0)
	if want := "qux\n/bin\n1002\n1003\n"; out.String() != want {
		t.Errorf("exec stdout = %q, want %q", out.String(), want)
	}
}

func (s *suite) writesRoot(t *testing.T, rt runtime.Runtime) {
	ctx := ctxFor(t)
	sp := s.spec(t, ScriptWrite)
	res, err := rt.Run(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	checkExited(t, "Run(write)", res, 0)
	p := filepath.Join(sp.Rootfs, "written")
	if b, err := os.ReadFile(p); err != nil || string(b) != "data\n" {
		t.Errorf("%s = %q, %v, want %q", p, b, err, "data\n")
	}
	if !s.opts.EnforcesIDs {
		return
	}
	sp = s.spec(t, "echo x > /tmp/owned")
	sp.UID, sp.GID = 1000, 1001
	if res, err = rt.Run(ctx, sp); err != nil {
		t.Fatal(err)
	}
	checkExited(t, "Run(write as 1000)", res, 0)
	fi, err := os.Stat(filepath.Join(sp.Rootfs, "tmp", "owned"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000 || st.Gid != 1001 {
		t.Errorf("file written as 1000:1001 is owned by %d:%d", st.Uid, st.Gid)
	}
}

func (s *suite) cancelKills(t *testing.T, rt runtime.Runtime) {
	ctx := ctxFor(t)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	sp := s.spec(t, ScriptSleep)
	go func() {
		if err := rt.WaitRunning(ctx, sp.ID); err != nil {
			t.Errorf("WaitRunning: %v", err)
		}
		cancel()
	}()
	res, err := rt.Run(runCtx, sp)
	if err != nil {
		t.Fatalf("Run cancelled: %v, want a result", err)
	}
	if !res.Killed {
		t.Errorf("Run(sleep) cancelled: Killed = false (exit %d signal %d)", res.ExitCode, res.Signal)
	}
	if ctx.Err() != nil {
		t.Fatal("Run returned only at the suite's timeout")
	}
	// Run deleted the sandbox before it returned.
	if _, err := rt.Exec(ctx, sp.ID, runtime.ExecSpec{Args: sh(ScriptEcho), InitBinary: s.opts.ExecInit}); !errdefs.IsNotFound(err) {
		t.Errorf("Exec after a cancelled Run = %v, want a not-found error", err)
	}
	// A ctx that ended before Run is a kill too, never a hang.
	sp = s.spec(t, ScriptSleep)
	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	if res, err = rt.Run(done, sp); err != nil || !res.Killed {
		t.Errorf("Run with an ended ctx = Killed %v, %v, want Killed and no error", res.Killed, err)
	}
}

func (s *suite) runtimeCrash(t *testing.T, rt runtime.Runtime) {
	if s.opts.Crash == nil {
		t.Skip("no way to crash this runtime (Options.Crash)")
	}
	ctx := ctxFor(t)
	sp := s.spec(t, ScriptSleep)
	var pid atomic.Int64
	pid.Store(-1) // OnStart not called yet
	sp.OnStart = func(p int) { pid.Store(int64(p)) }
	go func() {
		if err := rt.WaitRunning(ctx, sp.ID); err != nil {
			t.Errorf("WaitRunning: %v", err)
			return
		}
		// OnStart runs on Run's goroutine. A real runtime's pid is a host
		// process: never crash with 0 or below, as kill(0) or kill(-1)
		// would reach the test's own process group or every process of
		// the host. A fake's is 0, and its Crash takes no pid.
		ready := func(p int64) bool { return p > 1 || (!s.opts.HostPids && p == 0) }
		for !ready(pid.Load()) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		if p := pid.Load(); ready(p) {
			s.opts.Crash(sp.ID, int(p))
		}
	}()
	if res, err := rt.Run(ctx, sp); err == nil {
		t.Errorf("Run under a crashed runtime = exit %d signal %d, want an error", res.ExitCode, res.Signal)
	}
	if ctx.Err() != nil {
		t.Fatal("Run returned only at the suite's timeout")
	}
	// Nothing of the sandbox is left.
	if _, err := rt.Exec(ctx, sp.ID, runtime.ExecSpec{Args: sh(ScriptEcho), InitBinary: s.opts.ExecInit}); !errdefs.IsNotFound(err) {
		t.Errorf("Exec in the crashed sandbox = %v, want a not-found error", err)
	}
	if err := rt.Destroy(ctx, sp.ID); err != nil {
		t.Errorf("Destroy after the crash: %v", err)
	}
}

func (s *suite) badSpecs(t *testing.T, rt runtime.Runtime) {
	ctx := ctxFor(t)
	for _, c := range []struct {
		name string
		mod  func(*runtime.Spec)
	}{
		{"no id", func(sp *runtime.Spec) { sp.ID = "" }},
		{"id with a slash", func(sp *runtime.Spec) { sp.ID = "a/../b" }},
		{"no args", func(sp *runtime.Spec) { sp.Args = nil }},
		{"no rootfs", func(sp *runtime.Spec) { sp.Rootfs = filepath.Join(sp.Bundle, "missing") }},
		{"no bundle", func(sp *runtime.Spec) { sp.Bundle = "" }},
	} {
		sp := s.spec(t, ScriptEcho)
		c.mod(&sp)
		if _, err := rt.Run(ctx, sp); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Run with %s = %v, want an invalid-argument error", c.name, err)
		}
		if err := rt.Boot(ctx, sp); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Boot with %s = %v, want an invalid-argument error", c.name, err)
		}
	}
	sp := s.spec(t, ScriptSleep)
	if err := rt.Boot(ctx, sp); err != nil {
		t.Fatal(err)
	}
	defer destroy(t, rt, sp.ID)
	again := s.spec(t, ScriptEcho)
	again.ID = sp.ID
	if _, err := rt.Run(ctx, again); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Run with the id of a booted sandbox = %v, want a conflict error", err)
	}
	if err := rt.Boot(ctx, again); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Boot with the id of a booted sandbox = %v, want a conflict error", err)
	}
	if _, err := rt.Exec(ctx, sp.ID, runtime.ExecSpec{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Exec without args = %v, want an invalid-argument error", err)
	}
	// The conflicting calls left the booted sandbox alone.
	var out buffer
	res, err := rt.Exec(ctx, sp.ID, runtime.ExecSpec{Args: sh(ScriptEcho), Env: []string{"PATH=/bin"}, InitBinary: s.opts.ExecInit, Stdout: &out})
	if err != nil || out.String() != "hi\n" {
		t.Errorf("Exec after refused calls = %q, %v, want \"hi\\n\"", out.String(), err)
	}
	checkExited(t, "Exec(echo)", res, 0)
}

func destroy(t *testing.T, rt runtime.Runtime, id string) {
	t.Helper()
	if err := rt.Destroy(ctxFor(t), id); err != nil {
		t.Errorf("Destroy(%s): %v", id, err)
	}
}

func (s *suite) bootExecDestroy(t *testing.T, rt runtime.Runtime) {
	ctx := ctxFor(t)
	sp := s.spec(t, ScriptSleep)
	if err := rt.Boot(ctx, sp); err != nil {
		t.Fatal(err)
	}
	if err := rt.WaitRunning(ctx, sp.ID); err != nil {
		t.Fatalf("WaitRunning on a booted sandbox: %v", err)
	}
	for i := range 2 { // a booted sandbox serves more than one exec
		var out buffer
		res, err := rt.Exec(ctx, sp.ID, runtime.ExecSpec{Args: sh(ScriptEcho), Env: []string{"PATH=/bin"}, InitBinary: s.opts.ExecInit, Stdout: &out})
		if err != nil {
			t.Fatalf("Exec %d: %v", i, err)
		}
		checkExited(t, "Exec(echo)", res, 0)
		if out.String() != "hi\n" {
			t.Errorf("Exec %d stdout = %q, want %q", i, out.String(), "hi\n")
		}
		if s.opts.ExecInit != "" && !res.Exact {
			t.Errorf("Exec with an init binary: Exact = false")
		}
	}
	res, err := rt.Exec(ctx, sp.ID, runtime.ExecSpec{Args: sh(ScriptExit), InitBinary: s.opts.ExecInit})
	if err != nil {
		t.Fatal(err)
	}
	checkExited(t, "Exec(exit 3)", res, 3)
	if err := rt.Destroy(ctx, sp.ID); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := rt.Destroy(ctx, sp.ID); err != nil {
		t.Errorf("second Destroy: %v, want nil (idempotent)", err)
	}
	if err := rt.Destroy(ctx, "rtt-never-created"); err != nil {
		t.Errorf("Destroy of an id never created: %v, want nil", err)
	}
	if _, err := rt.Exec(ctx, sp.ID, runtime.ExecSpec{Args: sh(ScriptEcho), InitBinary: s.opts.ExecInit}); !errdefs.IsNotFound(err) {
		t.Errorf("Exec after Destroy = %v, want a not-found error", err)
	}
	// The id is free again.
	if err := rt.Boot(ctx, sp); err != nil {
		t.Fatalf("Boot again after Destroy: %v", err)
	}
	destroy(t, rt, sp.ID)
}

func (s *suite) execSignal(t *testing.T, rt runtime.Runtime) {
	ctx := ctxFor(t)
	sp := s.spec(t, ScriptSleep)
	if err := rt.Boot(ctx, sp); err != nil {
		t.Fatal(err)
	}
	defer destroy(t, rt, sp.ID)
	res, err := rt.Exec(ctx, sp.ID, runtime.ExecSpec{Args: sh(ScriptSelfSignal), InitBinary: s.opts.ExecInit})
	if err != nil {
		t.Fatal(err)
	}
	checkSignaled(t, "Exec(kill -TERM $$)", res, syscall.SIGTERM, s.opts.ExecInit != "")
	if res.Killed {
		t.Error("Killed set for a process that killed itself")
	}
	if !s.opts.ExecSignals {
		return
	}
	// A signal to OnStart's pid reaches the process: sent once the shell
	// has printed, so the process runs (and not only the runtime's exec).
	var pid atomic.Int64
	var once sync.Once
	res, err = rt.Exec(ctx, sp.ID, runtime.ExecSpec{Args: sh(ScriptUpSleep), Env: []string{"PATH=/bin"}, InitBinary: s.opts.ExecInit,
		OnStart: func(p int) { pid.Store(int64(p)) },
		Stdout: writerFunc(func(p []byte) (int, error) {
			once.Do(func() {
				go func() {
					// OnStart may come after the first output (it waits for
					// the runtime's pid file). Never a pid of 0 or below:
					// kill(0) would end the test's own process group.
					for pid.Load() <= 1 && ctx.Err() == nil {
						time.Sleep(5 * time.Millisecond)
					}
					if p := int(pid.Load()); p > 1 {
						if err := syscall.Kill(p, syscall.SIGTERM); err != nil {
							t.Errorf("kill OnStart's pid %d: %v", p, err)
						}
					}
				}()
			})
			return len(p), nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	checkSignaled(t, "Exec(sleep) sent SIGTERM through OnStart's pid", res, syscall.SIGTERM, s.opts.ExecInit != "")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (s *suite) execCancel(t *testing.T, rt runtime.Runtime) {
	ctx := ctxFor(t)
	sp := s.spec(t, ScriptSleep)
	if err := rt.Boot(ctx, sp); err != nil {
		t.Fatal(err)
	}
	defer destroy(t, rt, sp.ID)
	execCtx, cancel := context.WithCancel(ctx)
	res, err := rt.Exec(execCtx, sp.ID, runtime.ExecSpec{Args: sh(ScriptUpSleep), Env: []string{"PATH=/bin"}, InitBinary: s.opts.ExecInit,
		Stdout: writerFunc(func(p []byte) (int, error) { cancel(); return len(p), nil })})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if !res.Killed {
		t.Errorf("Exec(sleep) cancelled: Killed = false (exit %d signal %d)", res.ExitCode, res.Signal)
	}
	// Only the exec'd process died.
	res, err = rt.Exec(ctx, sp.ID, runtime.ExecSpec{Args: sh(ScriptExit), InitBinary: s.opts.ExecInit})
	if err != nil {
		t.Fatalf("Exec after a cancelled exec: %v", err)
	}
	checkExited(t, "Exec(exit 3)", res, 3)
}

func (s *suite) execDiesWithSandbox(t *testing.T, rt runtime.Runtime) {
	ctx := ctxFor(t)
	sp := s.spec(t, ScriptSleep)
	if err := rt.Boot(ctx, sp); err != nil {
		t.Fatal(err)
	}
	up := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		res, err := rt.Exec(ctx, sp.ID, runtime.ExecSpec{Args: sh(ScriptUpSleep), Env: []string{"PATH=/bin"}, InitBinary: s.opts.ExecInit,
			Stdout: writerFunc(func(p []byte) (int, error) { once.Do(func() { close(up) }); return len(p), nil })})
		if err == nil && res.ExitCode == 0 && res.Signal == -1 {
			err = fmt.Errorf("exec'd sleep reported a clean exit after its sandbox was destroyed")
		} else {
			err = nil
		}
		done <- err
	}()
	select {
	case <-up:
	case err := <-done:
		t.Fatalf("Exec(sleep) ended before its sandbox was destroyed: %v", err)
	}
	if err := rt.Destroy(ctx, sp.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-ctx.Done():
		t.Fatal("Exec still running after its sandbox was destroyed")
	}
}

func (s *suite) waitRunningTimesOut(t *testing.T, rt runtime.Runtime) {
	ctx, cancel := context.WithTimeout(ctxFor(t), 200*time.Millisecond)
	defer cancel()
	if err := rt.WaitRunning(ctx, "rtt-never-created"); err == nil {
		t.Error("WaitRunning on an id never created returned nil")
	}
}
