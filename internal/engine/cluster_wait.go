package engine

import (
	"context"
	"time"

	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/store"
)

// startWait bounds how long a request about a run that has not started
// (a subprocess, its stdin, a fork, a checkpoint) waits for it to start:
// as long as runningOp waits on one node, so a client that spawns and at
// once execs gets the same answer from a cluster.
const startWait = 30 * time.Second

// placementPoll is how often a node reads a queued run's placement while a
// request about it waits for a worker to claim it: a claim sends no
// notification, and the read is one indexed row.
const placementPoll = 50 * time.Millisecond

// awaitClaim returns op's placement once a worker claimed it, a node runs
// it or it ended; after startWait (or when ctx ends), the last one read.
func (c *cluster) awaitClaim(ctx context.Context, op string, p store.Placement) (store.Placement, error) {
	deadline := time.Now().Add(startWait)
	for p.Worker == "" && p.Node == "" && !oplog.IsTerminal(p.Status) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return p, nil
		case <-time.After(placementPoll):
		}
		var err error
		if p, err = c.store.Placement(ctx, op); err != nil {
			return p, err
		}
	}
	return p, nil
}

// awaitLaunch returns op's active record once this worker, which claimed
// op, has prepared it (read its request, fetched its image's layers) and
// launched it; nil if this worker does not hold op, or after startWait.
func (c *cluster) awaitLaunch(ctx context.Context, op string) *activeOp {
	deadline := time.Now().Add(startWait)
	for {
		if a := c.e.activeOf(op); a != nil {
			return a
		}
		c.mu.Lock()
		_, held := c.held[op]
		c.mu.Unlock()
		if !held || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Millisecond):
		}
	}
}
