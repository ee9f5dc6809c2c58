package cli

import (
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// TestFork: arbor fork prints the copies (--json the fork point too), and
// a runc instance's refusal names runsc.
func TestFork(t *testing.T) {
	init, err := testdaemon.StaticInit()
	if err != nil {
		t.Fatal(err)
	}
	td := testdaemon.New(t, testdaemon.Options{Serve: serve, Busybox: "busybox:latest",
		Engine: engine.Config{Runtime: "runsc", InitBinary: init, AllowedRuntimes: []string{"runc"}}})
	d := &testDaemon{home: td.Home, url: td.URL, token: td.Token, c: td.Client, busybox: td.Busybox}
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
