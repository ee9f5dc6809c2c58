package initproc

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Agent is the engine's end of a sandbox whose init serves (mode "serve"):
// it places files and runs one command without a runtime process. The
// sandbox must be booted with Stdin and Stdout from [NewAgentPipes].
// An Agent serves one run: Place (optional), then Run; Signal may be called
// while Run runs. Close releases the pipes.
//
// Every byte from the sandbox is treated as hostile: each frame type is
// legal only in the phase that expects it (see [Agent.next]); anything else
// ends the conversation with a [ProtocolError], never a panic.
type Agent struct {
	toInit   *os.File
	fromInit *os.File
	r        io.Reader // fromInit, or a test's bytes
	w        *frameWriter
	phase    phase
	exited   bool          // the last command's exit was reported
	pid      atomic.Int32  // the running command's pid in the sandbox, for Signal; 0: none
	fed      chan struct{} // closed when the last command's stdin feed ended
	compact  bool          // requests go as 'C' frames, for the C init
}

// phase is where the conversation with the init stands.
type phase uint8

const (
	phaseIdle       phase = iota // nothing asked: the init must be silent
	phasePlacing                 // files sent: only 'p'
	phaseStarting                // command sent: 's' or 'e'
	phaseRunning                 // command started: 'O', 'E' or 'x'
	phaseDone                    // answered, exited or broken: nothing more
	phaseFreshening              // exited, and Continue waits: only 'f'
	phaseBooting                 // WaitReady waits: only 'r'
)

// ProtocolError means the sandbox sent something arbor's init never
// sends where it was sent: a forged or corrupt frame. The run fails and
// the sandbox must be destroyed.
type ProtocolError struct{ msg string }

func (e *ProtocolError) Error() string {
	return "the sandbox broke arbor's init protocol (" + e.msg + "); it was destroyed"
}

// IsProtocolError reports whether err is a [ProtocolError].
func IsProtocolError(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

func protoErr(format string, a ...any) error { return &ProtocolError{msg: fmt.Sprintf(format, a...)} }

// frameRule says in which phase a frame type from the init is legal, how
// large its payload may be, and the phase it leads to.
type frameRule struct {
	in       phase
	min, max int
	next     phase
}

var initFrames = map[byte]frameRule{
	framePlaced:  {phasePlacing, 0, maxMessage, phaseIdle},
	frameStarted: {phaseStarting, 4, 4, phaseRunning},
	frameError:   {phaseStarting, 0, maxMessage, phaseDone},
	frameStdout:  {phaseRunning, 1, outChunk, phaseRunning},
	frameStderr:  {phaseRunning, 1, outChunk, phaseRunning},
	frameExit:    {phaseRunning, 2, maxExitJSON, phaseDone},
	frameFresh:   {phaseFreshening, 0, maxMessage, phaseIdle},
	frameReady:   {phaseBooting, 0, 0, phaseIdle},
}

// next reads the init's next frame and checks it against the current
// phase before reading its payload; on any error the agent is broken.
func (a *Agent) next() (byte, []byte, error) {
	typ, p, err := a.readChecked()
	if err != nil {
		a.phase = phaseDone
		return 0, nil, err
	}
	return typ, p, nil
}

func (a *Agent) readChecked() (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(a.r, hdr[:]); err != nil {
		return 0, nil, gone(err)
	}
	typ, n := hdr[0], binary.BigEndian.Uint32(hdr[1:])
	rule, ok := initFrames[typ]
	switch {
	case !ok:
		return 0, nil, protoErr("unknown frame type 0x%02x", typ)
	case a.phase != rule.in:
		return 0, nil, protoErr("frame %q out of order", typ)
	case int64(n) < int64(rule.min) || int64(n) > int64(rule.max):
		return 0, nil, protoErr("frame %q of %d bytes", typ, n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(a.r, p); err != nil {
		return 0, nil, gone(err)
	}
	a.phase = rule.next
	return typ, p, nil
}

// gone maps the end of the init's output to errSandboxGone.
func gone(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrClosed) {
		return errSandboxGone
	}
	return err
}

// AgentPipes are the sandbox's ends of an agent's pipes: pass them as the
// init's stdin and stdout at boot, then close them.
type AgentPipes struct{ Stdin, Stdout *os.File }

// Close closes the sandbox's ends (the sandbox keeps its own copies).
func (p AgentPipes) Close() {
	p.Stdin.Close()
	p.Stdout.Close()
}

// WaitReady waits for a freshly booted warm init (serve without
// ExitAfterRun) to say it serves, until ctx ends. A runtime's boot returns
// once the init process exists; the init still has to start up (under
// gVisor, a Go program's start and its re-exec from memory: tens of
// milliseconds, more on a loaded host), and a request sent meanwhile waits
// for all of it. A sandbox counted ready before then is not: a run that
// takes it pays the rest of its boot. Call it once, right after the boot,
// before anything else; on an error the sandbox must be destroyed.
func (a *Agent) WaitReady(ctx context.Context) error {
	if a.phase != phaseIdle {
		return errors.New("waiting for the init: the agent is not idle")
	}
	a.phase = phaseBooting
	if f, ok := a.r.(*os.File); ok {
		// A fresh pipe is non-blocking, so a deadline ends the read: ctx's
		// end (its deadline included) sets one. It is cleared after, and
		// after a deadline being set as ctx ends at the same moment, so
		// the agent's later reads never see it.
		set := make(chan struct{})
		stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()); close(set) })
		defer func() {
			if !stop() {
				<-set
			}
			_ = f.SetReadDeadline(time.Time{})
		}()
	}
	if _, _, err := a.next(); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			<-ctx.Done() // only ctx sets the deadline: it ends now if it has not yet
			return fmt.Errorf("the sandbox's init did not start serving: %w", context.Cause(ctx))
		}
		return fmt.Errorf("the sandbox's init did not start serving: %w", err)
	}
	return nil
}

