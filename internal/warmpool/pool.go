// Package warmpool keeps pre-booted sandboxes ready for the runs that will
// want them: it decides when to boot, which sandbox serves a run, and what
// to drop. Booting and destroying a sandbox are a Booter's; time is a
// clock's, so the policy is tested with a fake booter and a fake clock.
//
// # Lifecycle
//
// New starts a pool and its reaper. A sandbox of key K goes
//
//	wanted (Want) → booting (Booter.Boot, in the background) → idle
//	idle → taken (Take: the run owns it from then on and ends it itself)
//	idle → destroyed (reaped, evicted, found dead by Take, or at Close)
//
// Close cancels the boots in flight (their context is done), stops the
// timers, waits for the pool's goroutines and destroys every idle sandbox.
// After Close, Take misses and Want does nothing.
//
// # Policy
//
//   - Demand: Want(k, n) asks for up to n (at most PerKey) sandboxes of k.
//     Demand met by idle and booting sandboxes is forgotten; demand above
//     Max overall is stale and the least recently asked for is dropped,
//     guessed demand before measured bursts; a key whose boot failed is
//     forgotten (no retry loop on an image that cannot boot).
//   - Bursts: a pool of PerKey serves a fan-out of N branches of one image
//     with PerKey warm runs and N-PerKey cold ones, and replacements cannot
//     boot in time to help. So the pool counts the Takes of each key within
//     one boot's duration (the running estimate below); the most it has
//     seen, the key's burst, raises what Want(k, n) asks for during a burst
//     to that many (at most Max), and the next burst finds them ready. A
//     burst is forgotten after Idle without one as large.
//   - Quiet: a boot costs a core for a few hundred milliseconds, so boots
//     start only while runs in flight (RunBegins to RunEnds) and boots in
//     flight together are fewer than Budget, and a run's end looks for work
//     only after Quiet: an agent that comes straight back with its next
//     run gets the cores to itself instead of sharing them with a boot it
//     would not use; one that pauses finds its sandbox ready.
//   - Hold: a sandbox put back to continue in (Put) is the one its agent's
//     next step will take, likely within seconds; boots wait Hold after
//     it, so an agent that pauses to think comes back to cores that are
//     not booting sandboxes for other runs.
//   - Order: the most recently wanted key boots first.
//   - Bound: idle plus booting sandboxes never exceed Max; at the bound a
//     boot evicts the oldest idle sandbox of another key, or waits.
//   - Boot waits: Take on a key with nothing idle waits for a boot of that
//     key in flight if it is at least a quarter through (a running estimate
//     of boot time per Class), one run per such boot: the rest of that boot
//     plus a warm run beats a cold run. Otherwise it is a miss.
//   - Reaping: an idle sandbox older than Idle (counted from its boot's
//     start) is destroyed; the reaper looks every Idle/4, at least 1 s.
package warmpool

