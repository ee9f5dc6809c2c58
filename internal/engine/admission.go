package engine

import (
	"context"
	"sync"
)

// admission admits runs to execute: each takes a slot and its memory
// limit (plus its overhead, see charge) out of the memory budget. Runs that do not fit wait in one queue,
// strictly in arrival order: the head waits for what it needs even when a
// smaller run behind it would fit, so a large run is never starved by a
// stream of small ones. A waiting run's place is its queue position.
type admission struct {
	mu     sync.Mutex
	slots  int   // free slots
	memory int64 // free bytes of the memory budget
	total  int64 // the whole budget
	// overhead is charged to the budget with each run's memory limit:
	// what a run costs outside its sandbox's memory cgroup (runOverhead).
	overhead int64
	queue    []*admitWaiter
	// changed is closed, and replaced, whenever the queue changes: a
	// watcher of positions waits on it instead of polling.
	changed chan struct{}
}

type admitWaiter struct {
	op     string
	memory int64
	ready  chan struct{} // closed once admitted
}

func newAdmission(slots int, memory int64) *admission {
	return &admission{slots: slots, memory: memory, total: memory, changed: make(chan struct{})}
}

// withOverhead sets what each run costs beside its memory limit.
func (a *admission) withOverhead(n int64) *admission {
	a.overhead = n
	return a
}

// charge is what a run with a memory limit of memory bytes takes out of
// the budget: the limit and the overhead, but never more than the whole
// budget, so a run asking for all of it still runs (alone).
func (a *admission) charge(memory int64) int64 { return min(memory+a.overhead, a.total) }

// queueChanged tells watchers; under mu.
func (a *admission) queueChanged() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// watch returns a channel closed at the queue's next change.
func (a *admission) watch() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

// enqueue puts op, asking for memory bytes, at the end of the queue, or
// admits it at once when nobody waits and it fits; runs are admitted in
// the order they were enqueued. The ticket's wait blocks until admitted;
// whoever enqueued must then release, or cancel the ticket instead.
func (a *admission) enqueue(op string, memory int64) *admitWaiter {
	w := &admitWaiter{op: op, memory: a.charge(memory), ready: make(chan struct{})}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.queue = append(a.queue, w)
	a.queueChanged()
	a.admitLocked()
	return w
}

// wait blocks until w is admitted (nil) or ctx ends (its error, with w
// cancelled: nothing is held then).
func (a *admission) wait(ctx context.Context, w *admitWaiter) error {
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	a.cancel(w)
	return ctx.Err()
}

// cancel takes w out of the queue, or gives back what it was admitted with.
func (a *admission) cancel(w *admitWaiter) {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-w.ready:
		a.slots++
		a.memory += w.memory
	default:
		for i, q := range a.queue {
			if q == w {
				a.queue = append(a.queue[:i], a.queue[i+1:]...)
				a.queueChanged()
				break
			}
		}
	}
	a.admitLocked() // the head may have gone, or what it held is back
}

// release gives back what a run with a memory limit of memory bytes was
// admitted with.
func (a *admission) release(memory int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.slots++
	a.memory += a.charge(memory)
	a.admitLocked()
}

func (a *admission) fits(memory int64) bool { return a.slots > 0 && memory <= a.memory }

func (a *admission) take(memory int64) {
	a.slots--
	a.memory -= memory
}

// admitLocked admits waiters from the head while they fit.
func (a *admission) admitLocked() {
	for len(a.queue) > 0 && a.fits(a.queue[0].memory) {
		w := a.queue[0]
		a.queue = a.queue[1:]
		a.take(w.memory)
		close(w.ready)
		a.queueChanged()
	}
}

// position is op's place in the queue, 1 for the next to execute; 0 when
// it is not waiting.
func (a *admission) position(op string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, w := range a.queue {
		if w.op == op {
			return i + 1
		}
	}
	return 0
}