// NewAgentPipes makes the pipes between the engine and a serving init.
func NewAgentPipes() (*Agent, AgentPipes, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, AgentPipes{}, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, AgentPipes{}, err
	}
	return &Agent{toInit: inW, fromInit: outR, r: outR, w: &frameWriter{w: inW}}, AgentPipes{Stdin: inR, Stdout: outW}, nil
}

// CompactRequests makes Run send its request in the compact form that
// arbor's C init reads (see [ColdInitName]) instead of JSON. Call it
// before Run.
func (a *Agent) CompactRequests() { a.compact = true }

// Close releases the engine's ends.
func (a *Agent) Close() {
	a.toInit.Close()
	a.fromInit.Close()
}

// Alive reports whether the init still holds its end of the pipes: a
// sandbox that died while idle (killed, out of memory) shows as a hang-up.
// It does not block.
func (a *Agent) Alive() bool {
	fds := []unix.PollFd{{Fd: int32(a.fromInit.Fd()), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	if err != nil {
		return false
	}
	// Nothing to read and no hang-up: an idle init says nothing.
	return n == 0
}

// errSandboxGone is returned when the init's output ends: the sandbox was
// killed or died.
var errSandboxGone = errors.New("the sandbox ended")

// IsSandboxGone reports whether err means the sandbox was killed.
func IsSandboxGone(err error) bool { return errors.Is(err, errSandboxGone) }

// Place streams a tar of files (as the place mode reads) into the sandbox.
func (a *Agent) Place(tarball io.Reader) error {
	if a.phase != phaseIdle {
		return fmt.Errorf("placing files: the agent is not idle")
	}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := io.ReadFull(tarball, buf)
		if n > 0 {
			if err := a.w.write(framePlace, buf[:n]); err != nil {
				return fmt.Errorf("placing files: %w", err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("placing files: %w", rerr)
		}
	}
	if err := a.w.write(framePlaceEnd, nil); err != nil {
		return fmt.Errorf("placing files: %w", err)
	}
	a.phase = phasePlacing
	_, p, err := a.next()
	if err != nil {
		return fmt.Errorf("placing files: %w", err)
	}
	if len(p) > 0 {
		return fmt.Errorf("placing files: %s", p)
	}
	return nil
}

// Run starts req, streams stdin to it and its output to stdout and
// stderr, and returns how it ended. onStart gets the command's pid inside
// the sandbox, once. If the sandbox is killed meanwhile, Run returns an
// error for which IsSandboxGone is true; if it sends anything out of
// order, one for which IsProtocolError is true.
func (a *Agent) Run(req Request, stdin io.Reader, stdout, stderr io.Writer, onStart func(pid int)) (Exit, time.Duration, error) {
	if a.phase != phaseIdle {
		return Exit{}, 0, fmt.Errorf("starting the command: the agent is not idle")
	}
	typ, js := byte(frameCompact), []byte(nil)
	if a.compact {
		js = encodeCompact(req)
	} else {
		b, err := json.Marshal(req)
		if err != nil {
			return Exit{}, 0, err
		}
		typ, js = frameRun, b
	}
	begin := time.Now()
	a.exited = false
	if err := a.w.write(typ, js); err != nil {
		a.phase = phaseDone
		return Exit{}, 0, fmt.Errorf("starting the command: %w", errSandboxGone)
	}
	a.phase = phaseStarting
	for {
		typ, p, err := a.next()
		if err != nil {
			return Exit{}, time.Since(begin), err
		}
		switch typ {
		case frameStarted:
			pid := binary.BigEndian.Uint32(p)
			if pid == 0 || pid > 1<<22 { // PID_MAX_LIMIT
				a.phase = phaseDone
				return Exit{}, time.Since(begin), protoErr("pid %d", pid)
			}
			a.pid.Store(int32(pid))
			a.fed = make(chan struct{})
			go a.feed(own(stdin), a.fed)
			if onStart != nil {
				onStart(int(pid))
			}
		case frameError:
			return Exit{}, 0, fmt.Errorf("%s", p)
		default:
			if x, done, err := output(typ, p, stdout, stderr); done {
				a.exited = err == nil
				return x, time.Since(begin), err
			}
		}
	}
}

// output handles a frame of a running command: its output goes to stdout
// or stderr; its exit report ends the run (done).
func output(typ byte, p []byte, stdout, stderr io.Writer) (x Exit, done bool, err error) {
	switch typ {
	case frameStdout, frameStderr:
		w := stdout
		if typ == frameStderr {
			w = stderr
		}
		if w != nil {
			_, _ = w.Write(p)
		}
	case frameExit:
		if err := json.Unmarshal(p, &x); err != nil || !x.valid() {
			return Exit{}, true, protoErr("bad exit report")
		}
		return x, true, nil
	}
	return Exit{}, false, nil
}

// own returns a reader of stdin that stays open when the caller closes
// its file (callers may, once the command has started).
func own(stdin io.Reader) io.Reader {
	if f, ok := stdin.(*os.File); ok {
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			return nil
		}
		return os.NewFile(uintptr(fd), "stdin")
	}
	return stdin
}

// feed copies stdin to the command until it ends or the sandbox goes.
func (a *Agent) feed(stdin io.Reader, fed chan<- struct{}) {
	defer close(fed)
	if f, ok := stdin.(*os.File); ok {
		defer f.Close()
	}
	if stdin != nil {
		buf := make([]byte, 32<<10)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				if a.w.write(frameStdin, buf[:n]) != nil {
					return
				}
			}
			if err != nil {
				break
			}
		}
	}
	_ = a.w.write(frameStdinEOF, nil)
}

// Signal sends sig to the running command.
func (a *Agent) Signal(sig syscall.Signal) error {
	if sig <= 0 || sig > 64 {
		return fmt.Errorf("signal %d out of range", sig)
	}
	// The frame names the command it is for: a signal that arrives after
	// its command exited and the sandbox went on to the next one (see
	// Continue) is dropped by the init, not delivered to that next command.
	b := []byte{byte(sig), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(a.pid.Load()))
	return a.w.write(frameSignal, b)
}
