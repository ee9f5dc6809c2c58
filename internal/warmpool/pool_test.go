package warmpool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// The tests drive the pool with a fake clock and a booter whose boots end
// when the test answers them; they wait on events (a boot called, a box
// destroyed, a boot recorded), never on the wall clock. patience only
// bounds a wait that would otherwise hang a broken pool.
const patience = 10 * time.Second

type box struct {
	key  string
	id   int
	dead atomic.Bool
}

// bootCall is one Boot in progress: answer it on done.
type bootCall struct {
	key  string
	ctx  context.Context
	done chan error
}

type fakeBooter struct {
	calls     chan bootCall
	destroyed chan *box
	ignoreCtx bool            // Boot waits for its answer even after ctx is done
	testDone  <-chan struct{} // ends every Boot once the test is over, so a failed test does not hang in Close
	n         atomic.Int32
}

func (f *fakeBooter) Boot(ctx context.Context, k string) (*box, error) {
	c := bootCall{key: k, ctx: ctx, done: make(chan error, 1)}
	f.calls <- c
	done := ctx.Done()
	if f.ignoreCtx {
		done = nil
	}
	var err error
	select {
	case err = <-c.done:
	case <-done:
		err = ctx.Err()
	case <-f.testDone:
		err = errors.New("test over")
	}
	if err != nil {
		return nil, err
	}
	return &box{key: k, id: int(f.n.Add(1))}, nil
}

func (f *fakeBooter) Alive(b *box) bool { return !b.dead.Load() }
func (f *fakeBooter) Destroy(b *box)    { f.destroyed <- b }

type env struct {
	p     *Pool[string, *box]
	f     *fakeBooter
	clock *clockwork.FakeClock
}

func newEnv(t *testing.T, cfg Config[string]) *env {
	t.Helper()
	e := &env{f: &fakeBooter{calls: make(chan bootCall, 64), destroyed: make(chan *box, 64), testDone: t.Context().Done()}, clock: clockwork.NewFakeClock()}
	if cfg.PerKey == 0 {
		cfg.PerKey = 2
	}
	if cfg.Max == 0 {
		cfg.Max = 8
	}
	if cfg.Idle == 0 {
		cfg.Idle = 2 * time.Minute
	}
	if cfg.Budget == 0 {
		cfg.Budget = 1
	}
	cfg.Clock = e.clock
	e.p = New(context.Background(), e.f, cfg)
	t.Cleanup(func() {
		e.clock.Advance(time.Hour) // fire what a failed test left pending, so Close cannot hang
		e.p.Close()
	})
	return e
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(patience):
		t.Fatalf("no %s within %v", what, patience)
	}
	panic("unreachable")
}

// boot waits for the next Boot call, on key.
func (e *env) boot(t *testing.T, key string) bootCall {
	t.Helper()
	c := recv(t, e.f.calls, "boot of "+key)
	if c.key != key {
		t.Fatalf("booted %q, want %q", c.key, key)
	}
	return c
}

// answer ends boot c with err and waits until the pool has recorded it.
func (e *env) answer(t *testing.T, c bootCall, err error) {
	t.Helper()
	e.p.mu.Lock()
	changed := e.p.changed
	e.p.mu.Unlock()
	c.done <- err
	recv(t, changed, "boot recorded")
}

// ready has the pool boot one sandbox of key and waits until it is idle.
func (e *env) ready(t *testing.T, key string) {
	t.Helper()
	e.p.Want(key, 1)
	e.answer(t, e.boot(t, key), nil)
}

// quietPassed advances the clock past the quiet time and waits until the
// pool has acted on every run's end.
func (e *env) quietPassed() {
	e.clock.Advance(e.p.cfg.Quiet)
	e.p.quiet.Wait()
}

func (e *env) noCalls(t *testing.T) {
	t.Helper()
	select {
	case c := <-e.f.calls:
		t.Fatalf("unexpected boot of %q", c.key)
	default:
	}
}

