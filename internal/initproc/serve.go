package initproc

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// holderGrace is how long the command's output may take to reach its end
// after the command exits while descendants may still hold it (an init
// that is not PID 1 cannot kill them); they are cut off then (the engine
// kills the sandbox next, as a sandbox ends with its main process).
const holderGrace = 20 * time.Millisecond

// drainBound bounds the wait for the output as PID 1, where every holder
// was killed and reaped before (see reap): what is left in the pipes only
// needs the readers to be scheduled, which a loaded host may take far
// longer than holderGrace to do (a deep chain under load lost a step's
// whole output that way).
const drainBound = 10 * time.Second

// serve runs a command for the engine (see proto.go), then exits if
// exitAfterRun, else reaps orphans like pause until the sandbox is killed
// or, as PID 1, runs the next command it is sent (see continue.go).
func serve(in io.Reader, out io.Writer, exitAfterRun bool) {
	// Not dumpable: /proc/<this pid>/fd, mem and environ need
	// CAP_SYS_PTRACE, which no command gets, so the command, root or not,
	// cannot open this init's pipes to the engine. (The command is
	// dumpable again after its execve.)
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	// PID 1 semantics, as the kernel gives any init: signals sent from
	// inside the sandbox do not end it. Caught (not ignored, which the
	// command would inherit), so the command gets default dispositions.
	ignoreSignals()
	fw := &frameWriter{w: out}
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	var (
		placing *io.PipeWriter // the tar being placed, while it arrives
		placed  chan error
		pid     int
		stdinQ  chan []byte // to the command's stdin; closed at its end
		exited  = make(chan Exit, 1)
		busy    atomic.Bool // a command runs
		runs    int
	)
	pid1 := os.Getpid() == 1
	var boot devState // /dev at boot, for freshen
	if pid1 && !exitAfterRun {
		boot = readDev()
	}
	// reap reaps until cmdPid has exited. As PID 1 it then kills and reaps
	// everything else and returns, the sandbox empty for the next command;
	// otherwise it reaps orphans for good.
	reap := func(cmdPid int) {
		for {
			var ws syscall.WaitStatus
			var ru syscall.Rusage
			p, err := syscall.Wait4(-1, &ws, 0, &ru)
			switch {
			case err == syscall.EINTR:
				continue
			case err != nil: // no children left: wait for the next one
				<-sigchld
				continue
			}
			if p == cmdPid {
				x := exitOf(ws, ru)
				if pid1 {
					// A sandbox ends with its main process: kill what the
					// command left behind (and exec'd processes) and reap
					// it all, so nothing writes after the exit is reported.
					_ = syscall.Kill(-1, syscall.SIGKILL)
					reapAll()
					exited <- x
					return
				}
				exited <- x
			}
		}
	}
	spare := make(chan *cmdPipes, 1) // the next command's pipes (see prepare)
	if !exitAfterRun {
		// Started up: a warm sandbox is ready once this is read (see
		// Agent.WaitReady).
		prepare(spare)
		_ = fw.write(frameReady, nil)
	}
	for {
		typ, p, err := readFrame(in, maxFrame)
		if err != nil {
			break // the engine is gone: reap until killed
		}
		switch typ {
		case framePlace:
			if placing == nil {
				pr, pw := io.Pipe()
				placing, placed = pw, make(chan error, 1)
				go func() {
					err := place(pr)
					if err == nil {
						_, err = io.Copy(io.Discard, pr) // tar padding after the end marker
					}
					pr.CloseWithError(err)
					placed <- err
				}()
			}
			_, _ = placing.Write(p) // after an error, the reply says why
		case framePlaceEnd:
			msg := ""
			if placing != nil {
				placing.Close()
				if err := <-placed; err != nil {
					msg = err.Error()
				}
				placing = nil
			}
			_ = fw.write(framePlaced, []byte(msg))
		case frameRun:
			var req Request
			if err := json.Unmarshal(p, &req); err != nil {
				_ = fw.write(frameError, []byte("bad request: "+err.Error()))
				continue
			}
			// One command at a time; a second one only where the first's
			// leftovers were all killed (PID 1, see reap).
			if busy.Load() || (runs > 0 && (!pid1 || exitAfterRun)) {
				_ = fw.write(frameError, []byte("this sandbox cannot run another command now"))
				continue
			}
			var done func()
			pid, stdinQ, done, err = start(req, fw, spare)
			if err != nil {
				_ = fw.write(frameError, []byte(err.Error()))
				continue
			}
			runs++
			busy.Store(true)
			go reap(pid)
			go func() {
				x := <-exited
				done()
				js, _ := json.Marshal(x)
				_ = fw.write(frameExit, js)
				if exitAfterRun {
					os.Exit(0) // everything else is dead already (see reap)
				}
				// After the exit report, so the result does not wait for
				// it: make the sandbox fresh for a next command (see
				// continue.go), or say why it is not.
				stale := "the init is not PID 1: it cannot clean up after a command"
				if pid1 {
					stale = freshen(boot)
				}
				if stale == "" {
					// Made while the engine commits the step, before the
					// report: the next command's pipes never exist while
					// another command runs.
					prepare(spare)
				}
				busy.Store(false) // before the report: the next request may follow it at once
				_ = fw.write(frameFresh, []byte(stale))
			}()
		case frameStdin:
			if stdinQ != nil {
				stdinQ <- p
			}
		case frameStdinEOF:
			if stdinQ != nil {
				close(stdinQ)
				stdinQ = nil
			}
		case frameSignal:
			// Only for the command it names: a late one for an earlier
			// command must not reach the next.
			if pid > 0 && len(p) == 5 && int(binary.BigEndian.Uint32(p[1:])) == pid {
				_ = syscall.Kill(pid, syscall.Signal(p[0]))
			}
		}
	}
	if !busy.Load() {
		go reap(-1)
	}
	select {}
}

