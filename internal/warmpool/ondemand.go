package warmpool

import (
	"context"
)

// On-demand boots: a run that found no sandbox of its key (Take missed)
// and wants one now (the engine boots one for a non-disposable run, to
// continue in after it) asks BootFor. The pool boots one for each waiting
// run, whatever the quiet and the hold, unless its own boots of the key in
// flight are enough, and hands the sandboxes out as they come: each
// waiting run takes the first sandbox of its key that is idle, be it from
// its own boot, another's, or one of the pool's. (Booting at most one per
// core at a time was tried for a burst of branches on 2 cores and made
// the wall time to every result no better: the boots are CPU-bound, and on
// a shared machine fewer processes get a smaller share of it.)

// BootFor returns a sandbox of k for the caller, booting one if none is
// idle and no boot in flight is left for it; it returns early with ctx's
// error. A boot whose caller went away, or was served by another boot,
// leaves its sandbox idle in the pool (bounded and reaped as any).
func (p *Pool[K, B]) BootFor(ctx context.Context, k K) (B, error) {
	var zero B
	p.mu.Lock()
	defer p.mu.Unlock()
	p.demand[k]++
	defer func() {
		if p.demand[k]--; p.demand[k] <= 0 {
			delete(p.demand, k)
			delete(p.failed, k) // no one left to tell
			delete(p.lastErr, k)
		}
	}()
	for {
		if err := p.ctx.Err(); err != nil {
			return zero, err
		}
		if err := ctx.Err(); err != nil {
			return zero, err
		}
		if b, ok := p.takeIdleLocked(k); ok {
			return b, nil
		}
		if p.failed[k] > 0 {
			// A boot for these runs failed: the rest fail too, rather than
			// boot again and again an image that cannot boot.
			p.failed[k]--
			return zero, p.lastErr[k]
		}
		// A boot for each waiting run.
		if p.booting[k] < p.demand[k] {
			p.startBootLocked(k, true)
			continue
		}
		p.waitChangeLocked(ctx)
	}
}
