package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
)

func newQueue(t *testing.T, cfg store.QueueConfig) (*Store, *Queue) {
	t.Helper()
	s := openDSN(t, pgtest.DSN(t))
	return s, NewQueue(s, cfg)
}

func pending(t *testing.T, s *Store, id, image string) {
	t.Helper()
	o := store.Operation{UUID: id, Account: "a", Kind: "instance", Status: "PENDING", CreatedAt: time.Now(), ImageUUID: image, Metadata: "{}"}
	if err := s.InsertOperationLimited(context.Background(), o, 1<<20); err != nil {
		t.Fatal(err)
	}
}

func register(t *testing.T, q *Queue, id string, slots int) {
	t.Helper()
	if err := q.RegisterWorker(context.Background(), store.Worker{ID: id, Slots: slots}); err != nil {
		t.Fatal(err)
	}
}

func success(l store.Lease, images ...store.Image) store.Outcome {
	return store.Outcome{Operation: store.Operation{UUID: l.Op, Account: l.Account, Status: "SUCCESS", FinishedAt: time.Now(), Metadata: "{}"},
		Images: images}
}

func claim(t *testing.T, q *Queue, worker string) (store.Lease, bool) {
	t.Helper()
	l, ok, err := q.Claim(context.Background(), worker)
	if err != nil {
		t.Fatalf("Claim(%s): %v", worker, err)
	}
	return l, ok
}

// dbPast waits until the database clock has passed at.
func dbPast(t *testing.T, s *Store, at time.Time) {
	t.Helper()
	for {
		var past bool
		if err := s.pool.QueryRow(context.Background(), `SELECT clock_timestamp() > $1`, at).Scan(&past); err != nil {
			t.Fatal(err)
		}
		if past {
			return
		}
		time.Sleep(10 * time.Millisecond) // polling the database clock, the only one that decides
	}
}