// ignoreSignals catches and drops the signals that would otherwise end
// or stop this init; SIGKILL and SIGSTOP from inside the sandbox the
// kernel drops for PID 1 itself.
func ignoreSignals() {
	ch := make(chan os.Signal, 64)
	signal.Notify(ch, fatalSignals...)
	go func() {
		for range ch {
		}
	}()
}

// fatalSignals are the signals that end or stop a Go program nobody
// listens for: those Go's runtime dies, crashes or stops on when a process
// sends them (SIGPIPE too: a write to a closed stdout), and those whose
// default action stops a process. Every other signal Go catches and drops
// by itself when nobody listens. Listening to all of them instead costs a
// round trip to the runtime's signal thread per signal, ~60 of them, which
// under gVisor was several milliseconds of every cold run's start.
var fatalSignals = []os.Signal{
	syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGILL, syscall.SIGTRAP, syscall.SIGABRT,
	syscall.SIGBUS, syscall.SIGFPE, syscall.SIGSEGV, syscall.SIGPIPE, syscall.SIGTERM, syscall.SIGSTKFLT,
	syscall.SIGCONT, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGSYS,
}

// reapAll waits for every child (orphans included) until none is left.
func reapAll() {
	for {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
	}
}

// start starts req's command with pipes for its stdio and returns its pid,
// a queue feeding its stdin, and a function that waits (briefly) for its
// output to be forwarded.
func start(req Request, fw *frameWriter, spare <-chan *cmdPipes) (int, chan []byte, func(), error) {
	if len(req.Args) == 0 {
		return 0, nil, nil, fmt.Errorf("no command")
	}
	path, err := lookPath(req.Args[0], req.Env)
	if err != nil {
		return 0, nil, nil, err
	}
	var pipes *cmdPipes
	select {
	case pipes = <-spare:
	default:
		if pipes, err = newCmdPipes(); err != nil {
			return 0, nil, nil, err
		}
	}
	inR, inW, outR, outW, errR, errW := pipes.inR, pipes.inW, pipes.outR, pipes.outW, pipes.errR, pipes.errW
	if req.FileSize > 0 {
		// Inherited by the command; this init writes only to pipes.
		lim := uint64(req.FileSize)
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: lim, Max: lim}); err != nil {
			return 0, nil, nil, fmt.Errorf("RLIMIT_FSIZE: %w", err)
		}
	}
	cwd := req.Cwd
	if cwd == "" {
		cwd = "/"
	}
	pid, err := syscall.ForkExec(path, req.Args, &syscall.ProcAttr{
		Dir: cwd, Env: req.Env, Files: []uintptr{inR.Fd(), outW.Fd(), errW.Fd()},
		Sys: &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: req.UID, Gid: req.GID, Groups: []uint32{}}},
	})
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return 0, nil, nil, fmt.Errorf("%s: %w", req.Args[0], err)
	}
	// The pid goes out before any output: the engine takes nothing else
	// first.
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(pid))
	_ = fw.write(frameStarted, b[:])
	q := make(chan []byte, 64)
	go func() {
		for b := range q {
			if _, err := inW.Write(b); err != nil {
				break
			}
		}
		inW.Close()
		for range q { // drop what the command no longer reads
		}
	}()
	var wg sync.WaitGroup
	for _, x := range []struct {
		r   *os.File
		typ byte
	}{{outR, frameStdout}, {errR, frameStderr}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, outChunk)
			for {
				n, err := x.r.Read(buf)
				if n > 0 {
					_ = fw.write(x.typ, buf[:n])
				}
				if err != nil {
					return
				}
			}
		}()
	}
	done := func() {
		ch := make(chan struct{})
		go func() { wg.Wait(); close(ch) }()
		bound := holderGrace
		if os.Getpid() == 1 {
			bound = drainBound
		}
		select {
		case <-ch:
		case <-time.After(bound):
		}
	}
	return pid, q, done, nil
}

// cmdPipes is a command's three pipes, this init's ends and the command's.
type cmdPipes struct {
	inR, inW, outR, outW, errR, errW *os.File
}

// newCmdPipes makes a command's pipes.
func newCmdPipes() (*cmdPipes, error) {
	var s cmdPipes
	for _, p := range []*[2]**os.File{{&s.inR, &s.inW}, {&s.outR, &s.outW}, {&s.errR, &s.errW}} {
		r, w, err := os.Pipe()
		if err != nil {
			s.close()
			return nil, err
		}
		*p[0], *p[1] = r, w
	}
	return &s, nil
}

func (s *cmdPipes) close() {
	for _, f := range []*os.File{s.inR, s.inW, s.outR, s.outW, s.errR, s.errW} {
		if f != nil {
			f.Close()
		}
	}
}

// prepare makes the next command's pipes while the sandbox is idle, so a
// run does not wait for them: under gVisor each system call costs
// 10-50 µs, and a set of pipes takes some thirty (three pipes, their
// flags and their registration with Go's poller). One set waits at most;
// a run that finds none makes its own.
func prepare(spare chan *cmdPipes) {
	s, err := newCmdPipes()
	if err != nil {
		return // the run makes its own
	}
	select {
	case spare <- s:
	default:
		s.close()
	}
}

// lookPath resolves name as a runtime would: names with a slash as they
// are, others through PATH from the command's environment.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: executable file not found in $PATH", name)
}
