package mcp

import (
	"context"
	"strings"
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

// testSendInput drives a long-running instance through MCP alone: run
// keep_stdin=true starts it, send_input talks to it, fork_instance with
// pause_parent copies it, the copy takes its own input, a CONT through
// send_input resumes the original, close=true ends the copy.
func testSendInput(t *testing.T, s *session) {
	var run RunOut
	s.call(t, "run", map[string]any{"image": "busybox:latest", "runtime": "runsc", "keep_stdin": true, "stdin": "a\n", "disposable": true,
		"command": `i=0; while read l; do i=$((i+1)); echo "$l $i"; done`}, &run)
	if run.OperationID == "" || run.Done || !strings.Contains(run.Next, "send_input") {
		t.Fatalf("run keep_stdin = %+v, want a running instance and send_input next", run)
	}
	op := run.OperationID
	say := func(op string, args map[string]any) SendInputOut {
		t.Helper()
		args["operation_id"], args["timeout"] = op, 60
		var out SendInputOut
		s.call(t, "send_input", args, &out)
		return out
	}
	if out := say(op, map[string]any{"input": "b\n", "until": "b 2\n"}); !out.Matched || out.Stdout != "a 1\nb 2\n" && out.Stdout != "b 2\n" || out.Exited {
		t.Errorf("send_input b = %+v, want b 2", out)
	}
	var fork ForkOut
	s.call(t, "fork_instance", map[string]any{"operation_id": op, "pause_parent": true}, &fork)
	if len(fork.Operations) != 1 {
		t.Fatalf("fork_instance = %+v", fork)
	}
	cp := fork.Operations[0]
	if out := say(cp, map[string]any{"input": "x\n", "until": "x 3\n"}); !out.Matched || out.Stdout != "x 3\n" {
		t.Errorf("send_input to the copy = %+v, want x 3", out)
	}
	if out := say(op, map[string]any{"input": "c\n", "signal": "CONT", "until": "c 3\n"}); !out.Matched || out.Stdout != "c 3\n" {
		t.Errorf("send_input c and CONT to the paused original = %+v, want c 3", out)
	}
	if out := say(cp, map[string]any{"close": true}); !out.Exited || out.ExitCode == nil || *out.ExitCode != 0 {
		t.Errorf("send_input close=true = %+v, want the copy's exit 0", out)
	}
	s.callErr(t, "send_input", map[string]any{"operation_id": op}, "nothing to send")
	s.callErr(t, "send_input", map[string]any{"operation_id": op, "input": "x\n", "timeout": 0}, "timeout")
	s.callErr(t, "send_input", map[string]any{"operation_id": "00000000-0000-0000-0000-000000000000", "input": "x\n"}, "not found")
	var c CancelOut
	s.call(t, "cancel_operation", map[string]any{"operation_id": op}, &c)
}