import (
	"context"
	"errors"
	"log/slog"
	goruntime "runtime"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// Booter does the work the pool decides on.
type Booter[K comparable, B any] interface {
	// Boot starts a sandbox for k and returns it ready to serve a run. It
	// returns early with an error when ctx is done (the pool is closing).
	Boot(ctx context.Context, k K) (B, error)
	// Alive reports, without blocking, whether idle sandbox b still runs.
	Alive(b B) bool
	// Destroy ends b and frees what it holds.
	Destroy(b B)
}

// DefaultQuiet is how long after a run's end the pool waits before it boots.
const DefaultQuiet = 100 * time.Millisecond

// defaultBootEstimate is a boot's duration before one has been measured.
const defaultBootEstimate = 300 * time.Millisecond

// Config sets the pool's policy. Zero values of the optional fields take
// the defaults noted.
type Config[K comparable] struct {
	PerKey int           // sandboxes wanted at most per key; > 0
	Max    int           // idle and booting sandboxes overall; > 0
	Idle   time.Duration // idle sandboxes older than this are destroyed; > 0
	Quiet  time.Duration // wait after a run's end before booting; default DefaultQuiet
	Hold   time.Duration // wait after a Put before booting; 0: none
	Budget int           // runs and boots at once under which boots start; default max(1, CPUs/2)
	// Class groups keys whose boots take alike long (the runtime) for the
	// boot-time estimate; nil: one group.
	Class  func(K) string
	Clock  clockwork.Clock // default the real clock
	Logger *slog.Logger    // default discards
}

// Stats reports the pool's state.
type Stats struct {
	Idle, Booting int
	Wanted        int // sandboxes asked for and not booting yet (they wait for quiet)
	Active        int // runs in flight
	Hits, Misses  int
	// Boots counts sandboxes booted, BootFailures boots that failed.
	Boots, BootFailures int
}

// Settled reports whether the pool has nothing left to do: no run in
// flight, no boot running or waiting.
func (s Stats) Settled() bool { return s.Active == 0 && s.Booting == 0 && s.Wanted == 0 }

// Pool is safe for concurrent use.
type Pool[K comparable, B any] struct {
	cfg    Config[K]
	booter Booter[K, B]
	clock  clockwork.Clock
	log    *slog.Logger

	ctx    context.Context // done once the pool closes; boots run under it
	cancel context.CancelFunc
	wg     sync.WaitGroup // boots, quiet timers, destroys, the reaper
	quiet  sync.WaitGroup // quiet timers not yet run to the end (tests wait on it)
	held   sync.WaitGroup // hold timers, likewise

	mu      sync.Mutex
	idle    map[K][]idleBox[B]
	booting map[K]int
	waiting map[K]int // runs waiting for one of booting[key]
	// bootStarts holds when each boot in flight started; bootTime a running
	// estimate of a boot's duration per class.
	bootStarts map[K][]time.Time
	bootTime   map[string]time.Duration
	changed    chan struct{} // closed and replaced when a boot ends
	// want is the demand not yet met: sandboxes to boot per key, with the
	// time it was last asked for (older demand is dropped first).
	want                map[K]want
	bursts              map[K]burst                         // Takes per key, see the package comment
	timers              map[clockwork.Timer]*sync.WaitGroup // quiet timers pending
	active              int                                 // runs between RunBegins and RunEnds
	holdUntil           time.Time                           // no boot starts before (see Hold)
	demand              map[K]int                           // runs waiting in BootFor
	failed              map[K]int                           // their failed boots not yet reported
	lastErr             map[K]error                         // why
	hits                int                                 // runs served warm
	misses              int
	boots, bootFailures int // boots ended, by result
}

type idleBox[B any] struct {
	box  B
	born time.Time // its boot's start
}

type want struct {
	n  int
	at time.Time
}

// burst is what the pool saw of a key's Takes.
type burst struct {
	takes []time.Time // within the last boot estimate
	peak  int         // the most Takes seen within one boot estimate
	at    time.Time   // when peak was last reached
}

// New returns a running pool; ctx bounds its life as Close does.
func New[K comparable, B any](ctx context.Context, booter Booter[K, B], cfg Config[K]) *Pool[K, B] {
	if cfg.Quiet <= 0 {
		cfg.Quiet = DefaultQuiet
	}
	if cfg.Budget <= 0 {
		cfg.Budget = max(1, goruntime.NumCPU()/2)
	}
	if cfg.Class == nil {
		cfg.Class = func(K) string { return "" }
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool[K, B]{
		cfg: cfg, booter: booter, clock: cfg.Clock, log: cfg.Logger,
		idle:       map[K][]idleBox[B]{},
		booting:    map[K]int{},
		waiting:    map[K]int{},
		bootStarts: map[K][]time.Time{},
		bootTime:   map[string]time.Duration{},
		changed:    make(chan struct{}),
		want:       map[K]want{},
		bursts:     map[K]burst{},
		timers:     map[clockwork.Timer]*sync.WaitGroup{},
		demand:     map[K]int{},
		failed:     map[K]int{},
		lastErr:    map[K]error{},
	}
	p.ctx, p.cancel = context.WithCancel(ctx)
	// The ticker exists before New returns, so a fake clock advanced
	// right after reaches it.
	t := p.clock.NewTicker(max(cfg.Idle/4, time.Second))
	p.wg.Add(1)
	go p.reap(t)
	return p
}

// Close cancels boots in flight, waits for the pool's goroutines and
// destroys every idle sandbox. Sandboxes taken by runs are theirs.
func (p *Pool[K, B]) Close() {
	p.cancel()
	// Under mu, after cancel: whoever schedules work checks p.ctx under mu
	// first, so nothing is added to wg once Wait starts.
	p.mu.Lock()
	for t, wg := range p.timers {
		if t.Stop() {
			wg.Done()
			p.wg.Done()
		}
	}
	clear(p.timers)
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	var all []B
	for _, bs := range p.idle {
		for _, b := range bs {
			all = append(all, b.box)
		}
	}
	clear(p.idle)
	p.mu.Unlock()
	for _, b := range all {
		p.booter.Destroy(b)
	}
}

// Stats returns the pool's counters.
func (p *Pool[K, B]) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, bs := range p.idle {
		n += len(bs)
	}
	wanted := 0
	for k, w := range p.want {
		wanted += max(0, w.n-len(p.idle[k])-p.booting[k])
	}
	return Stats{Idle: n, Booting: p.bootingLocked(), Wanted: wanted, Active: p.active, Hits: p.hits, Misses: p.misses,
		Boots: p.boots, BootFailures: p.bootFailures}
}

// Idle returns the idle sandboxes whose key matches (for tests and
// diagnostics: they stay in the pool).
func (p *Pool[K, B]) Idle(match func(K) bool) []B {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []B
	for k, bs := range p.idle {
		if match(k) {
			for _, b := range bs {
				out = append(out, b.box)
			}
		}
	}
	return out
}

// WaitIdle waits until at least n idle sandboxes match (for tests and
// tools that want a settled pool), or ctx ends or the pool closes.
func (p *Pool[K, B]) WaitIdle(ctx context.Context, match func(K) bool, n int) error {
	for {
		p.mu.Lock()
		have := 0
		for k, bs := range p.idle {
			if match(k) {
				have += len(bs)
			}
		}
		changed := p.changed // closed when a boot ends: the only way idle grows
		p.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.ctx.Done():
			return errors.New("warm pool closed")
		}
	}
}

