package mcp

import (
	"context"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
)

// spawnHeld starts cat under runsc with its stdin held open (a
// long-running instance).
func spawnHeld(ctx context.Context, t *testing.T, e *env) *apitypes.InstanceSpawnResponse {
	t.Helper()
	rt, keep := "runsc", false
	sp, err := e.c.Spawn(ctx, apitypes.InstanceSpawnRequest{Command: "cat", Image: e.base, Runtime: &rt, Disposable: &keep,
		Stdin: &apitypes.ClosableStreamRepr{Value: "", Close: &keep}})
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// testForkInstance forks a running runsc instance into two copies through
// the tool, and checks the errors that say what to do.
func testForkInstance(t *testing.T, e *env, s *session) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sp := spawnHeld(ctx, t, e)
	var out ForkOut
	s.call(t, "fork_instance", map[string]any{"operation_id": sp.UUID, "count": 2}, &out)
	if len(out.Operations) != 2 || out.Image == "" {
		t.Errorf("fork_instance = %+v, want 2 operations and an image", out)
	}
	for _, op := range append(out.Operations, sp.UUID) {
		if err := e.c.Cancel(ctx, op); err != nil {
			t.Errorf("cancel %s: %v", op, err)
		}
	}
	s.callErr(t, "fork_instance", map[string]any{"operation_id": sp.UUID, "count": 99}, "1 to 16")
	s.callErr(t, "fork_instance", map[string]any{"operation_id": "00000000-0000-0000-0000-000000000000"}, "not found")
}

// testSaveInstance keeps a running runsc instance through save_instance
// and starts two copies of it through restore_instance after it ended.
func testSaveInstance(t *testing.T, e *env, s *session) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sp := spawnHeld(ctx, t, e)
	var saved SaveInstanceOut
	s.call(t, "save_instance", map[string]any{"operation_id": sp.UUID}, &saved)
	if saved.Image == "" || saved.CheckpointBytes <= 0 {
		t.Fatalf("save_instance = %+v, want an image and its size", saved)
	}
	if err := e.c.Cancel(ctx, sp.UUID); err != nil {
		t.Fatal(err)
	}
	var out RestoreInstanceOut
	s.call(t, "restore_instance", map[string]any{"image": saved.Image, "count": 2}, &out)
	if len(out.Operations) != 2 {
		t.Errorf("restore_instance = %+v, want 2 operations", out)
	}
	for _, op := range out.Operations {
		if err := e.c.Cancel(ctx, op); err != nil {
			t.Errorf("cancel %s: %v", op, err)
		}
	}
	s.callErr(t, "restore_instance", map[string]any{"image": e.base}, "no memory checkpoint")
	s.callErr(t, "save_instance", map[string]any{"operation_id": "00000000-0000-0000-0000-000000000000"}, "not found")
}
