package engine

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
)

// testOp inserts a PENDING operation into a fresh store (real SQLite) and
// returns its lifecycle, with a live event log as startOp opens it.
func testOp(t *testing.T, kind string) (*op, *store.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "arbor.db")
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	row := store.Operation{UUID: newID(), Account: acct, Kind: kind, Status: apitypes.StatusPending, CreatedAt: time.Now(), Metadata: "{}"}
	if err := st.InsertOperationLimited(context.Background(), row, 10); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	h := newEventHub(st, log)
	h.open(row.UUID, 0)
	return &op{id: row.UUID, account: acct, kind: kind, begun: time.Now(), metadata: row.Metadata,
		st: st, events: h, log: log, cancel: func(error) {}}, st, path
}

// execSQL runs statements on the database at path through a connection of
// its own: a way to inject real failures (triggers) under a running store.
func execSQL(t *testing.T, path, q string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(q); err != nil {
		t.Fatal(err)
	}
}

func TestOpTransitions(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		path []opState // moves from PENDING
		ok   bool      // whether the last one is legal
	}{
		{[]opState{opAssigned}, true},
		{[]opState{opExecuting}, true}, // ASSIGNED is optional (imports)
		{[]opState{opAssigned, opExecuting}, true},
		{[]opState{opPending}, false}, // no move in place
		{[]opState{opExecuting, opAssigned}, false},
		{[]opState{opAssigned, opPending}, false},
		{[]opState{opSuccess}, false}, // terminal states are reached by finish only
	} {
		t.Run(fmt.Sprint(tc.path), func(t *testing.T) {
			o, st, _ := testOp(t, apitypes.KindInstance)
			for i, s := range tc.path {
				err := o.to(ctx, s)
				last := i == len(tc.path)-1
				if !last || tc.ok {
					if err != nil {
						t.Fatalf("move to %s: %v", s, err)
					}
					continue
				}
				var te *transitionError
				if !errors.As(err, &te) || !errors.Is(err, errdefs.ErrFailedPrecondition) {
					t.Fatalf("illegal move to %s = %v, want a transition error", s, err)
				}
			}
			row, err := st.Operation(ctx, acct, o.id)
			if err != nil {
				t.Fatal(err)
			}
			if row.Status != o.current().String() {
				t.Errorf("stored status %s, lifecycle says %s", row.Status, o.current())
			}
		})
	}

	// A finished operation moves nowhere, and the refusal writes nothing:
	// with the store closed, a write would fail differently.
	o, st, _ := testOp(t, apitypes.KindInstance)
	if err := o.finish(ctx, outcome{state: opCancelled, err: "cancelled by request"}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	var te *transitionError
	if err := o.to(ctx, opExecuting); !errors.As(err, &te) {
		t.Fatalf("move after the end = %v, want a transition error", err)
	}
}

// TestOpFinishesOnce finishes an operation, closes its store, and finishes
// it again: the second finish is refused before any write (a write would
// fail on the closed store), and the record is the first one's.
func TestOpFinishesOnce(t *testing.T) {
	ctx := context.Background()
	o, st, path := testOp(t, apitypes.KindImageImport)
	if err := o.to(ctx, opExecuting); err != nil {
		t.Fatal(err)
	}
	if err := o.finish(ctx, outcome{state: opSuccess, result: "r"}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	err := o.finish(ctx, failed("late"))
	if !errors.Is(err, errOpFinished) {
		t.Fatalf("second finish = %v, want errOpFinished without touching the store", err)
	}
	o.end(failed("later")) // what startOp does when work returns: quiet, no write

	st2, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	row, _ := st2.Operation(ctx, acct, o.id)
	if row.Status != apitypes.StatusSuccess || row.ResultImageUUID != "r" || row.Error != "" {
		t.Errorf("stored %s result %q error %q, want the first finish's SUCCESS/r", row.Status, row.ResultImageUUID, row.Error)
	}
	evs, _ := st2.Events(ctx, o.id, -1, 0)
	if len(evs) != 1 || evs[0].Type != apitypes.EventCompletion {
		t.Errorf("events %+v, want one completion", evs)
	}
}

// TestOpConcurrentFinishes races finishes: exactly one is recorded.
func TestOpConcurrentFinishes(t *testing.T) {
	ctx := context.Background()
	o, st, _ := testOp(t, apitypes.KindInstance)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = o.finish(ctx, failed(fmt.Sprint("attempt ", i))) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, errOpFinished):
			t.Fatalf("finish = %v", err)
		}
	}
	evs, _ := st.Events(ctx, o.id, -1, 0)
	if won != 1 || len(evs) != 1 {
		t.Fatalf("%d finishes recorded, %d events; want 1 and 1", won, len(evs))
	}
}

// TestOpEndRecordsFinishFailure makes the store refuse the operation's
// SUCCESS (a trigger: a real constraint violation): the failure is logged
// with the operation's id and the operation ends FAILED saying why.
func TestOpEndRecordsFinishFailure(t *testing.T) {
	ctx := context.Background()
	o, st, path := testOp(t, apitypes.KindImageImport)
	var logs bytes.Buffer
	o.log = slog.New(slog.NewTextHandler(&logs, nil))
	execSQL(t, path, `CREATE TRIGGER refuse_success BEFORE UPDATE OF status ON operations WHEN NEW.status = 'SUCCESS'
		BEGIN SELECT RAISE(ABORT, 'injected: no SUCCESS'); END`)
	if err := o.to(ctx, opExecuting); err != nil {
		t.Fatal(err)
	}
	o.end(outcome{state: opSuccess, result: "r"})
	row, _ := st.Operation(ctx, acct, o.id)
	if row.Status != apitypes.StatusFailed || !strings.Contains(row.Error, "injected: no SUCCESS") || row.ResultImageUUID != "" {
		t.Errorf("stored %s error %q result %q, want FAILED with the store's reason and no result", row.Status, row.Error, row.ResultImageUUID)
	}
	if o.current() != opFailed {
		t.Errorf("lifecycle state %s, want FAILED", o.current())
	}
	if !strings.Contains(logs.String(), "operation="+o.id) || !strings.Contains(logs.String(), "injected") {
		t.Errorf("log lacks the operation id or the cause:\n%s", logs.String())
	}
	evs, _ := st.Events(ctx, o.id, -1, 0)
	if len(evs) != 1 || evs[0].Type != apitypes.EventCompletion || !strings.Contains(evs[0].Data, `"FAILED"`) {
		t.Errorf("events %+v, want one FAILED completion", evs)
	}
}

// TestEventLogAfterCompletion: the completion takes the next id after the
// events before it, and events appended later come after it, so a replay
// shows what followers saw.
func TestEventLogAfterCompletion(t *testing.T) {
	ctx := context.Background()
	o, st, _ := testOp(t, apitypes.KindInstance)
	for range 3 {
		if err := o.events.append(ctx, o.id, 1, apitypes.EventStdout, apitypes.EventDataStream{Value: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.finish(ctx, outcome{state: opSuccess}); err != nil {
		t.Fatal(err)
	}
	if err := o.events.append(ctx, o.id, 2, apitypes.EventExit, apitypes.EventDataExit{}); err != nil {
		t.Fatal(err)
	}
	evs, _ := st.Events(ctx, o.id, -1, 0)
	var types []string
	for i, ev := range evs {
		if ev.ID != int64(i) {
			t.Fatalf("event %d has id %d", i, ev.ID)
		}
		types = append(types, ev.Type)
	}
	if got := strings.Join(types, ","); got != "stdout,stdout,stdout,completion,exit" {
		t.Fatalf("log %s", got)
	}
}
