package postgres

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
)

func opRow(id string) store.Operation {
	return store.Operation{UUID: id, Account: "a", Kind: "instance", Status: "PENDING", CreatedAt: time.Now(), Metadata: "{}"}
}

// TestClusterQueuedAndLocal: a queued operation carries its request and is
// claimed; one a node runs itself is never claimed, and only that node's
// recovery sees it.
func TestClusterQueuedAndLocal(t *testing.T) {
	ctx := context.Background()
	_, q := newQueue(t, store.QueueConfig{})
	if err := q.InsertLocal(ctx, opRow("local"), 10, "api1"); err != nil {
		t.Fatal(err)
	}
	register(t, q, "w", 4)
	if l, ok := claim(t, q, "w"); ok {
		t.Fatalf("claimed %s, a node's own operation", l.Op)
	}
	if err := q.InsertQueued(ctx, opRow("queued"), 10, []byte(`{"Command":"true"}`)); err != nil {
		t.Fatal(err)
	}
	l, ok := claim(t, q, "w")
	if !ok || l.Op != "queued" {
		t.Fatalf("claim: %+v %v, want the queued operation", l, ok)
	}
	if r, err := q.Request(ctx, "queued"); err != nil || string(r) != `{"Command":"true"}` {
		t.Errorf("request: %q %v", r, err)
	}
	if _, err := q.Request(ctx, "local"); !errdefs.IsNotFound(err) {
		t.Errorf("request of a local operation: %v, want NotFound", err)
	}
	own, err := q.UnfinishedLocal(ctx, "api1")
	if err != nil || len(own) != 1 || own[0].UUID != "local" {
		t.Errorf("api1's unfinished: %+v %v", own, err)
	}
	if own, _ := q.UnfinishedLocal(ctx, "api2"); len(own) != 0 {
		t.Errorf("api2's unfinished: %+v, want none", own)
	}
	if err := q.InsertQueued(ctx, opRow("over"), 2, nil); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("third in flight with limit 2: %v, want ResourceExhausted", err)
	}
}

