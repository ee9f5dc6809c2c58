package engine

import (
	"context"
	"strings"

	"github.com/arborsh/arbor/internal/oplog"

	"github.com/arborsh/arbor/internal/errdefs"
)

// Operation returns account's operation.
func (e *Engine) Operation(ctx context.Context, account, id string) (Operation, error) {
	if !IsUUID(id) {
		return Operation{}, errdefs.InvalidArgument("%q is not an operation UUID", id)
	}
	o, err := e.st.Operation(ctx, account, strings.ToLower(id))
	return e.withPosition(toOperation(o)), err
}

// ListOperations lists account's operations.
func (e *Engine) ListOperations(ctx context.Context, f OperationFilter) ([]Operation, error) {
	rs, err := e.st.ListOperations(ctx, f.row())
	out := make([]Operation, 0, len(rs))
	for _, r := range rs {
		out = append(out, e.withPosition(toOperation(r)))
	}
	return out, err
}

// WaitOperation blocks until op is terminal or ctx ends, and returns it.
// It reads no events: a live operation of this node is watched in memory
// (one store read when it ends), another node's is read again when that
// node says its log grew (or at the cluster's poll interval), and one not
// live yet (PENDING before its log opened) is polled briefly.
func (e *Engine) WaitOperation(ctx context.Context, account, op string) (Operation, error) {
	for {
		wake, remote, release := e.watchLog(op)
		o, err := e.Operation(ctx, account, op)
		if err != nil || oplog.IsTerminal(o.Status) {
			release()
			return o, err
		}
		if wake != nil {
			err = e.awaitEnd(ctx, op, wake)
		} else {
			err = e.awaitNotLive(ctx, remote, FollowOptions{})
		}
		release()
		if err != nil {
			return Operation{}, err
		}
	}
}

// awaitEnd waits, from wake (op's next event), until live operation op has
// finished or is no longer live here. Its other events (output, exits)
// wake it too, but cost only a look at its state in memory.
func (e *Engine) awaitEnd(ctx context.Context, op string, wake <-chan struct{}) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
		// The next wake-up is taken before the look at the state: an end
		// right after the look closes it.
		next := e.events.wakeup(op)
		a := e.activeOf(op)
		if next == nil || a == nil || a.op.current().terminal() {
			return nil
		}
		wake = next
	}
}

// withPosition adds a pending run's place in the admission queue.
func (e *Engine) withPosition(o Operation) Operation {
	if o.Status == oplog.StatusPending {
		o.QueuePosition = e.queue.position(o.UUID)
	}
	return o
}
