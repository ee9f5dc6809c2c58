package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
)

// TestFinishOperationAllOrNothing fails each statement of the finishing
// transaction in turn (a constraint violation in the real database) and
// checks that nothing of the outcome is left: no image visible, the
// operation still in flight, no completion event. Then it succeeds whole.
func TestFinishOperationAllOrNothing(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "arbor.db"))
	ctx := context.Background()
	if err := s.InsertImages(ctx, Image{UUID: "existing", Account: "a", Layer: "l0", Depth: 1, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertOperationLimited(ctx, Operation{UUID: "op", Account: "a", Kind: "image_import", Status: "PENDING", CreatedAt: time.Now(), Metadata: "{}"}, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveOperation(ctx, "op", "PENDING", "EXECUTING"); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendEvent(ctx, "op", Event{ID: 0, TS: time.Now(), Type: "progress", Data: "{}"}); err != nil {
		t.Fatal(err)
	}
	hidden := Image{UUID: "hidden", Account: "a", Layer: "l1", Depth: 1, Hidden: true, Chain: "sha256:c1", CreatedAt: time.Now()}
	top := Image{UUID: "top", Account: "a", Layer: "l2", Base: "hidden", Depth: 2, CreatedAt: time.Now()}
	outcome := func() Outcome {
		return Outcome{
			Operation:  Operation{UUID: "op", Account: "a", Status: "SUCCESS", FinishedAt: time.Now(), ResultImageUUID: "top", ResultTag: "v1", Metadata: "{}"},
			Images:     []Image{hidden, top},
			Completion: Event{ID: -1, TS: time.Now(), Type: "completion", Data: `{"status":"SUCCESS"}`},
		}
	}
	for name, spoil := range map[string]func(*Outcome){
		// The second image row collides with a stored one.
		"second image": func(o *Outcome) { o.Images[1].UUID = "existing" },
		// The result to tag is not an image of the account.
		"tag": func(o *Outcome) { o.Operation.ResultImageUUID = "missing" },
		// The completion event's id is taken: the last statement fails.
		"completion": func(o *Outcome) { o.Completion.ID = 0 },
	} {
		out := outcome()
		spoil(&out)
		if err := s.FinishOperation(ctx, out); err == nil {
			t.Fatalf("%s: FinishOperation succeeded, want the injected failure", name)
		}
		for _, u := range []string{"hidden", "top"} {
			if _, err := s.ImageAny(ctx, u); !errdefs.IsNotFound(err) {
				t.Errorf("%s failed: image %s was written (%v), want none", name, u, err)
			}
		}
		if o, _ := s.Operation(ctx, "a", "op"); o.Status != "EXECUTING" || o.ResultImageUUID != "" {
			t.Errorf("%s failed: operation %s with result %q, want EXECUTING and none", name, o.Status, o.ResultImageUUID)
		}
		if evs, _ := s.Events(ctx, "op", -1, 0); len(evs) != 1 {
			t.Errorf("%s failed: %d events, want the 1 before", name, len(evs))
		}
	}

	if err := s.FinishOperation(ctx, outcome()); err != nil {
		t.Fatal(err)
	}
	o, _ := s.Operation(ctx, "a", "op")
	im, err := s.ImageByTag(ctx, "a", "v1")
	if o.Status != "SUCCESS" || o.ResultImageUUID != "top" || err != nil || im.UUID != "top" {
		t.Fatalf("after finishing: operation %s result %q, tag v1 on %q (%v)", o.Status, o.ResultImageUUID, im.UUID, err)
	}
	evs, _ := s.Events(ctx, "op", -1, 0)
	if len(evs) != 2 || evs[1].ID != 1 || evs[1].Type != "completion" {
		t.Fatalf("events %+v, want the completion as id 1", evs)
	}

	// Finished is final: a second outcome writes nothing.
	again := outcome()
	again.Operation.Status, again.Operation.ResultImageUUID, again.Operation.ResultTag = "FAILED", "", ""
	again.Images = []Image{{UUID: "late", Account: "a", Layer: "l3", Depth: 1, CreatedAt: time.Now()}}
	if err := s.FinishOperation(ctx, again); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("second FinishOperation = %v, want a failed precondition", err)
	}
	if _, err := s.ImageAny(ctx, "late"); !errdefs.IsNotFound(err) {
		t.Errorf("the refused outcome's image was written: %v", err)
	}
	if o, _ := s.Operation(ctx, "a", "op"); o.Status != "SUCCESS" {
		t.Errorf("status %s after a refused second outcome, want SUCCESS", o.Status)
	}
	if evs, _ := s.Events(ctx, "op", -1, 0); len(evs) != 2 {
		t.Errorf("%d events after a refused second outcome, want 2", len(evs))
	}
}

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