// TestQuietDelaysBoots: demand asked for during a run boots only once the
// machine has been quiet for Quiet after the run ended.
func TestQuietDelaysBoots(t *testing.T) {
	e := newEnv(t, Config[string]{})
	e.p.RunBegins()
	e.p.Want("a", 1)
	if s := e.p.Stats(); s.Booting != 0 || s.Wanted != 1 || s.Active != 1 {
		t.Fatalf("booted during a run: %+v", s)
	}
	e.p.RunEnds()
	e.clock.Advance(e.p.cfg.Quiet - time.Millisecond)
	if s := e.p.Stats(); s.Booting != 0 || s.Wanted != 1 {
		t.Fatalf("booted before the quiet time was over: %+v", s)
	}
	// The quiet timer still waits beside the reaper's ticker (a cancelled
	// context makes BlockUntilContext a check, not a wait).
	over, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.clock.BlockUntilContext(over, 2); err != nil {
		t.Fatal("the quiet timer fired before the quiet time was over")
	}
	e.noCalls(t)
	e.clock.Advance(time.Millisecond)
	e.answer(t, e.boot(t, "a"), nil)
	if s := e.p.Stats(); s.Idle != 1 || s.Wanted != 0 || !s.Settled() {
		t.Fatalf("after the boot: %+v", s)
	}
}

// TestStraightBackGetsNoBoot: a run that starts within the quiet time of
// the previous one's end has the machine to itself; the boot waits for the
// quiet after it.
func TestStraightBackGetsNoBoot(t *testing.T) {
	e := newEnv(t, Config[string]{})
	e.p.RunBegins()
	e.p.Want("a", 1)
	e.p.RunEnds()
	e.clock.Advance(20 * time.Millisecond) // the client's round trip
	e.p.RunBegins()
	e.quietPassed() // the first run's quiet timer fired and found a run
	if s := e.p.Stats(); s.Booting != 0 || s.Wanted != 1 {
		t.Fatalf("booted while the straight-back run ran: %+v", s)
	}
	e.noCalls(t)
	e.p.RunEnds()
	e.clock.Advance(e.p.cfg.Quiet)
	e.boot(t, "a")
}

// TestNewestDemandFirst: of two keys waiting for quiet, the one asked for
// last boots first.
func TestNewestDemandFirst(t *testing.T) {
	e := newEnv(t, Config[string]{})
	e.p.RunBegins()
	e.p.Want("old", 1)
	e.clock.Advance(time.Millisecond)
	e.p.Want("new", 1)
	e.p.RunEnds()
	e.clock.Advance(e.p.cfg.Quiet)
	e.answer(t, e.boot(t, "new"), nil)
	e.boot(t, "old") // the budget of one frees up after the first boot
}

// TestPerKeyAndMax: a key gets at most PerKey sandboxes; idle and booting
// together stay within Max, a boot at the bound evicts the oldest idle
// sandbox of another key or waits; demand above Max drops the oldest.
func TestPerKeyAndMax(t *testing.T) {
	e := newEnv(t, Config[string]{PerKey: 2, Max: 3, Budget: 10})
	e.p.Want("a", 5)
	a1, a2 := e.boot(t, "a"), e.boot(t, "a")
	if s := e.p.Stats(); s.Booting != 2 || s.Wanted != 0 {
		t.Fatalf("Want(a, 5) with PerKey 2: %+v", s)
	}
	e.p.Want("b", 2)
	b1 := e.boot(t, "b")
	if s := e.p.Stats(); s.Booting != 3 || s.Wanted != 1 {
		t.Fatalf("at the bound of 3 with nothing idle to evict: %+v", s)
	}
	e.noCalls(t)
	// a's first boot ends: at the bound, its sandbox makes room for b's.
	e.p.mu.Lock()
	changed := e.p.changed
	e.p.mu.Unlock()
	a1.done <- nil
	recv(t, changed, "boot recorded")
	if v := recv(t, e.f.destroyed, "eviction"); v.key != "a" {
		t.Fatalf("evicted %q, want the idle sandbox of a", v.key)
	}
	b2 := e.boot(t, "b")
	if s := e.p.Stats(); s.Booting != 3 || s.Idle != 0 || s.Wanted != 0 {
		t.Fatalf("after the eviction: %+v", s)
	}
	for _, c := range []bootCall{a2, b1, b2} {
		e.answer(t, c, nil)
	}
	if s := e.p.Stats(); s.Idle != 3 {
		t.Fatalf("after the boots: %+v", s)
	}

	// Demand above Max: the least recently asked for is dropped.
	e2 := newEnv(t, Config[string]{PerKey: 2, Max: 3})
	e2.p.RunBegins() // no boots: the demand stays demand
	e2.p.Want("x", 2)
	e2.clock.Advance(time.Millisecond)
	e2.p.Want("y", 2)
	if s := e2.p.Stats(); s.Wanted != 2 {
		t.Fatalf("wanted 2+2 with Max 3: %+v, want only y's 2 kept", s)
	}
	e2.p.RunEnds()
	e2.clock.Advance(e2.p.cfg.Quiet)
	e2.boot(t, "y")
}

