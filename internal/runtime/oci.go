package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/initproc"
	"github.com/arborsh/arbor/internal/overlay"
	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// OCI drives an OCI runtime binary.
type OCI struct {
	name  string   // "runsc", "runc" or "crun"
	path  string   // binary
	root  string   // the runtime's state directory (--root)
	scope string   // in its sandboxes' cgroup names (see cgroupsPath)
	flags []string // global flags
	bg    sync.WaitGroup

	seccomp *specs.LinuxSeccomp // runc and crun: see harden

	mu    sync.Mutex
	inits map[string]watched // booted sandboxes' host processes (see watchInit)

	dead deleteQueue // dead sandboxes whose state is left to delete (see deleteLater)

	formatCache // CheckpointFormat
}

var _ Runtime = (*OCI)(nil)

// watched is a booted sandbox's host processes: their pids and a pidfd on
// each, held while the sandbox lives, so neither pid is reused meanwhile.
type watched struct {
	pids, fds []int
}

// Close implements Runtime: it runs the background deletes at once and
// waits for them, then unmounts what runsc keeps in its state directory
// (the null-netns mount).
func (o *OCI) Close(ctx context.Context) error {
	o.dead.close()
	done := make(chan struct{})
	go func() { o.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("%s: background deletes still running: %w", o.name, ctx.Err())
	}
	return o.unmountState()
}

// unmountState detaches every mount in the runtime's state directory:
// runsc bind-mounts a network namespace at null-netns there when it first
// starts a sandbox without a network, and keeps it for the next ones.
// Nothing else removes it: after a crash it would stay mounted (and the
// home could not be removed) until a clean shutdown.
func (o *OCI) unmountState() error {
	if err := overlay.UnmountUnder(o.root); err != nil {
		return fmt.Errorf("%s: unmount in state dir: %w", o.name, err)
	}
	return nil
}

