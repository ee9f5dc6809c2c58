package cli

import (
	"context"
	"testing"

	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// TestPsShowsQueuePosition: behind the only slot, ps shows the waiting
// runs' places in the queue, in words and in --json.
func TestPsShowsQueuePosition(t *testing.T) {
	t.Parallel()
	td := testdaemon.New(t, testdaemon.Options{Serve: serve, Busybox: "busybox:latest", Engine: engine.Config{Slots: 1}})
	d := &testDaemon{home: td.Home, url: td.URL, token: td.Token, c: td.Client, busybox: td.Busybox}
	var ops []string
	for range 3 {
		op := d.spawn(t, "sleep 60")
		t.Cleanup(func() { _ = d.c.Cancel(context.Background(), op) })
		ops = append(ops, op)
	}
	rows := okJSON[[]opRow](t, d, "ps")
	pos := map[string]int{}
	for _, r := range rows {
		pos[r.UUID] = r.QueuePosition
	}
	if pos[ops[0]] != 0 || pos[ops[1]] != 1 || pos[ops[2]] != 2 {
		t.Fatalf("ps --json queue positions %v, want none, 1, 2 for %v", pos, ops)
	}
	out := d.ok(t, "ps")
	wantContains(t, "ps", out, "PENDING (queued #1)", "PENDING (queued #2)")
}