// TestReap: an idle sandbox is destroyed once older than Idle, a younger
// one stays.
func TestReap(t *testing.T) {
	e := newEnv(t, Config[string]{Idle: 2 * time.Minute, Budget: 10})
	e.ready(t, "old")
	e.clock.Advance(time.Minute)
	e.ready(t, "young")
	e.clock.Advance(70 * time.Second) // old is 130 s old, young 70 s
	if v := recv(t, e.f.destroyed, "reaping"); v.key != "old" {
		t.Fatalf("reaped %q, want old", v.key)
	}
	if got := e.p.Idle(func(string) bool { return true }); len(got) != 1 || got[0].key != "young" {
		t.Fatalf("idle after reaping: %v", got)
	}
	e.clock.Advance(time.Minute)
	if v := recv(t, e.f.destroyed, "reaping"); v.key != "young" {
		t.Fatalf("reaped %q, want young", v.key)
	}
}

// TestTakeHitAndMiss: Take hands out an idle sandbox of the key and counts
// a hit; with none, it counts a miss.
func TestTakeHitAndMiss(t *testing.T) {
	e := newEnv(t, Config[string]{Budget: 10})
	e.ready(t, "a")
	ctx := context.Background()
	if b, ok := e.p.Take(ctx, "b"); ok || b != nil {
		t.Fatalf("Take(b) = %v, want a miss", b)
	}
	b, ok := e.p.Take(ctx, "a")
	if !ok || b.key != "a" {
		t.Fatalf("Take(a) = %v %v", b, ok)
	}
	if _, ok := e.p.Take(ctx, "a"); ok {
		t.Fatal("the same sandbox handed out twice")
	}
	if s := e.p.Stats(); s.Hits != 1 || s.Misses != 2 || s.Idle != 0 || s.Boots != 1 || s.BootFailures != 0 {
		t.Fatalf("stats %+v, want 1 hit, 2 misses, 1 boot", s)
	}
}

// TestTakeUnusable: a sandbox Take handed out that the caller could not
// use takes back its hit, so a run that takes again counts once.
func TestTakeUnusable(t *testing.T) {
	e := newEnv(t, Config[string]{Budget: 10})
	e.ready(t, "a")
	ctx := context.Background()
	if _, ok := e.p.Take(ctx, "a"); !ok {
		t.Fatal("Take(a) missed")
	}
	e.p.Unusable()
	if _, ok := e.p.Take(ctx, "a"); ok {
		t.Fatal("the same sandbox handed out twice")
	}
	if s := e.p.Stats(); s.Hits != 0 || s.Misses != 1 {
		t.Fatalf("stats %+v, want the run counted once, as the miss of its second take", s)
	}
}

