package store

import (
	"context"
	"time"
)

// Queue hands PENDING operations to workers when several arbor nodes
// share one database (issue 17). The PostgreSQL store implements it;
// single-node arbor (SQLite) runs operations where they are created and
// needs none.
//
// # Lifecycle
//
// A worker registers ([Queue.RegisterWorker]) and then heartbeats
// ([Queue.Heartbeat]) well within [QueueConfig.LeaseTTL]. With a free
// slot it claims one operation ([Queue.Claim]):
//
//	PENDING ──Claim──▶ ASSIGNED ──Start──▶ EXECUTING ──Complete──▶ SUCCESS | FAILED | CANCELLED
//	   ▲                  │                    │
//	   └──Reap (attempts  │                    └──Reap──▶ FAILED ("worker lost")
//	      left)───────────┘
//
// A claim gives the worker a [Lease]: the operation, the worker, an expiry
// and a fencing epoch that grows on every claim of that operation. Every
// later write of the worker names its lease and is fenced by it: it
// applies only while the operation is still leased to that worker, with
// that epoch, and the lease has not expired. A write refused for that
// reason is an error of class FailedPrecondition: the lease is lost, and
// the worker must stop the operation's sandbox and publish nothing.
//
// Only the database clock decides leases: a lease expires LeaseTTL after
// its last renewal by the database's clock, whatever the workers' clocks
// say, and a renewal never revives an expired lease.
//
// # Failures
//
// A worker that stops heartbeating (killed, partitioned, stuck) loses its
// leases when they expire. [Queue.Reap], which any node may run at any
// time (it is idempotent and needs no leader), then puts an operation that
// had not started (ASSIGNED) back to PENDING, up to
// [QueueConfig.MaxAttempts] claims, and fails one that had started
// (EXECUTING): running a command twice is not safe in general. So every
// operation of a dead worker ends or is requeued within one lease plus the
// reaper's period, and a presumed-dead worker that comes back cannot
// write: its heartbeat, start and completion are refused.
//
// # Placement
//
// A step on an image prefers the worker whose operation made that image,
// which holds its layers in cache: for [QueueConfig.LocalityWait] after an
// operation is queued, only that worker may claim it (while it is alive);
// after that, any worker may. A claim takes, in this order, operations
// past that wait (oldest first, so none starves), those on images the
// claiming worker made, then the oldest. A worker never holds more leases
// than its slots.
type Queue interface {
	// RegisterWorker creates or updates the worker's row (its slots) and
	// counts as a heartbeat. A worker restarted under the same ID holds no
	// leases: those of its previous life expire and are reaped.
	RegisterWorker(ctx context.Context, w Worker) error
	// Heartbeat renews the worker's row and the leases in held that it
	// still holds, and returns those, with their new expiry. A lease of
	// held missing from the result is lost. An unknown worker is NotFound.
	Heartbeat(ctx context.Context, worker string, held []Lease) ([]Lease, error)
	// Claim leases one PENDING operation to the worker and moves it to
	// ASSIGNED. ok is false when there is none it may take, or the worker
	// has no free slot. A worker that is not registered, or whose
	// heartbeat has expired, is FailedPrecondition.
	Claim(ctx context.Context, worker string) (l Lease, ok bool, err error)
	// Start moves the leased operation to EXECUTING (its sandbox is about
	// to run): from then on, losing the lease fails it. Fenced.
	Start(ctx context.Context, l Lease) error
	// Complete finishes the leased operation as FinishOperation does, in
	// one transaction with the fencing check. Fenced.
	Complete(ctx context.Context, l Lease, out Outcome) error
	// Reap ends the expired leases (see Failures) and returns the
	// operations requeued and failed. completion, if not nil, gives the
	// last event of an operation it fails (appended in the same
	// transaction with the next ID).
	Reap(ctx context.Context, completion func(op Operation) Event) (requeued, failed []string, err error)
	// Workers lists the registered workers.
	Workers(ctx context.Context) ([]Worker, error)
}

// QueueConfig tunes a [Queue].
type QueueConfig struct {
	// LeaseTTL is how long a claim or renewal holds (default 15 s);
	// workers heartbeat about every third of it.
	LeaseTTL time.Duration
	// LocalityWait is how long an operation waits for the worker that made
	// its input image before any worker may take it (default 2 s).
	LocalityWait time.Duration
	// MaxAttempts bounds the claims of one operation (default 3).
	MaxAttempts int
}

// Defaults of [QueueConfig].
const (
	DefaultLeaseTTL     = 15 * time.Second
	DefaultLocalityWait = 2 * time.Second
	DefaultMaxAttempts  = 3
)

// WithDefaults returns c with its zero fields set to the defaults.
func (c QueueConfig) WithDefaults() QueueConfig {
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.LocalityWait <= 0 {
		c.LocalityWait = DefaultLocalityWait
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	return c
}

// Worker is a worker's registry row.
type Worker struct {
	ID    string
	Slots int // operations it runs at once
	// RegisteredAt and HeartbeatAt are by the database clock (read only).
	RegisteredAt time.Time
	HeartbeatAt  time.Time
	// Alive: its last heartbeat is within one lease TTL (read only).
	Alive bool
}

// Lease is a worker's claim on an operation.
type Lease struct {
	Op      string
	Account string
	Worker  string
	Epoch   int64     // the fencing number
	Expires time.Time // by the database clock
	Attempt int       // 1 for the first claim

	// Set by Claim only, so that the worker starts the run without reading
	// them again: the operation as claimed, its queued request, and the id
	// of the last event of its log (-1: none; an earlier claim may have
	// logged some).
	Row       Operation
	Request   []byte
	LastEvent int64
}
