package engine

import (
	"context"
	"sync"

	"github.com/arborsh/arbor/internal/errdefs"
)

// An imageLease pins an image row, and through it (as a root of garbage
// collection) every row and layer its chain needs, whether or not the image
// is deleted meanwhile. A run holds one from its admission (Spawn) to its
// end, so a run queued behind a full slot on an image deleted meanwhile
// still mounts and commits on it; reads of a chain (views, squash, imports
// on a parent) hold one while they read. Deleting the image hides it from
// the account at once; its layers go when the last lease ends.
type imageLease struct {
	e      *Engine
	image  string
	holder string        // the operation holding it, "" if none
	done   chan struct{} // closed once released (and collected after)
	once   sync.Once
}

// leaseImage leases image u. A deleted image is leased only if deleted is
// set and its row is still kept (an ancestor of a live image, or leased).
// holder, if not "", names the lease for leaseOf.
func (e *Engine) leaseImage(u, holder string, deleted bool) (*imageLease, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.images[u]
	if n == nil || n.purging || ((n.deleted || n.expiring) && !deleted) {
		return nil, errdefs.NotFound("image %s not found: it was deleted", u)
	}
	l := e.leaseLocked(u)
	if holder != "" {
		l.holder = holder
		e.leases[holder] = l
	}
	return l, nil
}

// leaseLocked leases the row u, which must exist and not be purging. e.mu
// must be held.
func (e *Engine) leaseLocked(u string) *imageLease {
	e.leased[u]++
	return &imageLease{e: e, image: u, done: make(chan struct{})}
}

// Release ends the lease. When it was the last on a deleted image, the
// layers only it kept are collected now rather than at the next deletion.
func (l *imageLease) Release() {
	if l == nil {
		return
	}
	l.once.Do(func() {
		e := l.e
		e.mu.Lock()
		collect := false
		if e.leased[l.image]--; e.leased[l.image] <= 0 {
			delete(e.leased, l.image)
			n := e.images[l.image]
			collect = n != nil && n.deleted
		}
		e.mu.Unlock()
		if collect {
			if _, err := e.CollectGarbage(context.Background()); err != nil {
				// holder is the operation whose end released the lease, if any.
				e.log.Warn("collect the layers of a deleted image after its last lease", "operation", l.holder, "image", l.image, "err", err)
			}
		}
		// Gone from leaseOf only now, so whoever finds it gone finds the
		// collection done.
		e.mu.Lock()
		if l.holder != "" && e.leases[l.holder] == l {
			delete(e.leases, l.holder)
		}
		e.mu.Unlock()
		close(l.done)
	})
}

// leaseOf returns the lease held by holder, nil if none (or released and
// its collection done).
func (e *Engine) leaseOf(holder string) *imageLease {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leases[holder]
}