// TestQueueExactlyOnce: 8 workers claim, start and complete 300
// operations concurrently; each operation is claimed once and finished
// once, and none is left.
func TestQueueExactlyOnce(t *testing.T) {
	ctx := context.Background()
	s, q := newQueue(t, store.QueueConfig{})
	const n, workers = 300, 8
	for i := range n {
		pending(t, s, fmt.Sprintf("op%03d", i), "")
	}
	var mu sync.Mutex
	claims := map[string][]string{}
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	start := time.Now()
	for w := range workers {
		id := fmt.Sprint("w", w)
		register(t, q, id, 2)
		wg.Go(func() {
			errs[w] = func() error {
				for done.Load() < n {
					l, ok, err := q.Claim(ctx, id)
					if err != nil {
						return err
					}
					if !ok {
						continue // the others hold the rest; ends when all are done
					}
					mu.Lock()
					claims[l.Op] = append(claims[l.Op], id)
					mu.Unlock()
					if err := q.Start(ctx, l); err != nil {
						return err
					}
					if err := q.Complete(ctx, l, success(l)); err != nil {
						return err
					}
					done.Add(1)
				}
				return nil
			}()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if len(claims) != n {
		t.Fatalf("%d operations claimed, want %d", len(claims), n)
	}
	for op, by := range claims {
		if len(by) != 1 {
			t.Errorf("%s claimed by %v, want one claim", op, by)
		}
	}
	stats, _, err := s.OperationStats(ctx, "a")
	if err != nil || stats["SUCCESS"] != n || len(stats) != 1 {
		t.Errorf("OperationStats = %v, %v; want %d SUCCESS and nothing else", stats, err, n)
	}
	t.Logf("%d claim+start+complete cycles by %d workers in %v (%.0f/s)", n, workers, elapsed.Round(time.Millisecond), n/elapsed.Seconds())
}

// TestQueueDeadWorker: a worker claims 4 operations, starts 2 and stops
// heartbeating. Nothing is reaped while its leases hold; once they expire
// (by the database clock) its late completion is refused even before the
// reaper runs; the reaper requeues the 2 not started, which another
// worker then completes, and fails the 2 started with the reason and a
// completion event. The zombie's heartbeat, start and completion are all
// refused afterwards, and nothing it did shows.
func TestQueueDeadWorker(t *testing.T) {
	ctx := context.Background()
	const ttl = time.Second
	s, q := newQueue(t, store.QueueConfig{LeaseTTL: ttl})
	for i := range 4 {
		pending(t, s, fmt.Sprint("op", i), "")
	}
	register(t, q, "dead", 4)
	register(t, q, "live", 4)
	var held []store.Lease
	for range 4 {
		l, ok := claim(t, q, "dead")
		if !ok {
			t.Fatal("the dead worker could not claim its 4 operations")
		}
		held = append(held, l)
	}
	claimed := time.Now()
	for _, l := range held[:2] {
		if err := q.Start(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	completion := func(o store.Operation) store.Event {
		return store.Event{TS: time.Now(), Type: "completion", Data: fmt.Sprintf(`{"status":%q,"error":%q}`, o.Status, o.Error)}
	}
	if rq, fl, err := q.Reap(ctx, completion); err != nil || len(rq)+len(fl) != 0 {
		t.Fatalf("Reap while the leases hold = %v, %v, %v; want nothing", rq, fl, err)
	}
	latest := held[0].Expires
	for _, l := range held {
		if l.Expires.After(latest) {
			latest = l.Expires
		}
	}
	dbPast(t, s, latest)
	// Expired but not yet reaped: the lease is already lost.
	if err := q.Complete(ctx, held[0], success(held[0])); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Complete after the lease expired = %v, want the lease lost", err)
	}
	rq, fl, err := q.Reap(ctx, completion)
	reaped := time.Since(claimed)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rq)
	slices.Sort(fl)
	if !slices.Equal(rq, []string{held[2].Op, held[3].Op}) || !slices.Equal(fl, []string{held[0].Op, held[1].Op}) {
		t.Fatalf("Reap = requeued %v, failed %v; want the 2 not started requeued, the 2 started failed", rq, fl)
	}
	if reaped > ttl+time.Second {
		t.Errorf("reaped %v after the claim, want within the lease (%v) and a second", reaped, ttl)
	}
	if rq, fl, err := q.Reap(ctx, completion); err != nil || len(rq)+len(fl) != 0 {
		t.Errorf("a second Reap = %v, %v, %v; want nothing (idempotent)", rq, fl, err)
	}
	for _, l := range held[:2] {
		o, _ := s.Operation(ctx, "a", l.Op)
		if o.Status != "FAILED" || !strings.Contains(o.Error, "worker dead stopped renewing its lease") || o.FinishedAt.IsZero() {
			t.Errorf("started operation %s after reaping: %s %q", l.Op, o.Status, o.Error)
		}
		evs, _ := s.Events(ctx, l.Op, -1, 0)
		if len(evs) != 1 || evs[0].Type != "completion" || !strings.Contains(evs[0].Data, "FAILED") {
			t.Errorf("events of failed %s = %+v, want its completion", l.Op, evs)
		}
	}
	// The live worker (heartbeating) takes over what had not started: a
	// new epoch.
	if _, err := q.Heartbeat(ctx, "live", nil); err != nil {
		t.Fatal(err)
	}
	var again []store.Lease
	for range 2 {
		l, ok := claim(t, q, "live")
		if !ok {
			t.Fatal("the live worker found no requeued operation")
		}
		if l.Attempt != 2 || l.Epoch != 2 {
			t.Errorf("reclaimed %s: attempt %d, epoch %d; want 2 and 2", l.Op, l.Attempt, l.Epoch)
		}
		again = append(again, l)
	}
	if _, ok := claim(t, q, "live"); ok {
		t.Error("a third operation was claimable")
	}
	// The zombie comes back: everything it tries is refused.
	if kept, err := q.Heartbeat(ctx, "dead", held); err != nil || len(kept) != 0 {
		t.Errorf("zombie Heartbeat kept %v, %v; want no lease", kept, err)
	}
	for _, l := range held {
		if err := q.Start(ctx, l); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("zombie Start(%s) = %v, want the lease lost", l.Op, err)
		}
		out := success(l, store.Image{UUID: "zombie-" + l.Op, Account: "a", Layer: "z", Depth: 1, CreatedAt: time.Now()})
		if err := q.Complete(ctx, l, out); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("zombie Complete(%s) = %v, want the lease lost", l.Op, err)
		}
		if _, err := s.ImageAny(ctx, "zombie-"+l.Op); !errdefs.IsNotFound(err) {
			t.Errorf("the zombie's image for %s was written: %v", l.Op, err)
		}
	}
	if kept, err := q.Heartbeat(ctx, "live", again); err != nil || len(kept) != 2 {
		t.Fatalf("live Heartbeat kept %v, %v; want its 2 leases", kept, err)
	}
	for _, l := range again {
		if err := q.Complete(ctx, l, success(l)); err != nil {
			t.Fatalf("live Complete(%s): %v", l.Op, err)
		}
	}
	stats, _, _ := s.OperationStats(ctx, "a")
	if stats["SUCCESS"] != 2 || stats["FAILED"] != 2 || len(stats) != 2 {
		t.Errorf("OperationStats = %v, want 2 SUCCESS (by the live worker) and 2 FAILED", stats)
	}
}

// TestQueueHeartbeatKeepsLease: a worker that heartbeats keeps its lease
// past the first TTL; an unknown worker cannot heartbeat.
func TestQueueHeartbeatKeepsLease(t *testing.T) {
	ctx := context.Background()
	const ttl = 600 * time.Millisecond
	s, q := newQueue(t, store.QueueConfig{LeaseTTL: ttl})
	pending(t, s, "op", "")
	register(t, q, "w", 1)
	l, ok := claim(t, q, "w")
	if !ok {
		t.Fatal("nothing claimed")
	}
	first := l.Expires
	for !l.Expires.After(first.Add(ttl)) {
		kept, err := q.Heartbeat(ctx, "w", []store.Lease{l})
		if err != nil || len(kept) != 1 {
			t.Fatalf("Heartbeat = %v, %v; want the lease kept", kept, err)
		}
		l = kept[0]
		if rq, fl, err := q.Reap(ctx, nil); err != nil || len(rq)+len(fl) != 0 {
			t.Fatalf("Reap of a renewed lease = %v, %v, %v", rq, fl, err)
		}
		time.Sleep(ttl / 4) // a worker's heartbeat period
	}
	if err := q.Complete(ctx, l, success(l)); err != nil {
		t.Fatalf("Complete after renewals past the first TTL: %v", err)
	}
	_, err := q.Heartbeat(ctx, "ghost", nil)
	if !errdefs.IsNotFound(err) {
		t.Errorf("Heartbeat(unregistered) = %v, want not found", err)
	}
}

// TestQueueCapacity: a worker never holds more leases than its slots; an
// unregistered one cannot claim.
func TestQueueCapacity(t *testing.T) {
	ctx := context.Background()
	s, q := newQueue(t, store.QueueConfig{})
	for i := range 3 {
		pending(t, s, fmt.Sprint("op", i), "")
	}
	register(t, q, "w", 1)
	l, ok := claim(t, q, "w")
	if !ok {
		t.Fatal("nothing claimed")
	}
	if _, ok := claim(t, q, "w"); ok {
		t.Fatal("a worker with 1 slot claimed a second operation")
	}
	if err := q.Complete(ctx, l, success(l)); err != nil {
		t.Fatal(err)
	}
	if _, ok := claim(t, q, "w"); !ok {
		t.Fatal("the freed slot claimed nothing")
	}
	if _, _, err := q.Claim(ctx, "ghost"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Claim(unregistered) = %v, want a failed precondition", err)
	}
	if err := q.RegisterWorker(ctx, store.Worker{ID: "w0"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("RegisterWorker(0 slots) = %v, want invalid argument", err)
	}
	ws, err := q.Workers(ctx)
	if err != nil || len(ws) != 1 || ws[0].ID != "w" || ws[0].Slots != 1 || !ws[0].Alive {
		t.Errorf("Workers = %+v, %v", ws, err)
	}
}

// TestQueueLocality: a step on an image goes to the worker that made the
// image while it waits LocalityWait; after that, or when the maker is
// dead, any worker takes it.
func TestQueueLocality(t *testing.T) {
	ctx := context.Background()
	const wait, ttl = 700 * time.Millisecond, time.Second
	s, q := newQueue(t, store.QueueConfig{LocalityWait: wait, LeaseTTL: ttl})
	register(t, q, "maker", 4)
	register(t, q, "other", 4)
	pending(t, s, "make", "")
	l, ok := claim(t, q, "maker")
	if !ok {
		t.Fatal("nothing claimed")
	}
	x := store.Image{UUID: "x", Account: "a", Layer: "lx", Depth: 1, CreatedAt: time.Now(), Operation: "make"}
	if err := q.Complete(ctx, l, success(l, x)); err != nil {
		t.Fatal(err)
	}

	pending(t, s, "step1", "x")
	if l, ok := claim(t, q, "other"); ok {
		t.Fatalf("other claimed %s, a step on maker's image, within the locality wait", l.Op)
	}
	if l, ok := claim(t, q, "maker"); !ok || l.Op != "step1" {
		t.Fatalf("maker claimed %+v, %v; want step1", l, ok)
	}

	pending(t, s, "step2", "x")
	queued := time.Now()
	for {
		l, ok := claim(t, q, "other")
		if ok {
			if l.Op != "step2" {
				t.Fatalf("other claimed %s, want step2", l.Op)
			}
			break
		}
		time.Sleep(20 * time.Millisecond) // an idle worker's poll
	}
	if waited := time.Since(queued); waited < wait-50*time.Millisecond {
		t.Errorf("other took step2 after %v, before the locality wait of %v", waited, wait)
	}

	// A dead maker holds nothing back.
	var dead bool
	for !dead {
		if err := q.RegisterWorker(ctx, store.Worker{ID: "other", Slots: 4}); err != nil {
			t.Fatal(err)
		}
		ws, err := q.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dead = !ws[slices.IndexFunc(ws, func(w store.Worker) bool { return w.ID == "maker" })].Alive
		time.Sleep(50 * time.Millisecond) // until maker's heartbeat is a TTL old
	}
	pending(t, s, "step3", "x")
	if l, ok := claim(t, q, "other"); !ok || l.Op != "step3" {
		t.Errorf("with the maker dead, other claimed %+v, %v; want step3 at once", l, ok)
	}
}

// TestQueueReapersRace: reapers on several nodes at once end each expired
// lease once: every operation is requeued or failed by exactly one of
// them, and a failed one gets exactly one completion event.
func TestQueueReapersRace(t *testing.T) {
	ctx := context.Background()
	const n, reapers = 24, 6
	s, q := newQueue(t, store.QueueConfig{LeaseTTL: 500 * time.Millisecond})
	for i := range n {
		pending(t, s, fmt.Sprintf("op%02d", i), "")
	}
	register(t, q, "dead", n)
	var latest time.Time
	for i := range n {
		l, ok := claim(t, q, "dead")
		if !ok {
			t.Fatal("claim failed")
		}
		if i%2 == 0 {
			if err := q.Start(ctx, l); err != nil {
				t.Fatal(err)
			}
		}
		if l.Expires.After(latest) {
			latest = l.Expires
		}
	}
	dbPast(t, s, latest)
	completion := func(o store.Operation) store.Event {
		return store.Event{TS: time.Now(), Type: "completion", Data: "{}"}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	errs := make([]error, reapers)
	start := make(chan struct{})
	for r := range reapers {
		wg.Go(func() {
			<-start
			rq, fl, err := q.Reap(ctx, completion)
			errs[r] = err
			mu.Lock()
			defer mu.Unlock()
			for _, id := range append(rq, fl...) {
				seen[id]++
			}
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Errorf("%d operations reaped, want %d", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("%s reaped %d times", id, k)
		}
	}
	stats, _, _ := s.OperationStats(ctx, "a")
	if stats["PENDING"] != n/2 || stats["FAILED"] != n/2 {
		t.Errorf("OperationStats = %v, want %d PENDING and %d FAILED", stats, n/2, n/2)
	}
	for i := 0; i < n; i += 2 {
		if evs, _ := s.Events(ctx, fmt.Sprintf("op%02d", i), -1, 0); len(evs) != 1 {
			t.Errorf("op%02d has %d completion events, want 1", i, len(evs))
		}
	}
}

// TestQueueGivesUp: an operation whose claims keep expiring before it
// starts is requeued MaxAttempts-1 times, then failed with the reason.
func TestQueueGivesUp(t *testing.T) {
	ctx := context.Background()
	s, q := newQueue(t, store.QueueConfig{LeaseTTL: 300 * time.Millisecond, MaxAttempts: 2})
	pending(t, s, "op", "")
	for attempt := 1; attempt <= 2; attempt++ {
		register(t, q, "flaky", 1) // a restart under the same ID: a heartbeat, no leases
		l, ok := claim(t, q, "flaky")
		if !ok || l.Attempt != attempt {
			t.Fatalf("claim %d = %+v, %v", attempt, l, ok)
		}
		dbPast(t, s, l.Expires)
		rq, fl, err := q.Reap(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"op"}; attempt == 1 && !slices.Equal(rq, want) || attempt == 2 && !slices.Equal(fl, want) {
			t.Fatalf("Reap after claim %d = requeued %v, failed %v", attempt, rq, fl)
		}
	}
	o, _ := s.Operation(ctx, "a", "op")
	if o.Status != "FAILED" || !strings.Contains(o.Error, "claimed 2 times") {
		t.Errorf("after 2 lost claims: %s %q, want FAILED saying why", o.Status, o.Error)
	}
}
