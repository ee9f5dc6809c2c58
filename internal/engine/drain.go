package engine

import (
	"github.com/arborsh/arbor/internal/errdefs"
)

// drainState is set once the daemon begins to shut down gracefully.
type drainState struct {
	reason string
	idle   chan struct{} // closed when no operation is in flight
	closed bool
}

// Drain stops admitting operations at once (new ones fail with
// ErrUnavailable naming reason) and returns a channel closed when no
// operation is in flight. Operations still running when the caller stops
// waiting are failed by Close.
func (e *Engine) Drain(reason string) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.drain == nil {
		e.drain = &drainState{reason: reason, idle: make(chan struct{})}
	}
	e.drainedLocked()
	return e.drain.idle
}

// drainedLocked signals Drain when the last operation has left. Under e.mu.
func (e *Engine) drainedLocked() {
	if d := e.drain; d != nil && !d.closed && len(e.active) == 0 {
		d.closed = true
		close(d.idle)
	}
}

// admitting refuses new operations once Drain has begun.
func (e *Engine) admitting() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if d := e.drain; d != nil {
		return errdefs.Unavailable("daemon is shutting down (%s): it takes no new operations; retry once it is back", d.reason)
	}
	return nil
}
