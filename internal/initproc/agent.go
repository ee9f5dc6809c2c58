package initproc

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Agent is the engine's end of a sandbox whose init serves (mode "serve"):
// it places files and runs one command without a runtime process. The
// sandbox must be booted with Stdin and Stdout from [NewAgentPipes].
// An Agent serves one run: Place (optional), then Run; Signal may be called
// while Run runs. Close releases the pipes.
type Agent struct {
	toInit   *os.File
	fromInit *os.File
	w        *frameWriter
}

// AgentPipes are the sandbox's ends of an agent's pipes: pass them as the
// init's stdin and stdout at boot, then close them.
type AgentPipes struct{ Stdin, Stdout *os.File }

// Close closes the sandbox's ends (the sandbox keeps its own copies).
func (p AgentPipes) Close() {
	p.Stdin.Close()
	p.Stdout.Close()
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
	return &Agent{toInit: inW, fromInit: outR, w: &frameWriter{w: inW}}, AgentPipes{Stdin: inR, Stdout: outW}, nil
}

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
	typ, p, err := a.read()
	if err != nil {
		return fmt.Errorf("placing files: %w", err)
	}
	if typ != framePlaced {
		return fmt.Errorf("placing files: unexpected reply %q", typ)
	}
	if len(p) > 0 {
		return fmt.Errorf("placing files: %s", p)
	}
	return nil
}

// maxReply bounds what the sandbox may send in one frame; output frames
// are at most 32 KiB, the rest far smaller.
const maxReply = 1 << 20

func (a *Agent) read() (byte, []byte, error) {
	typ, p, err := readFrame(a.fromInit, maxReply)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrClosed) {
		return 0, nil, errSandboxGone
	}
	return typ, p, err
}

// Run starts req, streams stdin to it and its output to stdout and
// stderr, and returns how it ended. onStart gets the command's pid inside
// the sandbox. If the sandbox is killed meanwhile, Run returns an error
// for which IsSandboxGone is true.
func (a *Agent) Run(req Request, stdin io.Reader, stdout, stderr io.Writer, onStart func(pid int)) (Exit, time.Duration, error) {
	js, err := json.Marshal(req)
	if err != nil {
		return Exit{}, 0, err
	}
	begin := time.Now()
	if err := a.w.write(frameRun, js); err != nil {
		return Exit{}, 0, fmt.Errorf("starting the command: %w", errSandboxGone)
	}
	for {
		typ, p, err := a.read()
		if err != nil {
			return Exit{}, time.Since(begin), err
		}
		switch typ {
		case frameStarted:
			if len(p) != 4 {
				return Exit{}, 0, fmt.Errorf("bad start reply")
			}
			go a.feed(own(stdin))
			if onStart != nil {
				onStart(int(binary.BigEndian.Uint32(p)))
			}
		case frameError:
			return Exit{}, 0, fmt.Errorf("%s", p)
		case frameStdout, frameStderr:
			w := stdout
			if typ == frameStderr {
				w = stderr
			}
			if w != nil {
				_, _ = w.Write(p)
			}
		case frameExit:
			var x Exit
			if err := json.Unmarshal(p, &x); err != nil {
				return Exit{}, 0, fmt.Errorf("bad exit reply: %w", err)
			}
			return x, time.Since(begin), nil
		}
	}
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
func (a *Agent) feed(stdin io.Reader) {
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
	return a.w.write(frameSignal, []byte{byte(sig)})
}