// NewOCI returns a runtime for kind ("runsc", "runc" or "crun"), using binary
// path (looked up in PATH when empty) and keeping its state under stateDir.
func NewOCI(kind, path, stateDir string) (*OCI, error) {
	if path == "" {
		p, err := exec.LookPath(kind)
		if err != nil {
			return nil, fmt.Errorf("runtime %s not found in PATH: install it (see README, scripts/setup.sh) or pass its path", kind)
		}
		path = p
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	// Mounts in it (see unmountState) are found by their resolved path.
	stateDir, err := filepath.EvalSymlinks(stateDir)
	if err != nil {
		return nil, err
	}
	o, err := newDriver(kind)
	if err != nil {
		return nil, err
	}
	o.path, o.root = path, stateDir
	sum := sha256.Sum256([]byte(stateDir))
	o.scope = hex.EncodeToString(sum[:4])
	return o, nil
}

// newDriver returns the driver of runtime kind without a binary or a
// state directory: its flags, and its seccomp profile under runc or crun.
func newDriver(kind string) (*OCI, error) {
	o := &OCI{name: kind}
	switch kind {
	case "runsc":
		// systrap needs no KVM; overlay2=none sends writes to our host upper dir.
		o.flags = []string{"--platform=systrap", "--overlay2=none"}
	case "runc", "crun":
		var err error
		if o.seccomp, err = o.defaultSeccomp(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown runtime %q: use runsc, runc or crun", kind)
	}
	return o, nil
}

// Name reports the runtime kind.
func (o *OCI) Name() string { return o.name }

// Path reports the runtime binary.
func (o *OCI) Path() string { return o.path }

func (o *OCI) command(ctx context.Context, extra []string, args ...string) *exec.Cmd {
	a := append([]string{"--root=" + o.root}, o.flags...)
	a = append(a, extra...)
	return exec.CommandContext(ctx, o.path, append(a, args...)...)
}

// Run implements Runtime.
func (o *OCI) Run(ctx context.Context, s Spec) (Result, error) {
	if err := o.checkNew(s); err != nil {
		return Result{Signal: -1}, err
	}
	cfg := o.config(s)
	b, err := json.Marshal(cfg)
	if err != nil {
		return Result{}, err
	}
	if err := os.WriteFile(filepath.Join(s.Bundle, "config.json"), b, 0o600); err != nil {
		return Result{}, err
	}
	extra := o.networkFlags(s)
	// The run command outlives ctx: cancellation goes through Cancel, which
	// kills the sandbox via the runtime so every process in it dies.
	initFlags, initFile, err := o.initFD(s.InitBinary)
	if err != nil {
		return Result{}, err
	}
	if initFile != nil {
		defer initFile.Close()
	}
	// The runtime writes the pid file once it has created the sandbox: if
	// it fails without one, the failure is the runtime's, not the process's.
	pidFile := filepath.Join(s.Bundle, "run.pid")
	_ = os.Remove(pidFile)
	cmd := o.command(context.WithoutCancel(ctx), extra, append(append([]string{"run", "--pid-file", pidFile, "--bundle", s.Bundle}, initFlags...), s.ID)...)
	if initFile != nil {
		cmd.ExtraFiles = []*os.File{initFile}
	}
	// The runtime's own messages share the process's stderr: keep the tail
	// for the error if the runtime failed.
	tail := &tailBuffer{max: 4 << 10}
	stderr := io.Writer(tail)
	if s.Stderr != nil {
		stderr = io.MultiWriter(s.Stderr, tail)
	}
	res, err := o.startWait(ctx, cmd, s.ID, s.Stdin, s.Stdout, stderr, s.OnStart, true)
	if err != nil || res.Killed {
		return res, err
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		// runc, crun and runsc report the process's death by signal n as
		// exit code 128+n; dying of a signal themselves is a crash, and
		// the sandbox may still run: make it absent, as promised.
		o.kill(s.ID, 0)
		o.delete(s.ID)
		return res, fmt.Errorf("%s died of %v running sandbox %s", o.name, ws.Signal(), s.ID)
	}
	if _, perr := os.Stat(pidFile); res.ExitCode != 0 && errors.Is(perr, os.ErrNotExist) {
		o.delete(s.ID)
		return res, fmt.Errorf("%s could not start sandbox %s (exit %d): %s", o.name, s.ID, res.ExitCode, tail.String())
	}
	return res, nil
}

// checkNew checks s before a sandbox is created for it.
func (o *OCI) checkNew(s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if o.exists(s.ID) {
		return errdefs.Conflict("sandbox %s exists already in %s: destroy it or pick another id", s.ID, o.name)
	}
	return nil
}

// exists reports whether the runtime keeps a sandbox named id: runc and
// crun a directory, runsc a state file for the sandbox's root container.
func (o *OCI) exists(id string) bool {
	for _, p := range []string{filepath.Join(o.root, id), filepath.Join(o.root, id+"_sandbox:"+id+".state")} {
		if _, err := os.Lstat(p); err == nil {
			return true
		}
	}
	return false
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

// initFD opens the init binary, if any, to hand it to the runtime as fd 3
// (see InitPath), with the run flags that make it the sandbox's process:
// never a file in the sandbox the command could read.
func (o *OCI) initFD(bin string) ([]string, *os.File, error) {
	if bin == "" {
		return nil, nil, nil
	}
	f, err := os.Open(bin)
	if err != nil {
		return nil, nil, fmt.Errorf("init binary: %w", err)
	}
	if o.name == "runsc" {
		return []string{"--exec-fd=3"}, f, nil
	}
	return []string{"--preserve-fds=1"}, f, nil
}

// networkFlags returns runsc's flags for s's network: none, or the
// namespace's interfaces passed through to gVisor's netstack.
func (o *OCI) networkFlags(s Spec) []string {
	switch {
	case o.name != "runsc":
		return nil
	case s.NetNS == "":
		return []string{"--network=none"}
	}
	return []string{"--network=sandbox"}
}

// startWait runs cmd with the given stdio, kills the sandbox when ctx ends
// (if killOnCancel), and reports how the process ended.
func (o *OCI) startWait(ctx context.Context, cmd *exec.Cmd, id string, stdin io.Reader, stdout, stderr io.Writer, onStart func(int), killOnCancel bool) (Result, error) {
	cmd.Stdin = stdin
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if stderr == nil {
		cmd.Stderr = io.Discard
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Output copying must not hang on a descendant that kept a pipe open.
	cmd.WaitDelay = 5 * time.Second

	res := Result{Signal: -1}
	res.Started = time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start %s: %w", o.name, err)
	}
	if onStart != nil {
		onStart(cmd.Process.Pid)
	}
	done := make(chan struct{})
	// The watcher reports through a channel, not by writing res: it runs
	// concurrently with the code below.
	killed := make(chan bool, 1)
	go func() {
		select {
		case <-ctx.Done():
			if killOnCancel {
				o.kill(id, cmd.Process.Pid)
			} else {
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
			killed <- true
		case <-done:
			killed <- false
		}
	}()
	werr := cmd.Wait()
	close(done)
	res.Killed = <-killed
	res.Duration = time.Since(res.Started)
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			res.Rusage = *ru
		}
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		switch {
		case ws.Exited():
			res.ExitCode = ws.ExitStatus()
		case ws.Signaled():
			res.ExitCode = 128 + int(ws.Signal())
		}
	}
	if killOnCancel {
		if res.Killed {
			o.delete(id)
		} else {
			// The runtime removes a sandbox whose process exited by itself;
			// this is only a safety net, off the critical path, and only
			// paid for (a runtime process, ~20 ms of CPU) if state is left.
			if o.hasState(id) {
				o.bg.Add(1)
				go func() {
					defer o.bg.Done()
					o.delete(id)
				}()
			}
		}
	}
	var exitErr *exec.ExitError
	if werr != nil && !errors.As(werr, &exitErr) && !errors.Is(werr, exec.ErrWaitDelay) {
		return res, fmt.Errorf("%s: %w", o.name, werr)
	}
	return res, nil
}

// Boot implements Runtime.
func (o *OCI) Boot(ctx context.Context, s Spec) error {
	if err := o.checkNew(s); err != nil {
		return err
	}
	b, err := json.Marshal(o.config(s))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.Bundle, "config.json"), b, 0o600); err != nil {
		return err
	}
	extra := o.networkFlags(s)
	// The sandbox inherits the runtime's stdio and outlives it: a pipe here
	// would never reach EOF, so errors go through a file.
	errf, err := os.CreateTemp(s.Bundle, "boot-stderr-*")
	if err != nil {
		return err
	}
	defer errf.Close()
	pidFile := filepath.Join(s.Bundle, "init.pid")
	args := []string{"run", "--detach", "--pid-file", pidFile, "--bundle", s.Bundle}
	initFlags, initFile, err := o.initFD(s.InitBinary)
	if err != nil {
		return err
	}
	if initFile != nil {
		defer initFile.Close()
	}
	cmd := o.command(ctx, extra, append(append(args, initFlags...), s.ID)...)
	if initFile != nil {
		cmd.ExtraFiles = []*os.File{initFile}
	}
	return o.launchDetached(ctx, cmd, s, errf, pidFile, "run --detach")
}