// Ripe counts the boots in flight whose key matches that a Take would wait
// for now (for tests and diagnostics).
func (p *Pool[K, B]) Ripe(match func(K) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for k := range p.bootStarts {
		if match(k) {
			n += p.ripeLocked(k)
		}
	}
	return n
}

// Take hands an idle sandbox of k to the caller, which owns it from then
// on, and counts a hit; or, with none to be had, counts a miss. If none is
// idle but a boot of k is far enough along (see the package comment), it
// waits for that boot unless ctx ends first.
func (p *Pool[K, B]) Take(ctx context.Context, k K) (B, bool) {
	var zero B
	p.mu.Lock()
	defer p.mu.Unlock()
	waiting := false
	defer func() {
		if waiting {
			if p.waiting[k]--; p.waiting[k] <= 0 {
				delete(p.waiting, k)
			}
		}
	}()
	p.noteTakeLocked(k)
	for {
		if p.ctx.Err() != nil {
			p.misses++
			return zero, false
		}
		if b, ok := p.takeIdleLocked(k); ok {
			p.hits++
			return b, true
		}
		if !waiting && p.waiting[k] < p.ripeLocked(k) {
			waiting = true
			p.waiting[k]++
		}
		if !waiting || p.booting[k] == 0 {
			p.misses++
			return zero, false
		}
		p.waitChangeLocked(ctx)
		if ctx.Err() != nil {
			p.misses++
			return zero, false
		}
	}
}

// Unusable takes back the hit of a sandbox Take returned that the caller
// could not use (and destroyed): only the caller's next Take counts, so a
// run counts once, as a hit or a miss.
func (p *Pool[K, B]) Unusable() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hits--
}

// waitChangeLocked lets go of mu until a boot ends or a sandbox is put
// back, ctx ends or the pool closes.
func (p *Pool[K, B]) waitChangeLocked(ctx context.Context) {
	changed := p.changed
	p.mu.Unlock()
	select {
	case <-changed:
	case <-ctx.Done():
	case <-p.ctx.Done():
	}
	p.mu.Lock()
}

// takeIdleLocked removes and returns an idle sandbox of k that still
// runs; the dead ones it finds are destroyed.
func (p *Pool[K, B]) takeIdleLocked(k K) (B, bool) {
	for {
		bs := p.idle[k]
		if len(bs) == 0 {
			var zero B
			return zero, false
		}
		b := bs[0].box
		p.idle[k] = bs[1:]
		if len(p.idle[k]) == 0 {
			delete(p.idle, k)
		}
		if p.booter.Alive(b) {
			return b, true
		}
		// It died while idle (killed, out of memory): clean up behind the
		// run's back and look again.
		p.log.Warn("warm sandbox died while idle", "key", k)
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.booter.Destroy(b) }()
	}
}

// noteTakeLocked counts a Take of k into its burst.
func (p *Pool[K, B]) noteTakeLocked(k K) {
	// Takes "at once" are at least those within the quiet time.
	now, est := p.clock.Now(), max(p.bootEstimateLocked(k), p.cfg.Quiet)
	b := p.bursts[k]
	recent := b.takes[:0]
	for _, t := range b.takes {
		if now.Sub(t) < est {
			recent = append(recent, t)
		}
	}
	b.takes = append(recent, now)
	if len(b.takes) >= b.peak {
		b.peak, b.at = len(b.takes), now
	}
	p.bursts[k] = b
}

