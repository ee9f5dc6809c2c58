package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/arborsh/arbor/internal/store"
)

// Which commits wait for the disk.
//
// With PostgreSQL's durable defaults (fsync on, synchronous_commit on)
// every commit that writes waits for its WAL to be flushed, tens of
// milliseconds on a busy machine. A step of a cluster used to make nine of
// them. Only the writes whose loss in a PostgreSQL crash would be seen
// wait now:
//
//   - durable: an operation's insert (the API node answers with its ID),
//     a claim (it is what fences a worker: a lost claim would let the same
//     worker claim the operation again under the same epoch while its first
//     run still went on), an outcome with its images and completion event
//     (the client is told), and everything else as before;
//   - asynchronous (synchronous_commit off for that transaction): a run's
//     start (ASSIGNED → EXECUTING), its events before the outcome,
//     heartbeats, notifications, layer holds (LayerGuard's Hold, Renew and
//     Release). A claim that finds no work is rolled back (it only locked
//     the worker's row).
//
// Losing an asynchronous write is harmless. PostgreSQL writes WAL in order,
// so a durable commit also makes every commit before it durable: the
// outcome takes the run's earlier writes with it. A crash in between loses
// only a tail of them. A lost start leaves the operation ASSIGNED under the
// same lease, which the outcome accepts (should the lease run out first,
// the reaper requeues it instead of failing it: its command may run twice).
// A lost heartbeat shortens a lease by at most a third, after which the
// fences refuse the worker's writes as for any expired lease. A lost
// notification is one that nobody was connected to receive (listeners
// reconnect and poll). A hold is seen by a collection batch as soon as it
// commits (an asynchronous commit is visible at once; the holds lock orders
// the two either way), so only a PostgreSQL crash within the WAL writer's
// delay (~0.6 s) can lose one, and then only a layer both older than the
// collection's grace (15 min; a layer being committed is younger) and
// named by no image row any more (its image deleted meanwhile) is exposed;
// the next durable commit of the node (its outcome) makes the hold
// durable, and the node's next renewal (every TTL/4) finds fewer holds
// than it made and holds its layers again (s3store). A lost release leaves a hold to expire (TTL); a lost renewal
// shortens it by one renewal period. Lost events are written again: this store keeps the
// events it wrote asynchronously (redoLog) and the outcome's transaction
// inserts the operation's missing ones, so the log a client reads after the
// outcome is whole.

// asyncCommit makes the commit of the transaction it runs in asynchronous.
// set_config works where SET LOCAL warns (a batch's implicit transaction).
const asyncCommit = `SELECT set_config('synchronous_commit', 'off', true)`

// execAsync runs one statement in a transaction of its own whose commit
// does not wait for the WAL flush, in one round trip (a batch runs in one
// implicit transaction).
func (p *classPool) execAsync(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	b := &pgx.Batch{}
	b.Queue(asyncCommit)
	b.Queue(sql, args...)
	br := p.Pool.SendBatch(ctx, b)
	_, err := br.Exec()
	var tag pgconn.CommandTag
	if err == nil {
		tag, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, p.classify(err)
}

// inAsyncTx is inTx with an asynchronous commit.
func inAsyncTx(ctx context.Context, q querier, fn func(tx pgx.Tx) error) error {
	return inTx(ctx, q, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, asyncCommit); err != nil {
			return err
		}
		return fn(tx)
	})
}

// redoCap bounds the event bytes kept for redo; past it, an append
// commits durably, which makes every earlier one durable too.
const redoCap = 1 << 20

// redoLog keeps the events this store appended with asynchronous commits
// until a durable commit of this store has made them durable (WAL is
// flushed in order), so the outcome of their operation can write again
// those a PostgreSQL crash lost.
type redoLog struct {
	mu    sync.Mutex
	seq   uint64                    // of the last append recorded
	ops   map[string][]pendingEvent // by operation, in append order
	bytes int
}

type pendingEvent struct {
	seq uint64
	ev  store.Event
}

// add records ev of op, committed asynchronously.
func (r *redoLog) add(op string, ev store.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ops == nil {
		r.ops = map[string][]pendingEvent{}
	}
	r.seq++
	r.ops[op] = append(r.ops[op], pendingEvent{seq: r.seq, ev: ev})
	r.bytes += len(ev.Data) + len(ev.Type) + 64
}

// full reports whether the next append should commit durably.
func (r *redoLog) full() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes >= redoCap
}

// mark returns the position a durable commit starting now covers.
func (r *redoLog) mark() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seq
}

// events returns op's kept events with IDs below before, the last
// appended of each ID (a later attempt of op on this node wins).
func (r *redoLog) events(op string, before int64) []store.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	last := map[int64]int{}
	var out []store.Event
	for _, p := range r.ops[op] {
		if p.ev.ID >= before {
			continue
		}
		if i, ok := last[p.ev.ID]; ok {
			out[i] = p.ev
			continue
		}
		last[p.ev.ID] = len(out)
		out = append(out, p.ev)
	}
	return out
}

// durable forgets the events recorded up to mark (a durable commit that
// started after them has committed) and every event of op (its outcome
// committed; "" for none).
func (r *redoLog) durable(mark uint64, op string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for o, evs := range r.ops {
		keep := evs[:0]
		for _, p := range evs {
			if p.seq > mark && o != op {
				keep = append(keep, p)
			} else {
				r.bytes -= len(p.ev.Data) + len(p.ev.Type) + 64
			}
		}
		if len(keep) == 0 {
			delete(r.ops, o)
		} else {
			r.ops[o] = keep
		}
	}
}

// redoEvents inserts those of evs (op's events written asynchronously)
// that a crash lost, inside the transaction of op's outcome.
func redoEvents(ctx context.Context, tx pgx.Tx, op string, evs []store.Event) error {
	if len(evs) == 0 {
		return nil
	}
	ids := make([]int64, len(evs))
	ts := make([]time.Time, len(evs))
	spids := make([]int32, len(evs))
	types := make([]string, len(evs))
	data := make([]string, len(evs))
	for i, ev := range evs {
		ids[i], ts[i], spids[i], types[i], data[i] = ev.ID, ev.TS, int32(ev.Spid), ev.Type, ev.Data
	}
	_, err := tx.Exec(ctx, `INSERT INTO events(operation, id, ts, spid, type, data)
		SELECT $1::text, e.* FROM unnest($2::bigint[], $3::timestamptz[], $4::integer[], $5::text[], $6::text[]) AS e
		ON CONFLICT (operation, id) DO NOTHING`, op, ids, ts, spids, types, data)
	return err
}

// redoFor returns the redo log's mark before out's durable commit and the
// events of out's operation to write again with it.
func (s *Store) redoFor(out store.Outcome) (uint64, []store.Event) {
	mark := s.redo.mark()
	if out.Completion.Type == "" || out.Completion.ID < 0 {
		return mark, nil // no live log: nothing was appended here
	}
	return mark, s.redo.events(out.Operation.UUID, out.Completion.ID)
}
