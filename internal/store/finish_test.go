package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
)

// TestMoveOperationIsCompareAndSet checks that a transition applies only
// from the state it names.
func TestMoveOperationIsCompareAndSet(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "arbor.db"))
	ctx := context.Background()
	if err := s.InsertOperationLimited(ctx, Operation{UUID: "op", Account: "a", Kind: "instance", Status: "PENDING", CreatedAt: time.Now(), Metadata: "{}"}, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveOperation(ctx, "op", "ASSIGNED", "EXECUTING"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("move from a state the row is not in = %v, want a failed precondition", err)
	}
	if err := s.MoveOperation(ctx, "op", "PENDING", "ASSIGNED"); err != nil {
		t.Fatal(err)
	}
	o, _ := s.Operation(ctx, "a", "op")
	if o.Status != "ASSIGNED" || o.StartedAt.IsZero() {
		t.Fatalf("after the move: %s, started %v", o.Status, o.StartedAt)
	}
}
