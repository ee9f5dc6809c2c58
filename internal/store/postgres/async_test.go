package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
)

// TestCommitsThatWaitForTheDisk: on a server with the durable defaults, a
// run's insert, claim and outcome commit waiting for the WAL flush; its
// start, its events, heartbeats and layer holds do not, and a claim that finds nothing
// commits nothing. (The probe sees transactions that write rows, so not a
// NOTIFY alone.)
func TestCommitsThatWaitForTheDisk(t *testing.T) {
	cl := pgtest.NewCluster(t)
	ctx := context.Background()
	s := openDSN(t, cl.DSN())
	q := NewQueue(s, store.QueueConfig{})
	register(t, q, "w", 2)
	g := s.LayerGuard("n", 0, nil)
	pgtest.InstallCommitProbe(t, cl.DSN())
	type step struct {
		what string
		do   func() error
		want string // "sync:tables", "async:tables", or "" for no commit
	}
	var l store.Lease
	steps := []step{
		{"insert", func() error {
			return q.InsertQueued(ctx, store.Operation{UUID: "op", Account: "a", Kind: "instance", Status: "PENDING", CreatedAt: time.Now(), Metadata: "{}"}, 10, []byte("{}"))
		}, "sync:operations"},
		{"claim", func() error {
			var ok bool
			var err error
			l, ok, err = q.Claim(ctx, "w")
			if err == nil && !ok {
				err = fmt.Errorf("nothing claimed")
			}
			return err
		}, "sync:operations"},
		{"empty claim", func() error { _, _, err := q.Claim(ctx, "w"); return err }, ""},
		{"start", func() error { return q.Start(ctx, l) }, "async:operations"},
		{"event", func() error {
			return s.AppendEvent(ctx, "op", store.Event{ID: 0, TS: time.Now(), Type: "init", Data: "{}"})
		}, "async:events"},
		{"heartbeat", func() error { _, err := q.Heartbeat(ctx, "w", []store.Lease{l}); return err }, "async:operations+workers"},
		{"outcome", func() error {
			out := success(l)
			out.Completion = store.Event{ID: 1, TS: time.Now(), Type: "completion", Data: "{}"}
			return q.Complete(ctx, l, out)
		}, "sync:events+operations"},
		// A layer hold (a run's chain, a layer being committed), its
		// renewal and release: see the reasoning in async.go.
		{"layer hold", func() error { _, err := g.Hold(ctx, []string{"l1", "l2"}); return err }, "async:layer_holds"},
		{"hold renewal", func() error { _, err := g.Renew(ctx); return err }, "async:layer_holds"},
		{"hold release", func() error { return g.Release(ctx, []string{"l1", "l2"}) }, "async:layer_holds"},
	}
	for _, st := range steps {
		x0 := currentXid(t, s)
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.what, err)
		}
		if st.want == "" {
			// No row written: no transaction in between may have committed
			// either (a row lock alone writes WAL and a commit record).
			if n := committedSince(t, s, x0); n != 0 {
				t.Errorf("%s committed %d transactions, want none", st.what, n)
			}
		}
		var got []string
		for _, c := range pgtest.Commits(t, cl.DSN()) {
			mode := "async"
			if c.Sync {
				mode = "sync"
			}
			got = append(got, mode+":"+strings.Join(c.Tables, "+"))
		}
		want := []string{}
		if st.want != "" {
			want = []string{st.want}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s committed %v, want %v", st.what, got, want)
		}
	}
}

// TestOutcomeRedoesLostEvents: events written asynchronously that a crash
// lost (deleted here, as a crash would) are written again, as they were,
// by their operation's outcome, which also makes every earlier one durable.
func TestOutcomeRedoesLostEvents(t *testing.T) {
	ctx := context.Background()
	s := openDSN(t, pgtest.DSN(t))
	for _, op := range []string{"op", "other"} {
		pending(t, s, op, "")
		for i := range 3 {
			must(t, s.AppendEvent(ctx, op, store.Event{ID: int64(i), TS: time.Now(), Spid: 1, Type: "stdout", Data: fmt.Sprintf(`{"n":%d}`, i)}))
		}
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM events WHERE id >= 1`); err != nil {
		t.Fatal(err)
	}
	must(t, s.AppendEvent(ctx, "op", store.Event{ID: 3, TS: time.Now(), Spid: 1, Type: "stdout", Data: `{"n":3}`}))
	must(t, s.FinishOperation(ctx, store.Outcome{
		Operation:  store.Operation{UUID: "op", Account: "a", Status: "SUCCESS", FinishedAt: time.Now(), Metadata: "{}"},
		Completion: store.Event{ID: 4, TS: time.Now(), Type: "completion", Data: "{}"}}))
	evs, err := s.Events(ctx, "op", -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, fmt.Sprintf("%d %s", e.ID, e.Data))
	}
	want := []string{`0 {"n":0}`, `1 {"n":1}`, `2 {"n":2}`, `3 {"n":3}`, "4 {}"}
	if !slices.Equal(got, want) {
		t.Errorf("events after the outcome: %q, want %q", got, want)
	}
	// The outcome's durable commit made the other operation's earlier
	// events durable too; what it appends after is kept.
	must(t, s.AppendEvent(ctx, "other", store.Event{ID: 3, TS: time.Now(), Spid: 1, Type: "stdout", Data: `{"n":3}`}))
	if kept := s.redo.events("other", 10); len(kept) != 1 || kept[0].ID != 3 {
		t.Errorf("the other operation's kept events: %+v, want only the one appended after the outcome", kept)
	}
	if kept := s.redo.events("op", 10); len(kept) != 0 {
		t.Errorf("the finished operation's kept events: %d, want none", len(kept))
	}
}

// currentXid returns a new transaction ID (each call takes one).
func currentXid(t *testing.T, s *Store) uint64 {
	t.Helper()
	var x uint64
	if err := s.pool.QueryRow(context.Background(), `SELECT pg_current_xact_id()::text::bigint`).Scan(&x); err != nil {
		t.Fatal(err)
	}
	return x
}

// committedSince counts the transactions that took an ID after x0 and
// committed (the test's own currentXid calls excepted).
func committedSince(t *testing.T, s *Store, x0 uint64) int {
	t.Helper()
	x1 := currentXid(t, s)
	var n int
	err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM generate_series($1::bigint + 1, $2::bigint - 1) x
		WHERE pg_xact_status(x::text::xid8) = 'committed'`, x0, x1).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
