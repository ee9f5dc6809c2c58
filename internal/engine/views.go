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
func (e *Engine) WaitOperation(ctx context.Context, account, op string) (Operation, error) {
	err := e.FollowEvents(ctx, account, op, FollowOptions{After: -1, Follow: true}, func(Event) error { return nil })
	if err != nil {
		return Operation{}, err
	}
	return e.Operation(ctx, account, op)
}

// withPosition adds a pending run's place in the admission queue.
func (e *Engine) withPosition(o Operation) Operation {
	if o.Status == oplog.StatusPending {
		o.QueuePosition = e.queue.position(o.UUID)
	}
	return o
}
