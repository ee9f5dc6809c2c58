package initproc

import (
	"context"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// Quiesce prepares a checkpoint of the sandbox: it holds every further
// write to the init (stdin, signals) and waits until the init has read
// all it was sent, so the checkpointed init holds no partial frame that
// the copies' pipes would never complete. Call release once the
// checkpoint is written.
func (a *Agent) Quiesce(ctx context.Context) (release func(), err error) {
	a.w.mu.Lock()
	for a.toInit != nil {
		n, err := unix.IoctlGetInt(int(a.toInit.Fd()), unix.TIOCINQ) // FIONREAD
		if err != nil {
			a.w.mu.Unlock()
			return nil, fmt.Errorf("bytes queued to the init: %w", err)
		}
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			a.w.mu.Unlock()
			return nil, fmt.Errorf("the init did not read its input (%d bytes queued): %w", n, context.Cause(ctx))
		case <-time.After(5 * time.Millisecond):
		}
	}
	return a.w.mu.Unlock, nil
}

// Attach is Run for a restored copy of a sandbox whose init was running a
// command when it was checkpointed: the command runs already, so Attach
// sends nothing but stdin, and reports its output and exit as Run does.
// The agent's pipes must be the ones given to the restored sandbox.
// onStart is called once stdin is being fed (the caller may close its
// file then).
func (a *Agent) Attach(stdin io.Reader, stdout, stderr io.Writer, onStart func()) (Exit, time.Duration, error) {
	if a.phase != phaseIdle {
		return Exit{}, 0, fmt.Errorf("attaching to the command: the agent is not idle")
	}
	begin := time.Now()
	a.phase = phaseRunning
	a.fed = make(chan struct{})
	go a.feed(own(stdin), a.fed)
	if onStart != nil {
		onStart()
	}
	for {
		typ, p, err := a.next()
		if err != nil {
			return Exit{}, time.Since(begin), err
		}
		if x, done, err := output(typ, p, stdout, stderr); done { // phaseRunning admits only output and exit
			a.exited = err == nil
			return x, time.Since(begin), err
		}
	}
}
