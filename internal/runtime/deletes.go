package runtime

import (
	"context"
	"sync"
)

// deleteQueue holds the ids of dead sandboxes whose runtime state (state
// files, cgroups) is still to be deleted, off the runs' paths.
type deleteQueue struct {
	mu      sync.Mutex
	ids     []string
	running bool // a deleter goroutine drains ids
}

// deleteLater deletes dead sandbox id's runtime state in the background.
// runsc deletes every id queued meanwhile in one process: a `runsc
// delete` costs ~10 ms of CPU, most of it the binary starting, about a
// tenth of a whole `runsc run`, and sandboxes that end together (a
// fan-out) share one. runc and crun take one id per call.
func (o *OCI) deleteLater(id string) {
	q := &o.dead
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ids = append(q.ids, id)
	if q.running {
		return
	}
	q.running = true
	o.bg.Add(1)
	go func() {
		defer o.bg.Done()
		for {
			q.mu.Lock()
			ids := q.ids
			q.ids = nil
			if len(ids) == 0 {
				q.running = false
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			o.deleteAll(ids)
		}
	}()
}

// deleteAll deletes the runtime state of the dead sandboxes ids.
func (o *OCI) deleteAll(ids []string) {
	if o.name == "runsc" && len(ids) > 1 {
		_ = o.forceDelete(context.Background(), ids[0], ids[1:]...)
		// runsc stops at the first id it does not find, quietly: the
		// others are left for one call each.
		left := ids[:0]
		for _, id := range ids {
			if o.hasState(id) {
				left = append(left, id)
			}
		}
		ids = left
	}
	for _, id := range ids {
		o.delete(id)
	}
}