// TestTakeSkipsDead: a sandbox that died while idle is destroyed, not
// handed out, and not a hit.
func TestTakeSkipsDead(t *testing.T) {
	e := newEnv(t, Config[string]{Budget: 10})
	e.p.Want("a", 2)
	c1, c2 := e.boot(t, "a"), e.boot(t, "a")
	e.answer(t, c1, nil)
	e.answer(t, c2, nil)
	idle := e.p.Idle(func(string) bool { return true })
	idle[0].dead.Store(true)
	b, ok := e.p.Take(context.Background(), "a")
	if !ok || b != idle[1] {
		t.Fatalf("Take = %v %v, want the live sandbox %v", b, ok, idle[1])
	}
	if v := recv(t, e.f.destroyed, "destroy of the dead sandbox"); v != idle[0] {
		t.Fatalf("destroyed %v, want the dead one", v)
	}
	if s := e.p.Stats(); s.Hits != 1 || s.Misses != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// waitCtx reports when Take starts waiting on it.
type waitCtx struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func (c *waitCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}

// TestTakeWaitsForRipeBoot: with nothing idle, Take waits for a boot of the
// key that is a quarter through (one taker per boot), and misses at once on
// a fresher one.
func TestTakeWaitsForRipeBoot(t *testing.T) {
	e := newEnv(t, Config[string]{Budget: 10})
	e.p.Want("a", 1)
	c := e.boot(t, "a")
	if _, ok := e.p.Take(context.Background(), "a"); ok {
		t.Fatal("Take on a fresh boot did not miss")
	}
	e.clock.Advance(defaultBootEstimate / 4)
	ctx := &waitCtx{Context: context.Background(), waiting: make(chan struct{})}
	got := make(chan *box)
	go func() {
		b, _ := e.p.Take(ctx, "a")
		got <- b
	}()
	recv(t, ctx.waiting, "Take waiting for the boot")
	if _, ok := e.p.Take(context.Background(), "a"); ok {
		t.Fatal("a second taker got the boot already waited for")
	}
	c.done <- nil
	if b := recv(t, got, "Take's result"); b == nil || b.key != "a" {
		t.Fatalf("the waiting Take got %v", b)
	}
	if s := e.p.Stats(); s.Hits != 1 || s.Misses != 2 {
		t.Fatalf("stats %+v, want 1 hit, 2 misses", s)
	}

	// A taker whose context ends stops waiting, with a miss.
	e.p.Want("a", 1)
	e.boot(t, "a")
	e.clock.Advance(time.Second)
	cctx, cancel := context.WithCancel(context.Background())
	ctx = &waitCtx{Context: cctx, waiting: make(chan struct{})}
	go func() {
		b, _ := e.p.Take(ctx, "a")
		got <- b
	}()
	recv(t, ctx.waiting, "Take waiting for the boot")
	cancel()
	if b := recv(t, got, "Take's result"); b != nil {
		t.Fatalf("a cancelled Take got %v", b)
	}
}

// TestWaitIdle: WaitIdle returns once enough matching sandboxes are idle,
// and when its context ends.
func TestWaitIdle(t *testing.T) {
	e := newEnv(t, Config[string]{Budget: 10})
	e.p.Want("a", 2)
	c1, c2 := e.boot(t, "a"), e.boot(t, "a")
	isA := func(k string) bool { return k == "a" }
	done := make(chan error, 1)
	go func() { done <- e.p.WaitIdle(context.Background(), isA, 2) }()
	e.answer(t, c1, nil)
	select {
	case err := <-done:
		t.Fatalf("WaitIdle returned (%v) with one sandbox idle", err)
	default:
	}
	e.answer(t, c2, nil)
	if err := recv(t, done, "WaitIdle's return"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.p.WaitIdle(ctx, isA, 3); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitIdle on a cancelled context: %v", err)
	}
}

// TestFailedBootForgotten: a key whose boot fails is not retried.
func TestFailedBootForgotten(t *testing.T) {
	e := newEnv(t, Config[string]{})
	e.p.Want("bad", 2)
	e.answer(t, e.boot(t, "bad"), errors.New("cannot boot"))
	if s := e.p.Stats(); s.Wanted != 0 || s.Booting != 0 || s.Idle != 0 || s.Boots != 0 || s.BootFailures != 1 {
		t.Fatalf("after a failed boot: %+v (want 1 boot failure)", s)
	}
	e.noCalls(t)
}

// TestCloseDestroysEverything: Close cancels the boot in flight (a booter
// that blocks until its context is done), does not wait for a pending quiet
// timer, destroys every idle sandbox and returns; afterwards the pool
// boots nothing and hands out nothing.
func TestCloseDestroysEverything(t *testing.T) {
	e := newEnv(t, Config[string]{Budget: 10})
	e.ready(t, "a")
	e.ready(t, "b")
	idle := e.p.Idle(func(string) bool { return true })
	e.p.Want("c", 1)
	c := e.boot(t, "c")
	e.p.RunBegins()
	e.p.RunEnds() // a quiet timer pending; the fake clock never fires it
	closed := make(chan struct{})
	go func() { e.p.Close(); close(closed) }()
	recv(t, closed, "Close's return")
	if c.ctx.Err() == nil {
		t.Error("the boot in flight was not cancelled")
	}
	var destroyed []*box
	for range idle {
		destroyed = append(destroyed, recv(t, e.f.destroyed, "destroy"))
	}
	for _, b := range idle {
		if !slices.Contains(destroyed, b) {
			t.Errorf("idle sandbox %v not destroyed", b)
		}
	}
	e.p.Want("d", 1)
	if _, ok := e.p.Take(context.Background(), "a"); ok {
		t.Error("Take after Close handed out a sandbox")
	}
	if s := e.p.Stats(); s.Idle != 0 || s.Booting != 0 {
		t.Errorf("after Close: %+v", s)
	}
	e.noCalls(t)
}

// TestBootEndingAfterCloseDestroyed: a boot that completes although the
// pool closed meanwhile is destroyed, not pooled.
func TestBootEndingAfterCloseDestroyed(t *testing.T) {
	e := newEnv(t, Config[string]{})
	e.f.ignoreCtx = true
	e.p.Want("a", 1)
	c := e.boot(t, "a")
	closed := make(chan struct{})
	go func() { e.p.Close(); close(closed) }()
	recv(t, c.ctx.Done(), "the boot's cancellation")
	c.done <- nil
	if v := recv(t, e.f.destroyed, "destroy"); v.key != "a" {
		t.Fatalf("destroyed %v", v)
	}
	recv(t, closed, "Close's return")
	if s := e.p.Stats(); s.Idle != 0 {
		t.Errorf("after Close: %+v", s)
	}
}

// TestBurstRaisesDemand: a fan-out of 8 Takes of one key within a boot's
// duration finds PerKey sandboxes and misses the rest; the pool then keeps
// 8 of that key (at most Max), ahead of the guessed demand of the images
// the branches made, so the next fan-out is served warm. Takes spread over
// more than a boot are no burst, and a burst is forgotten after Idle.
func TestBurstRaisesDemand(t *testing.T) {
	e := newEnv(t, Config[string]{PerKey: 2, Max: 8, Budget: 1})
	e.p.Want("img", 2)
	for range 2 {
		c := e.boot(t, "img")
		e.clock.Advance(200 * time.Millisecond) // a boot's duration
		e.answer(t, c, nil)
	}
	ctx := context.Background()
	e.p.RunBegins() // the branches run: boots wait for quiet
	hits := 0
	for range 8 {
		if _, ok := e.p.Take(ctx, "img"); ok {
			hits++
		}
		e.p.Want("img", 1) // as the engine does after each Take
		e.clock.Advance(5 * time.Millisecond)
	}
	if hits != 2 {
		t.Fatalf("first fan-out: %d warm, want the 2 of PerKey", hits)
	}
	for i := range 8 { // each branch made an image, which wants PerKey
		e.p.Want(fmt.Sprint("branch", i), 2)
		e.clock.Advance(time.Millisecond)
	}
	if s := e.p.Stats(); s.Wanted != 8 {
		t.Fatalf("after the fan-out: %+v, want 8 wanted", s)
	}
	e.p.RunEnds()
	e.clock.Advance(e.p.cfg.Quiet)
	for range 8 {
		e.answer(t, e.boot(t, "img"), nil)
	}
	e.noCalls(t)
	e.p.RunBegins()
	for i := range 8 {
		if _, ok := e.p.Take(ctx, "img"); !ok {
			t.Fatalf("second fan-out: branch %d missed", i)
		}
		e.p.Want("img", 1)
	}
	e.p.RunEnds()
	e.clock.Advance(e.p.cfg.Quiet)
	for range 8 {
		e.answer(t, e.boot(t, "img"), nil)
	}
	// A lone run on the image later asks for its own replacement only, and
	// a new image gets its guess.
	e.clock.Advance(time.Second)
	e.p.RunBegins()
	e.p.Take(ctx, "img")
	e.p.Want("img", 1)
	e.p.Want("next", 2)
	if s := e.p.Stats(); s.Wanted != 2 {
		t.Fatalf("a lone run after the fan-outs: %+v, want the new image's 2 wanted (its own image has 7 idle)", s)
	}
	e.p.RunEnds()

	// Takes a boot's duration apart are no burst: the run's 1 holds.
	e2 := newEnv(t, Config[string]{PerKey: 2, Max: 8, Budget: 1})
	e2.p.RunBegins()
	for range 4 {
		e2.p.Take(ctx, "seq")
		e2.clock.Advance(defaultBootEstimate)
	}
	e2.p.Want("seq", 1)
	if s := e2.p.Stats(); s.Wanted != 1 {
		t.Fatalf("sequential takes: %+v, want 1 wanted", s)
	}
	for range 5 {
		e2.p.Take(ctx, "seq")
	}
	e2.p.Want("seq", 1)
	if s := e2.p.Stats(); s.Wanted != 5 {
		t.Fatalf("5 takes at once: %+v, want 5 wanted", s)
	}
	// A burst is forgotten after Idle (the reaper drops it).
	forgotten := func() bool {
		e2.p.mu.Lock()
		defer e2.p.mu.Unlock()
		_, ok := e2.p.bursts["seq"]
		return !ok
	}
	e2.clock.Advance(2 * time.Minute)
	for !forgotten() {
		e2.clock.Advance(time.Minute) // the reaper runs on its ticker
		runtime.Gosched()
	}

}
