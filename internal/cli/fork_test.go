package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// liveDaemon serves a daemon with real runsc sandboxes and arbor's init
// (live instances: fork, checkpoint, expose, input), runsc by default and
// the runtimes allowed besides.
func liveDaemon(t *testing.T, allowed ...string) *testDaemon {
	t.Helper()
	init, err := testdaemon.StaticInit()
	if err != nil {
		t.Fatal(err)
	}
	td := testdaemon.New(t, testdaemon.Options{Serve: serve, Busybox: "busybox:latest",
		Engine: engine.Config{Runtime: "runsc", InitBinary: init, AllowedRuntimes: allowed}})
	return &testDaemon{home: td.Home, url: td.URL, token: td.Token, c: td.Client, busybox: td.Busybox}
}

// TestFork: arbor fork prints the copies (--json the fork point too), and
// a runc instance's refusal names runsc.
func TestFork(t *testing.T) {
	d := liveDaemon(t, "runc")
	spawn := func(rt string) string {
		keep := false
		sp, err := d.c.Spawn(t.Context(), apitypes.InstanceSpawnRequest{Command: "cat", Image: d.busybox, Runtime: &rt,
			Stdin: &apitypes.ClosableStreamRepr{Value: "", Close: &keep}})
		if err != nil {
			t.Fatal(err)
		}
		return sp.UUID
	}
	op := spawn("runsc")
	res := okJSON[apitypes.ForkResponse](t, d, "fork", "-n", "2", op[:8])
	if len(res.Operations) != 2 || res.Image == "" {
		t.Fatalf("arbor fork --json = %+v, want 2 operations and an image", res)
	}
	out := d.ok(t, "fork", op)
	if ids := strings.Fields(out); len(ids) != 1 || len(ids[0]) != 36 {
		t.Errorf("arbor fork printed %q, want one operation id", out)
	}
	d.ok(t, append(append([]string{"cancel", op}, res.Operations...), strings.Fields(out)...)...)
	runc := spawn("runc")
	r := d.arbor(t, "fork", runc)
	if r.code == 0 || !strings.Contains(r.stderr, "runsc") {
		t.Errorf("arbor fork of a runc instance: %v; want a failure naming runsc", r)
	}
	d.ok(t, "cancel", runc)
}

// TestInstanceInput: the CLI alone drives a live instance: run
// --keep-stdin starts it and prints its id, input writes lines to it, fork
// --pause-parent copies it, the copy takes its own input and ends on
// --close, --signal CONT resumes the original.
func TestInstanceInput(t *testing.T) {
	d := liveDaemon(t)
	op := strings.TrimSpace(d.ok(t, "run", "--keep-stdin", "--disposable", "--image", "busybox:latest", "--shell", "--",
		`i=0; while read l; do i=$((i+1)); echo "$l $i"; done`))
	if len(op) != 36 {
		t.Fatalf("arbor run --keep-stdin printed %q, want an operation id", op)
	}
	d.ok(t, "input", op[:8], "a")
	logs := func(op, want string) {
		t.Helper()
		var out string
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if out = d.ok(t, "logs", op); out == want {
				return
			}
		}
		t.Fatalf("arbor logs %s = %q, want %q", op, out, want)
	}
	logs(op, "a 1\n")
	cp := strings.TrimSpace(d.ok(t, "fork", "--pause-parent", op))
	d.ok(t, "input", "--close", cp, "x")
	if res, err := d.c.Wait(t.Context(), cp); err != nil || res.Status != apitypes.StatusSuccess {
		t.Fatalf("copy after input --close: %+v %v", res, err)
	}
	logs(cp, "x 2\n")
	d.ok(t, "input", op, "b") // reaches the paused original's pipe; it answers once resumed
	d.ok(t, "input", "--signal", "CONT", op)
	logs(op, "a 1\nb 2\n")
	if r := d.arbor(t, "input", op); r.code == 0 || !strings.Contains(r.stderr, "nothing to send") {
		t.Errorf("arbor input without anything to send: %v", r)
	}
	d.ok(t, "input", "--close", op)
	if res, err := d.c.Wait(t.Context(), op); err != nil || res.Status != apitypes.StatusSuccess {
		t.Fatalf("original after input --close: %+v %v", res, err)
	}
}
