package engine

import (
	"context"

	"github.com/arborsh/arbor/internal/errdefs"
)

// drainState is set once the daemon begins to shut down gracefully.
type drainState struct {
	reason string
	idle   chan struct{} // closed when no operation is in flight
	closed bool
}

// Drain stops admitting operations (new ones fail with ErrUnavailable
// naming reason) and waits until none is in flight or ctx ends, whichever
// comes first. Operations still running then are failed by Close.
func (e *Engine) Drain(ctx context.Context, reason string) error {
	e.mu.Lock()
	if e.drain == nil {
		e.drain = &drainState{reason: reason, idle: make(chan struct{})}
	}
	d := e.drain
	e.drainedLocked()
	e.mu.Unlock()
	select {
	case <-d.idle:
		return nil
	case <-ctx.Done():
		select {
		case <-d.idle: // idle all along: a zero timeout cuts nothing
			return nil
		default:
		}
		return ctx.Err()
	}
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