// TestClusterCancel: a PENDING operation is cancelled in the database at
// once; a claimed one only gets the request, which its worker reads.
func TestClusterCancel(t *testing.T) {
	ctx := context.Background()
	s, q := newQueue(t, store.QueueConfig{})
	for _, id := range []string{"p", "c"} {
		if err := q.InsertQueued(ctx, opRow(id), 10, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	register(t, q, "w", 1)
	l, ok := claim(t, q, "w")
	if !ok {
		t.Fatal("nothing claimed")
	}
	other := map[string]string{"p": "c", "c": "p"}[l.Op]
	cancelled := func(id string) store.Outcome {
		return store.Outcome{Operation: store.Operation{UUID: id, Account: "a", Status: "CANCELLED", FinishedAt: time.Now(), Metadata: "{}"},
			Completion: store.Event{ID: -1, TS: time.Now(), Type: "completion", Data: "{}"}}
	}
	if done, err := q.CancelPending(ctx, cancelled(l.Op)); err != nil || done {
		t.Errorf("cancel of the claimed operation in the database: %v %v, want not done", done, err)
	}
	if done, err := q.CancelPending(ctx, cancelled(other)); err != nil || !done {
		t.Fatalf("cancel of the pending operation: %v %v", done, err)
	}
	if o, _ := s.Operation(ctx, "a", other); o.Status != "CANCELLED" {
		t.Errorf("pending operation after its cancel: %s", o.Status)
	}
	if evs, _ := s.Events(ctx, other, -1, 0); len(evs) != 1 || evs[0].Type != "completion" {
		t.Errorf("its log: %+v, want its completion", evs)
	}
	if asked, err := q.CancelRequested(ctx, []string{l.Op}); err != nil || len(asked) != 0 {
		t.Errorf("asked before the request: %v %v", asked, err)
	}
	if in, err := q.RequestCancel(ctx, l.Op); err != nil || !in {
		t.Fatalf("request cancel: %v %v", in, err)
	}
	if asked, err := q.CancelRequested(ctx, []string{l.Op, other}); err != nil || len(asked) != 1 || asked[0] != l.Op {
		t.Errorf("asked: %v %v", asked, err)
	}
	if in, _ := q.RequestCancel(ctx, other); in {
		t.Error("a finished operation took a cancel request")
	}
}

// TestClusterSecretAndNotify: the migration made one strong secret, the
// same for every node; a notification reaches a listener with its payload,
// and worker addresses and placements read back.
func TestClusterSecretAndNotify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, q := newQueue(t, store.QueueConfig{})
	sec, err := q.Secret(ctx)
	if err != nil || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sec) {
		t.Fatalf("secret %q %v, want 64 hex digits", sec, err)
	}
	if again, _ := NewQueue(s, store.QueueConfig{}).Secret(ctx); again != sec {
		t.Error("the secret changed between reads")
	}
	ready := make(chan struct{})
	got := make(chan string, 4)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		_ = q.Listen(lctx, []string{store.ChannelEvents}, func() { close(ready) }, func(ch, p string) { got <- ch + ":" + p })
	}()
	<-ready
	if err := q.Notify(ctx, store.ChannelEvents, []string{"op1", "op2"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{store.ChannelEvents + ":op1", store.ChannelEvents + ":op2"} {
		select {
		case g := <-got:
			if g != want {
				t.Errorf("notification %q, want %q", g, want)
			}
		case <-ctx.Done():
			t.Fatal("no notification")
		}
	}
	register(t, q, "w", 1)
	if err := q.SetAddress(ctx, "w", "http://10.0.0.1:7777"); err != nil {
		t.Fatal(err)
	}
	if err := q.InsertQueued(ctx, opRow("x"), 10, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if p, err := q.Placement(ctx, "x"); err != nil || p.Status != "PENDING" || p.Worker != "" {
		t.Errorf("placement before the claim: %+v %v", p, err)
	}
	claim(t, q, "w")
	if p, err := q.Placement(ctx, "x"); err != nil || p.Worker != "w" || p.Address != "http://10.0.0.1:7777" {
		t.Errorf("placement after the claim: %+v %v", p, err)
	}
}

// TestQueuedRunPinsItsImage: a run is queued only on a live image, whose
// row then stays through a deletion and a purge until the run ends (a
// worker claims it later and needs its chain); a run queued on an image
// deleted meanwhile fails at admission.
func TestQueuedRunPinsItsImage(t *testing.T) {
	ctx := context.Background()
	s, q := newQueue(t, store.QueueConfig{})
	base := store.Image{UUID: "base", Account: "a", Layer: "l-base", Depth: 1, CreatedAt: time.Now()}
	im := store.Image{UUID: "im", Account: "a", Parent: "base", Layer: "l-im", Depth: 2, CreatedAt: time.Now()}
	for _, r := range []store.Image{base, im} {
		if err := s.InsertImage(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	o := opRow("queued")
	o.ImageUUID = "im"
	if err := q.InsertQueued(ctx, o, 10, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"im", "base"} {
		if err := s.DeleteImage(ctx, "a", u); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PurgeImages(ctx, []string{"im", "base"}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"im", "base"} {
		if _, err := s.ImageAny(ctx, u); err != nil {
			t.Errorf("image %s of a queued run after its deletion and a purge: %v", u, err)
		}
	}
	late := opRow("late")
	late.ImageUUID = "im"
	if err := q.InsertQueued(ctx, late, 10, []byte(`{}`)); !errdefs.IsNotFound(err) {
		t.Errorf("a run queued on a deleted image: %v, want NotFound at admission", err)
	}
}

// TestClaimCarriesRunAndCompleteNotifies: a claim returns what the worker
// starts the run from (the row, the queued request, the log's last event
// id), an insert wakes the workers and a completion tells the listeners
// at its commit, while one refused for a lost lease tells nobody.
func TestClaimCarriesRunAndCompleteNotifies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, q := newQueue(t, store.QueueConfig{LeaseTTL: time.Minute})
	register(t, q, "w", 2)
	got := make(chan string, 8)
	ready := make(chan struct{})
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		_ = q.Listen(lctx, []string{store.ChannelEvents, store.ChannelQueue}, func() { close(ready) }, func(ch, p string) { got <- ch + ":" + p })
	}()
	<-ready
	next := func(want string) {
		t.Helper()
		select {
		case g := <-got:
			if g != want {
				t.Errorf("notification %q, want %q", g, want)
			}
		case <-ctx.Done():
			t.Fatalf("no notification (want %q)", want)
		}
	}
	leases := map[string]store.Lease{}
	for _, tc := range []struct {
		op     string
		events int
	}{{"fresh", 0}, {"retried", 2}} {
		if err := q.InsertQueued(ctx, opRow(tc.op), 10, []byte(`{"command":"`+tc.op+`"}`)); err != nil {
			t.Fatal(err)
		}
		next(store.ChannelQueue + ":") // at the insert's commit
		for i := range tc.events {
			must(t, s.AppendEvent(ctx, tc.op, store.Event{ID: int64(i), TS: time.Now(), Type: "init", Data: "{}"}))
		}
		l, ok := claim(t, q, "w")
		if !ok {
			t.Fatalf("%s: nothing claimed", tc.op)
		}
		leases[l.Op] = l
		if l.Op != tc.op || l.Row.UUID != tc.op || l.Row.Status != "ASSIGNED" || l.Row.Kind != "instance" || l.Row.StartedAt.IsZero() {
			t.Errorf("%s: claimed %s, row %+v", tc.op, l.Op, l.Row)
		}
		if string(l.Request) != `{"command":"`+tc.op+`"}` {
			t.Errorf("%s: request %q", tc.op, l.Request)
		}
		if l.LastEvent != int64(tc.events-1) {
			t.Errorf("%s: last event %d, want %d", tc.op, l.LastEvent, tc.events-1)
		}
	}

	stale := leases["retried"]
	stale.Epoch--
	if err := q.Complete(ctx, stale, success(stale)); err == nil {
		t.Fatal("Complete under a stale epoch succeeded")
	}
	l := leases["fresh"]
	if err := q.Complete(ctx, l, success(l)); err != nil {
		t.Fatal(err)
	}
	next(store.ChannelEvents + ":fresh") // not "retried": its completion was refused
}