// watchInit keeps pidfds on the host processes that make up a booted
// sandbox, so Destroy needs no runtime process: for runc and crun the
// init, pid 1 of the sandbox's pid namespace, whose death ends every
// process in it; for runsc the sandbox (sentry) and gofer processes, read
// from runsc's state file (the gofer holds the root filesystem's mount, so
// both must be gone before the upper dir is committed). Without pidfds
// Destroy falls back to `delete --force`, which for runc sleeps 100 ms
// between checks and for runsc starts the runsc binary (~60 ms).
func (o *OCI) watchInit(id, pidFile string) {
	var pids []int
	if o.name == "runsc" {
		pids = o.runscPids(id)
	} else if b, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			pids = []int{pid}
		}
	}
	var fds []int
	for _, pid := range pids {
		if pid <= 1 {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		fds = append(fds, fd)
	}
	if len(fds) == 0 || len(fds) != len(pids) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return
	}
	o.mu.Lock()
	if o.inits == nil {
		o.inits = map[string]watched{}
	}
	o.inits[id] = watched{pids: pids, fds: fds}
	o.mu.Unlock()
}

// watchedPids returns the host pids of sandbox id's processes as
// watchInit found them at its boot, else what runscPids reads.
func (o *OCI) watchedPids(id string) []int {
	o.mu.Lock()
	w, ok := o.inits[id]
	o.mu.Unlock()
	if ok {
		return w.pids
	}
	return o.runscPids(id)
}

