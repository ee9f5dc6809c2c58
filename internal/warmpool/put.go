package warmpool

// Put adds b, a sandbox that has served a run and is ready to serve one of
// key k (the engine continues a sandbox in the image its run made), to the
// idle sandboxes: the next Take of k gets it, and it is bounded, reaped
// (Idle counted from now) and destroyed at Close like one the pool booted.
// At the bound it evicts (destroys in the background) the oldest idle
// sandbox of another key; when
// there is none to evict, or the pool is closed, it reports false and the
// caller keeps b (to destroy it). No boot starts for Hold after it.
func (p *Pool[K, B]) Put(k K, b B) bool {
	p.mu.Lock()
	if p.ctx.Err() != nil {
		p.mu.Unlock()
		return false
	}
	total := p.bootingLocked()
	for _, bs := range p.idle {
		total += len(bs)
	}
	var evict B
	evicted := false
	if total >= p.cfg.Max {
		if evict, evicted = p.oldestIdleLocked(k); !evicted {
			p.mu.Unlock()
			return false
		}
	}
	now := p.clock.Now()
	p.idle[k] = append(p.idle[k], idleBox[B]{box: b, born: now})
	if p.cfg.Hold > 0 {
		// Its agent's next step is likely to come soon (see Hold).
		p.holdUntil = now.Add(p.cfg.Hold)
		p.pumpAfterLocked(p.cfg.Hold, &p.held)
	}
	// Wake runs waiting for k: one is idle now.
	close(p.changed)
	p.changed = make(chan struct{})
	if evicted {
		// Not on the caller's time: it is a run about to report its result.
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.booter.Destroy(evict) }()
	}
	p.mu.Unlock()
	return true
}

// Withdraw takes back an idle sandbox of k that match picks (one Put
// before its image was committed, when the commit failed), without
// counting a hit; false if none is idle.
func (p *Pool[K, B]) Withdraw(k K, match func(B) bool) (B, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	bs := p.idle[k]
	for i, b := range bs {
		if match(b.box) {
			p.idle[k] = append(bs[:i:i], bs[i+1:]...)
			if len(p.idle[k]) == 0 {
				delete(p.idle, k)
			}
			return b.box, true
		}
	}
	var zero B
	return zero, false
}