// bootEstimateLocked is how long a boot of k typically takes.
func (p *Pool[K, B]) bootEstimateLocked(k K) time.Duration {
	if est, ok := p.bootTime[p.cfg.Class(k)]; ok {
		return est
	}
	return defaultBootEstimate
}

// ripeLocked counts k's boots in flight worth waiting for: started at least
// a quarter of a typical boot ago, so at most three quarters remain, and a
// warm run's own cost (exec, and destroying the sandbox after it: a sixth
// of a boot under runsc) still leaves it ahead of a cold run.
func (p *Pool[K, B]) ripeLocked(k K) int {
	est := p.bootEstimateLocked(k)
	n := 0
	for _, t := range p.bootStarts[k] {
		if p.clock.Since(t) >= est/4 {
			n++
		}
	}
	return n
}

// Want asks for n sandboxes of k (at most PerKey, or k's burst, at most
// Max). They boot in the background when the machine is quiet, so a burst
// of runs is not slowed down by boots for its own replacements.
func (p *Pool[K, B]) Want(k K, n int) {
	n = min(n, p.cfg.PerKey)
	p.mu.Lock()
	// Only during a burst (the last Take had company): a lone run on an
	// image that once fanned out replaces its own sandbox, and does not
	// claim the whole pool back from the images made since.
	if b := p.bursts[k]; b.peak > n && len(b.takes) > 1 {
		n = min(b.peak, p.cfg.Max)
	}
	now := p.clock.Now()
	if w := p.want[k]; w.n < n {
		p.want[k] = want{n: n, at: now}
	} else {
		p.want[k] = want{n: w.n, at: now}
	}
	// Demand beyond the pool's bound is stale: keep the newest, and a
	// measured burst before the guess of PerKey.
	for total := p.wantedLocked(); total > p.cfg.Max; total = p.wantedLocked() {
		var oldest K
		first, guessed := true, false
		for key, w := range p.want {
			g := p.bursts[key].peak <= p.cfg.PerKey
			if first || (g && !guessed) || (g == guessed && w.at.Before(p.want[oldest].at)) {
				oldest, first, guessed = key, false, g
			}
		}
		delete(p.want, oldest)
	}
	p.mu.Unlock()
	p.pump()
}

// RunBegins and RunEnds bracket a run's use of the machine; a run ending
// may make room, after Quiet, for the boots waiting for quiet.
func (p *Pool[K, B]) RunBegins() {
	p.mu.Lock()
	p.active++
	p.mu.Unlock()
}

// RunEnds: see RunBegins.
func (p *Pool[K, B]) RunEnds() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.active--
	p.pumpAfterLocked(p.cfg.Quiet, &p.quiet)
}

// pumpAfterLocked looks for boots to start after d; wg counts the timer
// until it has run.
func (p *Pool[K, B]) pumpAfterLocked(d time.Duration, wg *sync.WaitGroup) {
	if p.ctx.Err() != nil {
		return
	}
	p.wg.Add(1)
	wg.Add(1)
	var t clockwork.Timer
	t = p.clock.AfterFunc(d, func() {
		defer p.wg.Done()
		defer wg.Done()
		p.mu.Lock() // after the caller set t and let go of mu
		delete(p.timers, t)
		p.mu.Unlock()
		p.pump()
	})
	p.timers[t] = wg
}

func (p *Pool[K, B]) wantedLocked() int {
	n := 0
	for _, w := range p.want {
		n += w.n
	}
	return n
}

func (p *Pool[K, B]) bootingLocked() int {
	n := 0
	for _, b := range p.booting {
		n += b
	}
	return n
}

// pump starts boots for unmet demand while the machine is quiet (fewer
// runs and boots than Budget), most recently wanted key first, keeping the
// pool's bound by evicting the oldest idle sandboxes of other keys.
func (p *Pool[K, B]) pump() {
	var evict []B
	p.mu.Lock()
	for p.ctx.Err() == nil {
		if p.active+p.bootingLocked() >= p.cfg.Budget || p.clock.Now().Before(p.holdUntil) {
			break
		}
		k, ok := p.nextWantLocked()
		if !ok {
			break
		}
		total := p.bootingLocked()
		for _, bs := range p.idle {
			total += len(bs)
		}
		if total >= p.cfg.Max {
			b, ok := p.oldestIdleLocked(k)
			if !ok {
				break
			}
			evict = append(evict, b)
		}
		p.startBootLocked(k, false)
		if w := p.want[k]; w.n <= len(p.idle[k])+p.booting[k] {
			delete(p.want, k)
		}
	}
	p.mu.Unlock()
	for _, b := range evict {
		p.booter.Destroy(b)
	}
}