// runscPids reads the sandbox and gofer pids from runsc's state file for id.
func (o *OCI) runscPids(id string) []int {
	m, _ := filepath.Glob(filepath.Join(o.root, id+"_sandbox:"+id+".state"))
	if len(m) != 1 {
		return nil
	}
	b, err := os.ReadFile(m[0])
	if err != nil {
		return nil
	}
	var st struct {
		GoferPid int `json:"goferPid"`
		Sandbox  struct {
			Pid int `json:"pid"`
		} `json:"sandbox"`
	}
	if json.Unmarshal(b, &st) != nil || st.GoferPid <= 1 || st.Sandbox.Pid <= 1 {
		return nil
	}
	return []int{st.Sandbox.Pid, st.GoferPid}
}

// killInit kills id's watched processes through their pidfds and waits
// until they have exited (their namespaces, mounts included, are gone by
// then). It reports false if id is not watched, or, with an error, if a
// kill or a wait failed.
func (o *OCI) killInit(ctx context.Context, id string) (bool, error) {
	o.mu.Lock()
	w, ok := o.inits[id]
	delete(o.inits, id)
	o.mu.Unlock()
	if !ok {
		return false, nil
	}
	fds := w.fds
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, fd := range fds {
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && err != unix.ESRCH {
			return true, fmt.Errorf("kill sandbox %s: %w", id, err)
		}
	}
	// SIGKILL ends a process unless it is stuck in the kernel: bound the
	// wait, then the runtime gets its turn.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, fd := range fds {
		if err := waitPidfd(ctx, fd); err != nil {
			return true, fmt.Errorf("wait for sandbox %s to die: %w", id, err)
		}
	}
	return true, nil
}

// waitPidfd waits until the process of pidfd fd has exited or ctx ends.
func waitPidfd(ctx context.Context, fd int) error {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, 100)
		switch {
		case err == unix.EINTR:
		case err != nil:
			return err
		case n == 1:
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
	}
}

// alive reports whether id is a booted sandbox whose main process runs
// (true also when not known: only the runtime can tell then).
func (o *OCI) alive(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	w, ok := o.inits[id]
	if !ok {
		return true
	}
	for _, fd := range w.fds {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, 0); err == nil && n == 1 {
			return false
		}
	}
	return true
}

// Destroy implements Runtime.
func (o *OCI) Destroy(ctx context.Context, id string) error {
	if watched, err := o.killInit(ctx, id); watched {
		if err != nil {
			// The pidfds are closed: let the runtime finish the job.
			o.kill(id, 0)
			o.delete(id)
			return err
		}
		// Dead already: deleting its state and cgroup can wait.
		o.deleteLater(id)
		return nil
	}
	if !o.exists(id) {
		return nil // absent: destroyed already, or never created
	}
	// `delete --force` kills a running sandbox and waits for it: one runtime
	// process instead of two; kill first only if that failed.
	if err := o.forceDelete(ctx, id); err != nil && o.exists(id) {
		o.kill(id, 0)
		if err := o.forceDelete(ctx, id); err != nil && o.exists(id) {
			return fmt.Errorf("%s delete %s: %w", o.name, id, err)
		}
	}
	return nil
}

