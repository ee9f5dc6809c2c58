package store

import (
	"context"
	"time"
)

// Cluster is what the nodes of one arbor cluster (API nodes and workers
// sharing one database, issue 17) need of the store beyond [Metadata] and
// [Queue]. The PostgreSQL store implements it.
//
// A run spawned on an API node is inserted with its request
// ([Cluster.InsertQueued]) and claimed by a worker through the [Queue]. An
// operation a node runs itself (an import, a fork of a sandbox it runs) is
// inserted with the node's ID ([Cluster.InsertLocal]): no worker claims it,
// and only that node's recovery fails it ([Cluster.UnfinishedLocal]).
//
// Events cross nodes as rows; [Cluster.Notify] and [Cluster.Listen] carry
// wake-ups only (a payload is an operation ID, never data), so a listener
// that missed one loses nothing but latency: it reads the rows anyway.
type Cluster interface {
	Queue
	// InsertQueued inserts o as InsertOperationLimited does, with the
	// serialised request a worker runs it from, and wakes the workers
	// (ChannelQueue) when it commits.
	InsertQueued(ctx context.Context, o Operation, limit int, request []byte) error
	// InsertLocal inserts o as InsertOperationLimited does, run by node.
	InsertLocal(ctx context.Context, o Operation, limit int, node string) error
	// Request returns the request of a queued operation (NotFound if it has none).
	Request(ctx context.Context, op string) ([]byte, error)
	// UnfinishedLocal returns node's own operations in flight (recovery).
	UnfinishedLocal(ctx context.Context, node string) ([]Operation, error)
	// Placement says where op is: its status, the worker holding its
	// lease (if in flight and claimed) or the node running it itself, and
	// that worker's or node's address (if it is a worker).
	Placement(ctx context.Context, op string) (Placement, error)
	// CancelPending finishes out's operation as FinishOperation does, but
	// only while it is PENDING and unclaimed; false, and nothing written,
	// otherwise.
	CancelPending(ctx context.Context, out Outcome) (bool, error)
	// RequestCancel marks op, in flight, as to be cancelled by whoever
	// runs it; false if it is not in flight.
	RequestCancel(ctx context.Context, op string) (bool, error)
	// CancelRequested returns those of ops a cancel was asked for.
	CancelRequested(ctx context.Context, ops []string) ([]string, error)
	// SetAddress records the address other nodes reach worker at.
	SetAddress(ctx context.Context, worker, addr string) error
	// LiveAddresses returns the addresses of the workers whose last
	// heartbeat is within the lease, by worker ID (those with none left out).
	LiveAddresses(ctx context.Context) (map[string]string, error)
	// Secret is the cluster's shared secret (made by the schema's migration).
	Secret(ctx context.Context) (string, error)
	// Notify sends one notification on channel per payload, in one round trip.
	Notify(ctx context.Context, channel string, payloads []string) error
	// RecordCheckpoint records the size of image's memory checkpoint
	// (account's), once it is in the shared storage, replacing an earlier
	// record.
	RecordCheckpoint(ctx context.Context, image, account string, bytes int64) error
	// ForgetCheckpoint deletes image's checkpoint record (a no-op if none),
	// with the shared storage's copy.
	ForgetCheckpoint(ctx context.Context, image string) error
	// CheckpointSizes returns the recorded checkpoint sizes of those of
	// images that have one.
	CheckpointSizes(ctx context.Context, images []string) (map[string]int64, error)
	// AccountCheckpointBytes sums the recorded checkpoints of account's
	// live images (one deleted, or not committed yet, counts nothing).
	AccountCheckpointBytes(ctx context.Context, account string) (int64, error)
	// Listen calls fn for each notification on channels, from one
	// connection of its own, until ctx ends or the connection fails (its
	// error). ready is called once it listens.
	Listen(ctx context.Context, channels []string, ready func(), fn func(channel, payload string)) error
}

// Placement is where an operation runs (Cluster.Placement).
type Placement struct {
	Status  string
	Worker  string // the lease's holder, "" if none
	Address string // the holder's (or Node's) advertised address
	Node    string // the node running it itself (InsertLocal), if any
	Expires time.Time
}

// Notification channels of a cluster.
const (
	ChannelEvents = "arbor_events" // payload: an operation whose log grew or ended
	ChannelQueue  = "arbor_queue"  // payload: "" (work was queued)
	ChannelCancel = "arbor_cancel" // payload: an operation a cancel was asked for
)