// nextWantLocked returns the most recently wanted key whose demand is not
// met by idle and booting sandboxes; met demand is forgotten.
func (p *Pool[K, B]) nextWantLocked() (K, bool) {
	var best K
	found := false
	for k, w := range p.want {
		if w.n <= len(p.idle[k])+p.booting[k] {
			delete(p.want, k)
			continue
		}
		if !found || w.at.After(p.want[best].at) {
			best, found = k, true
		}
	}
	return best, found
}

// oldestIdleLocked removes and returns the oldest idle sandbox not of key k.
func (p *Pool[K, B]) oldestIdleLocked(k K) (B, bool) {
	var oldest K
	found := false
	for key, bs := range p.idle {
		if key != k && len(bs) > 0 && (!found || bs[0].born.Before(p.idle[oldest][0].born)) {
			oldest, found = key, true
		}
	}
	if !found {
		var zero B
		return zero, false
	}
	bs := p.idle[oldest]
	p.idle[oldest] = bs[1:]
	if len(bs) == 1 {
		delete(p.idle, oldest)
	}
	return bs[0].box, true
}

// startBootLocked starts a boot of k in the background.
func (p *Pool[K, B]) startBootLocked(k K, onDemand bool) {
	p.booting[k]++
	started := p.clock.Now()
	p.bootStarts[k] = append(p.bootStarts[k], started)
	p.wg.Add(1)
	go p.bootAs(k, started, onDemand)
}

// bootAs boots a sandbox for k and puts it in the pool (or destroys it if
// the pool closed meanwhile), then looks for more work; onDemand: for
// runs waiting in BootFor.
func (p *Pool[K, B]) bootAs(k K, started time.Time, onDemand bool) {
	defer p.wg.Done()
	b, err := p.booter.Boot(p.ctx, k)
	p.mu.Lock()
	if p.booting[k]--; p.booting[k] <= 0 {
		delete(p.booting, k)
	}
	starts := p.bootStarts[k]
	for i, t := range starts {
		if t.Equal(started) {
			starts = append(starts[:i], starts[i+1:]...)
			break
		}
	}
	if len(starts) == 0 {
		delete(p.bootStarts, k)
	} else {
		p.bootStarts[k] = starts
	}
	if onDemand {
		if err != nil && p.demand[k] > 0 {
			p.failed[k]++
			p.lastErr[k] = err
		}
	}
	if err != nil {
		p.bootFailures++
	} else {
		p.boots++
		// A running estimate of how long a boot takes, per class.
		d := p.clock.Since(started)
		if old, ok := p.bootTime[p.cfg.Class(k)]; ok {
			d = (3*old + d) / 4
		}
		p.bootTime[p.cfg.Class(k)] = d
	}
	closed := p.ctx.Err() != nil
	if err == nil && !closed {
		p.idle[k] = append(p.idle[k], idleBox[B]{box: b, born: started})
	} else if err != nil {
		delete(p.want, k) // no retry loop on a key that cannot boot
	}
	// Wake runs waiting for a boot: one ended.
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	switch {
	case err != nil && !closed:
		p.log.Warn("warm sandbox", "key", k, "err", err)
	case err == nil && closed:
		p.booter.Destroy(b)
	}
	p.pump()
}

// reap destroys sandboxes idle longer than Idle until the pool closes.
func (p *Pool[K, B]) reap(t clockwork.Ticker) {
	defer p.wg.Done()
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.Chan():
		}
		var old []B
		p.mu.Lock()
		now := p.clock.Now()
		for k, b := range p.bursts {
			if now.Sub(b.at) > p.cfg.Idle {
				delete(p.bursts, k)
			}
		}
		for k, bs := range p.idle {
			keep := bs[:0]
			for _, b := range bs {
				if now.Sub(b.born) > p.cfg.Idle {
					old = append(old, b.box)
				} else {
					keep = append(keep, b)
				}
			}
			if len(keep) == 0 {
				delete(p.idle, k)
			} else {
				p.idle[k] = keep
			}
		}
		p.mu.Unlock()
		for _, b := range old {
			p.booter.Destroy(b)
		}
	}
}