// WaitRunning implements Runtime by polling the runtime's state command.
func (o *OCI) WaitRunning(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		out, err := o.command(ctx, nil, "state", id).Output()
		if err == nil {
			var st struct {
				Status string `json:"status"`
			}
			if json.Unmarshal(out, &st) == nil && st.Status == "running" {
				return nil
			}
			if st.Status == "stopped" {
				return fmt.Errorf("sandbox %s has stopped", id)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sandbox %s did not start: %w", id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Exec implements Runtime.
func (o *OCI) Exec(ctx context.Context, id string, s ExecSpec) (Result, error) {
	if err := ValidateExec(id, s); err != nil {
		return Result{Signal: -1}, err
	}
	if !o.exists(id) {
		return Result{Signal: -1}, errdefs.NotFound("exec: no sandbox %s in %s", id, o.name)
	}
	if !o.alive(id) {
		return Result{Signal: -1}, errdefs.FailedPrecondition("exec: sandbox %s has stopped", id)
	}
	args, flags, uid, gid := s.Args, []string{"exec"}, s.UID, s.GID
	var extra []*os.File
	var status *os.File
	// OnStart waits until the runtime has written its pid file: by then it
	// forwards signals to the process. A signal sent to the runtime process
	// before that (a kill right after the spid is handed out, on a loaded
	// host) would end the runtime and leave the process running.
	ready := newExecReady(s.OnStart)
	defer ready.close()
	s.OnStart = ready.onStart
	if s.InitBinary != "" && len(s.InitMode) > 0 {
		// The init runs a mode of its own, from fd 3 as at boot.
		bin, err := os.Open(s.InitBinary)
		if err != nil {
			return Result{}, fmt.Errorf("init binary: %w", err)
		}
		defer bin.Close()
		flags = append(flags, "--preserve-fds=1")
		if o.name == "runsc" {
			flags = []string{"exec", "--exec-fd=3"}
		}
		args, uid, gid, extra = append([]string{InitPath, initproc.Arg}, s.InitMode...), 0, 0, []*os.File{bin}
	} else if s.InitBinary != "" {
		// The wrapper comes in as fd 3 (see InitPath), its status pipe as
		// fd 4 (runc, crun) or 3 (runsc, which loads the binary itself).
		bin, err := os.Open(s.InitBinary)
		if err != nil {
			return Result{}, fmt.Errorf("init binary: %w", err)
		}
		defer bin.Close()
		r, w, err := os.Pipe()
		if err != nil {
			return Result{}, err
		}
		defer r.Close()
		defer w.Close()
		statusFD := "4"
		if o.name == "runsc" {
			flags, statusFD = append(flags, "--exec-fd=3", "--pass-fd=4:3"), "3"
		} else {
			flags = append(flags, "--preserve-fds=2")
		}
		// As root, which can exec the binary whatever its mode; the wrapper
		// runs the command as the requested user.
		args = append([]string{InitPath, initproc.Arg, initproc.ExecMode, statusFD, strconv.Itoa(int(s.UID)), strconv.Itoa(int(s.GID))}, s.Args...)
		uid, gid = 0, 0
		extra, status = []*os.File{bin, w}, r
		onStart := s.OnStart
		s.OnStart = func(pid int) {
			w.Close() // the runtime has its copy: EOF once the wrapper is gone
			if onStart != nil {
				onStart(pid)
			}
		}
	}
	proc := o.process(args, s.Env, s.Cwd, uid, gid, s.FileSizeLimit)
	b, err := json.Marshal(proc)
	if err != nil {
		return Result{}, err
	}
	f, err := os.CreateTemp("", "arbor-process-*.json")
	if err != nil {
		return Result{}, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return Result{}, err
	}
	f.Close()
	if ready.pidFile != "" {
		flags = append(flags, "--pid-file", ready.pidFile)
		if o.name == "runsc" && s.OnSignal != nil {
			// runsc exec forwards signals only to a terminal's process:
			// signals go to the command by its pid in the sandbox.
			ready.internalPidFile = filepath.Join(ready.dir, "internal.pid")
			flags = append(flags, "--internal-pid-file", ready.internalPidFile)
			onSignal := s.OnSignal
			ready.onInternal = func(pid int) {
				onSignal(func(sig syscall.Signal) error {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					out, err := o.command(ctx, nil, "kill", "--pid", strconv.Itoa(pid), id, strconv.Itoa(int(sig))).CombinedOutput()
					if err != nil {
						return fmt.Errorf("runsc kill --pid %d: %w: %s", pid, err, bytes.TrimSpace(out))
					}
					return nil
				})
			}
		}
	}
	cmd := o.command(context.WithoutCancel(ctx), nil, append(flags, "--process", f.Name(), id)...)
	cmd.ExtraFiles = extra
	var got chan []byte
	if status != nil {
		got = make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(io.LimitReader(status, 64<<10))
			got <- b
		}()
	}
	res, err := o.startWait(ctx, cmd, id, s.Stdin, s.Stdout, s.Stderr, s.OnStart, false)
	ready.close() // OnStart has run before the result is given
	if got != nil && err == nil {
		var b []byte
		select {
		case b = <-got:
		case <-time.After(time.Second): // something still holds the pipe
		}
		if x, ok := initproc.ReadExecStatus(bytes.NewReader(b)); ok {
			res.ExitCode, res.Signal, res.Rusage, res.Exact = x.Code, -1, x.Rusage, true
			if x.Signal > 0 {
				res.Signal = x.Signal
			}
		}
	}
	return res, err
}

// kill ends the sandbox: first through the runtime (which kills every process
// in it), then, if the runtime process lingers, by killing its process group.
func (o *OCI) kill(id string, pid int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := procStart(pid) // read while the runtime's process is still ours
	_ = o.command(ctx, nil, "kill", "--all", id, "KILL").Run()
	if pid > 1 && start != "" {
		time.AfterFunc(3*time.Second, func() { killGroup(pid, start) })
	}
}

// killGroup kills process group pgid, led by the runtime's process that
// started at start, unless pgid's number now belongs to another process:
// once the leader is reaped, its pid (and so a group id) can be reused by
// an unrelated process, and only a process whose pid is pgid can create a
// group of that id. With no process of that pid, the group, if any, is the
// leader's leftovers.
func killGroup(pgid int, start string) {
	if now := procStart(pgid); now != "" && now != start {
		return
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// procStart is the start time of process pid (field 22 of /proc/pid/stat,
// in clock ticks since boot), which tells a process from a later one given
// the same pid; "" if there is no such process.
func procStart(pid int) string {
	if f := procStat(pid); len(f) >= 20 {
		return f[19] // field 22: fields after the name start at 3
	}
	return ""
}

// procStat returns the fields of /proc/pid/stat after the command name
// (field 3 on), nil if there is no such process.
func procStat(pid int) []string {
	if pid <= 1 {
		return nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// hasState reports whether the runtime keeps state for id in its root:
// runc and crun a directory named id, runsc files named after it.
func (o *OCI) hasState(id string) bool {
	if _, err := os.Lstat(filepath.Join(o.root, id)); err == nil {
		return true
	}
	m, _ := filepath.Glob(filepath.Join(o.root, "*"+id+"*"))
	return len(m) > 0
}

func (o *OCI) delete(id string) { _ = o.forceDelete(context.Background(), id) }

// forceDelete deletes sandbox id (runsc: ids, any number) with the
// runtime's `delete --force`.
func (o *OCI) forceDelete(ctx context.Context, id string, more ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return o.command(ctx, nil, append([]string{"delete", "--force", id}, more...)...).Run()
}

// Cleanup implements Runtime: it kills and deletes every container in the
// state dir, unmounts what runsc left there (see unmountState) and removes
// sandbox cgroups left behind (see sweepCgroups).
func (o *OCI) Cleanup(ctx context.Context) error {
	var stderr bytes.Buffer
	cmd := o.command(ctx, nil, "list", "--quiet")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s list: %w: %s", o.name, err, strings.TrimSpace(stderr.String()))
	}
	var errs []error
	for _, id := range strings.Fields(string(out)) {
		o.kill(id, 0)
		if err := o.forceDelete(ctx, id); err != nil && o.hasState(id) {
			errs = append(errs, fmt.Errorf("%s delete %s: %w", o.name, id, err))
		}
	}
	errs = append(errs, o.unmountState())
	// Cgroups are left by sandboxes whose runtime process was killed
	// before it recorded them (no list names them) and by daemons killed
	// outright, of this home and of others: nothing else removes them.
	errs = append(errs, o.sweepCgroups(ctx, nil))
	return errors.Join(errs...)
}

// process builds the OCI process of a sandbox's main or exec'd process.
func (o *OCI) process(args, env []string, cwd string, uid, gid uint32, fsize int64) *specs.Process {
	// NOFILE may not exceed the daemon's own hard limit, or runc fails with EPERM.
	nofile := uint64(65536)
	var cur unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &cur) == nil && cur.Max < nofile {
		nofile = cur.Max
	}
	rlimits := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: nofile, Soft: nofile}}
	if fsize > 0 {
		rlimits = append(rlimits, specs.POSIXRlimit{Type: "RLIMIT_FSIZE", Hard: uint64(fsize), Soft: uint64(fsize)})
	}
	caps := []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
		"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
	}
	pcaps := &specs.LinuxCapabilities{Bounding: caps}
	if uid == 0 {
		pcaps = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
	}
	if cwd == "" {
		cwd = "/"
	}
	return &specs.Process{
		Args:            args,
		Env:             env,
		Cwd:             cwd,
		User:            specs.User{UID: uid, GID: gid},
		Rlimits:         rlimits,
		Capabilities:    pcaps,
		NoNewPrivileges: true,
	}
}

func (o *OCI) config(s Spec) *specs.Spec {
	res := &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	if s.MemoryBytes > 0 {
		swap := s.MemoryBytes
		res.Memory = &specs.LinuxMemory{Limit: &s.MemoryBytes, Swap: &swap}
	}
	if s.Pids > 0 {
		pids := s.Pids
		res.Pids = &specs.LinuxPids{Limit: &pids}
	}
	// CPU is shared by weight, in proportion to what a run asks: cpu.shares
	// 1024 per CPU (one CPU's worth, the kernel's default, when it asks
	// none; runc and crun map shares to cgroup v2's cpu.weight), so under
	// contention a run asking 2 CPUs gets twice what a run asking 1 gets.
	// What a run asks is also its ceiling (quota).
	res.CPU = &specs.LinuxCPU{Shares: ptrTo(CPUShares(s.CPUs))}
	if s.CPUs > 0 {
		period := uint64(100000)
		quota := int64(s.CPUs * float64(period))
		res.CPU.Period, res.CPU.Quota = &period, &quota
	}
	ns := []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.MountNamespace}, {Type: specs.NetworkNamespace, Path: s.NetNS}}
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
	if m, ok := o.tmpMount(s.Rootfs); ok {
		mounts = append(mounts, m)
	}
	if s.ResolvConf != "" {
		mounts = append(mounts, specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: s.ResolvConf, Options: []string{"rbind", "ro"}})
	}
	spec := &specs.Spec{
		// Debian 12's crun 1.8 rejects newer spec versions ("unknown version specified").
		Version:  "1.0.2",
		Root:     &specs.Root{Path: s.Rootfs},
		Hostname: s.Hostname,
		Process:  o.process(s.Args, s.Env, s.Cwd, s.UID, s.GID, s.FileSizeLimit),
		Mounts:   mounts,
		Linux: &specs.Linux{
			Namespaces:  ns,
			Resources:   res,
			CgroupsPath: o.cgroupsPath(s.ID),
			MaskedPaths: []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
				"/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	o.harden(spec, s)
	o.forkable(spec, s)
	return spec
}

// CPUShares is the cpu.shares of a sandbox asking cpus CPUs (0: one).
func CPUShares(cpus float64) uint64 {
	if cpus <= 0 {
		cpus = 1
	}
	return max(2, uint64(cpus*1024)) // 2 is the kernel's least
}

func ptrTo[T any](v T) *T { return &v }

// tmpMount keeps /tmp in the root filesystem under runsc, which otherwise
// mounts its own tmpfs over an empty /tmp (or over the directory a /tmp
// symlink points to): what a command writes there would be missing from
// the snapshot, unlike under runc and crun. An explicit mount of the root's
// own /tmp directory is the one way to turn that off; it is read-write, so
// the files land in the run's upper dir. A /tmp that is not a directory
// inside the root is left alone (see EnsureTmp).
func (o *OCI) tmpMount(rootfs string) (specs.Mount, bool) {
	if o.name != "runsc" || rootfs == "" {
		return specs.Mount{}, false
	}
	src, err := securejoin.SecureJoin(rootfs, "/tmp")
	if err != nil {
		return specs.Mount{}, false
	}
	if fi, err := os.Lstat(src); err != nil || !fi.IsDir() {
		return specs.Mount{}, false
	}
	return specs.Mount{Destination: "/tmp", Type: "bind", Source: src, Options: []string{"bind"}}, true
}

// EnsureTmp creates /tmp (mode 1777) in rootfs if it does not resolve to
// anything, as runsc would create its mount point there anyway: every
// runtime then gives the command the same /tmp, and the snapshot holds it.
func EnsureTmp(rootfs string) error {
	p, err := securejoin.SecureJoin(rootfs, "/tmp")
	if err != nil {
		return err
	}
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		return nil // a directory, or something else every runtime leaves alone
	}
	// Resolved inside the root, before anything runs in it: no component
	// left to create can be a symlink.
	if err := os.MkdirAll(p, 0o755); err != nil {
		return fmt.Errorf("create /tmp: %w", err)
	}
	return os.Chmod(p, 0o777|os.ModeSticky)
}
