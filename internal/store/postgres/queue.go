package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
	"github.com/jackc/pgx/v5"
)

// Queue is the PostgreSQL [store.Queue]: a claim with FOR UPDATE SKIP
// LOCKED over the operations table, leases and fencing epochs in its
// rows, workers in the workers table (migration 2).
type Queue struct {
	s   *Store
	cfg store.QueueConfig
}

var _ store.Queue = (*Queue)(nil)

// NewQueue returns the work queue of s.
func NewQueue(s *Store, cfg store.QueueConfig) *Queue {
	return &Queue{s: s, cfg: cfg.WithDefaults()}
}

// micros passes a duration to SQL as a number of microseconds, used as
// ($n * interval '1 microsecond').
func micros(d time.Duration) int64 { return d.Microseconds() }

const leased = `('ASSIGNED','EXECUTING')`

// fenced is the condition under which lease ($1 op, $2 worker, $3 epoch)
// still holds, by the database clock.
const fenced = `uuid=$1 AND lease_owner=$2 AND lease_epoch=$3 AND status IN ` + leased + ` AND lease_expires > clock_timestamp()`

func lost(l store.Lease) error {
	return errdefs.FailedPrecondition("worker %s lost its lease on operation %s (epoch %d): stop it and publish nothing", l.Worker, l.Op, l.Epoch)
}

// RegisterWorker creates or updates w's row, as a heartbeat.
func (q *Queue) RegisterWorker(ctx context.Context, w store.Worker) error {
	if w.ID == "" || w.Slots <= 0 {
		return errdefs.InvalidArgument("worker %q with %d slots: give it an ID and at least one slot", w.ID, w.Slots)
	}
	_, err := q.s.pool.Exec(ctx, `INSERT INTO workers(id, slots) VALUES($1,$2)
		ON CONFLICT (id) DO UPDATE SET slots=excluded.slots, heartbeat_at=clock_timestamp()`, w.ID, w.Slots)
	return err
}

// Heartbeat renews the worker and the leases of held it still holds.
func (q *Queue) Heartbeat(ctx context.Context, worker string, held []store.Lease) ([]store.Lease, error) {
	ops := make([]string, len(held))
	epochs := make([]int64, len(held))
	for i, l := range held {
		ops[i], epochs[i] = l.Op, l.Epoch
	}
	var kept []store.Lease
	// Asynchronous: a heartbeat lost in a crash shortens the leases (async.go).
	err := inAsyncTx(ctx, q.s.pool, func(tx pgx.Tx) error {
		res, err := tx.Exec(ctx, `UPDATE workers SET heartbeat_at=clock_timestamp() WHERE id=$1`, worker)
		if err != nil {
			return err
		}
		if res.RowsAffected() == 0 {
			return errdefs.NotFound("worker %s is not registered: register it first", worker)
		}
		if len(held) == 0 {
			return nil
		}
		rows, err := tx.Query(ctx, `UPDATE operations o SET lease_expires=clock_timestamp() + $4 * interval '1 microsecond'
			FROM unnest($2::text[], $3::bigint[]) AS h(uuid, epoch)
			WHERE o.uuid=h.uuid AND o.lease_epoch=h.epoch AND o.lease_owner=$1 AND o.status IN `+leased+` AND o.lease_expires > clock_timestamp()
			RETURNING o.uuid, o.account, o.lease_epoch, o.lease_expires, o.attempts`, worker, ops, epochs, micros(q.cfg.LeaseTTL))
		if err != nil {
			return err
		}
		kept, err = scanLeases(rows, worker)
		return err
	})
	return kept, err
}

func scanLeases(rows pgx.Rows, worker string) ([]store.Lease, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Lease, error) {
		l := store.Lease{Worker: worker}
		err := r.Scan(&l.Op, &l.Account, &l.Epoch, &l.Expires, &l.Attempt)
		return l, err
	})
}

// Claim leases one PENDING operation to worker. The worker's row is
// locked first, so its own concurrent claims never overrun its slots; the
// operation is picked with SKIP LOCKED among the 64 oldest queued, so
// claimers never wait for each other.
//
// Order of preference: operations queued longer than LocalityWait (oldest
// first, so none starves), then those on an image this worker made, then
// the rest. An operation whose input image was made by another worker
// that is alive is left to it until LocalityWait has passed.
func (q *Queue) Claim(ctx context.Context, worker string) (store.Lease, bool, error) {
	var l store.Lease
	var ok bool
	err := inTx(ctx, q.s.pool, func(tx pgx.Tx) error {
		var free int
		err := tx.QueryRow(ctx, `SELECT w.slots - (SELECT count(*) FROM operations WHERE lease_owner=w.id AND status IN `+leased+`)
			FROM workers w WHERE w.id=$1 AND w.heartbeat_at > clock_timestamp() - $2 * interval '1 microsecond' FOR UPDATE OF w`,
			worker, micros(q.cfg.LeaseTTL)).Scan(&free)
		if errors.Is(err, pgx.ErrNoRows) {
			return errdefs.FailedPrecondition("worker %s is not registered or its heartbeat expired: register it again before claiming", worker)
		}
		if err != nil {
			return err
		}
		if free <= 0 {
			return errNothingClaimed
		}
		rows, err := tx.Query(ctx, `WITH cand AS (
				SELECT o.uuid, o.queued_at,
					(SELECT p.lease_owner FROM images i JOIN operations p ON p.uuid = i.operation WHERE i.uuid = o.image_uuid) AS maker
				FROM operations o WHERE o.status = 'PENDING' AND o.node IS NULL ORDER BY o.queued_at, o.uuid LIMIT 64),
			pick AS (
				SELECT o.uuid FROM operations o JOIN cand c ON c.uuid = o.uuid LEFT JOIN workers mw ON mw.id = c.maker
				WHERE o.status = 'PENDING' AND (c.maker IS NULL OR c.maker = $1
					OR c.queued_at <= clock_timestamp() - $3 * interval '1 microsecond'
					OR mw.id IS NULL OR mw.heartbeat_at <= clock_timestamp() - $2 * interval '1 microsecond')
				ORDER BY c.queued_at <= clock_timestamp() - $3 * interval '1 microsecond' DESC, c.maker IS NOT DISTINCT FROM $1 DESC, o.queued_at, o.uuid
				LIMIT 1 FOR UPDATE OF o SKIP LOCKED)
			UPDATE operations SET status='ASSIGNED', lease_owner=$1, lease_epoch=lease_epoch+1, attempts=attempts+1,
				lease_expires=clock_timestamp() + $2 * interval '1 microsecond', started_at=COALESCE(started_at, clock_timestamp())
			FROM pick WHERE operations.uuid = pick.uuid
			RETURNING operations.lease_epoch, operations.lease_expires, operations.attempts, operations.request,
				(SELECT COALESCE(MAX(e.id), -1) FROM events e WHERE e.operation = operations.uuid), `+prefixed("operations.", opCols),
			worker, micros(q.cfg.LeaseTTL), micros(q.cfg.LocalityWait))
		if err != nil {
			return err
		}
		ls, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Lease, error) {
			l := store.Lease{Worker: worker}
			var req *string
			o, err := scanOp(prefixScan{r, []any{&l.Epoch, &l.Expires, &l.Attempt, &req, &l.LastEvent}})
			l.Op, l.Account, l.Row = o.UUID, o.Account, o
			if req != nil {
				l.Request = []byte(*req)
			}
			return l, err
		})
		if err != nil {
			return err
		}
		if len(ls) == 0 {
			return errNothingClaimed // only the worker's row was locked: no commit to wait for
		}
		l, ok = ls[0], true
		return nil
	})
	if errors.Is(err, errNothingClaimed) {
		err = nil
	}
	return l, ok, err
}

// prefixScan is a row whose first columns go to dst, the rest to the
// scanner it is handed to.
type prefixScan struct {
	r   pgx.Row
	dst []any
}

func (p prefixScan) Scan(rest ...any) error { return p.r.Scan(append(p.dst, rest...)...) }

// errNothingClaimed rolls back a claim that found no work.
var errNothingClaimed = errors.New("nothing to claim")

// Start moves the leased operation to EXECUTING, with an asynchronous
// commit: if a crash loses it, the operation stays ASSIGNED under the same
// lease, which the outcome accepts (async.go).
func (q *Queue) Start(ctx context.Context, l store.Lease) error {
	res, err := q.s.pool.execAsync(ctx, `UPDATE operations SET status='EXECUTING' WHERE `+fenced+` AND status='ASSIGNED'`, l.Op, l.Worker, l.Epoch)
	if err != nil {
		return err
	}
	if res.RowsAffected() == 0 {
		return lost(l)
	}
	return nil
}

// Complete finishes the leased operation, fenced by its lease. The row
// lock taken by the check holds until the finish commits, so the reaper
// cannot end the lease in between.
func (q *Queue) Complete(ctx context.Context, l store.Lease, out store.Outcome) error {
	if out.Operation.UUID != l.Op {
		return errdefs.InvalidArgument("outcome of operation %s under the lease of %s", out.Operation.UUID, l.Op)
	}
	mark, redo := q.s.redoFor(out)
	err := inTx(ctx, q.s.pool, func(tx pgx.Tx) error {
		// The followers on other nodes are told at the commit itself (a
		// notification goes out when its transaction commits, and not at
		// all if it rolls back), not by the node's notifier after it.
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM operations, pg_notify($4, $1) WHERE `+fenced+` FOR UPDATE OF operations`,
			l.Op, l.Worker, l.Epoch, store.ChannelEvents).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return lost(l)
		}
		if err != nil {
			return err
		}
		return finishOperation(ctx, tx, out, redo)
	})
	if err == nil {
		q.s.redo.durable(mark, l.Op)
	}
	return err
}

// Reap ends expired leases: not started → PENDING while claims remain,
// else FAILED with the reason. Concurrent reapers each take rows the
// others have not: a reaped row no longer matches.
func (q *Queue) Reap(ctx context.Context, completion func(op store.Operation) store.Event) (requeued, failed []string, err error) {
	err = inTx(ctx, q.s.pool, func(tx pgx.Tx) error {
		requeued, failed = nil, nil
		rows, err := tx.Query(ctx, `WITH r AS (
				SELECT uuid, status = 'ASSIGNED' AND attempts < $1 AS again FROM operations
				WHERE status IN `+leased+` AND lease_expires <= clock_timestamp() FOR UPDATE SKIP LOCKED)
			UPDATE operations o SET
				status = CASE WHEN r.again THEN 'PENDING' ELSE 'FAILED' END,
				error = CASE WHEN r.again THEN NULL
					WHEN o.status = 'EXECUTING' THEN format('worker %s stopped renewing its lease (no heartbeat within %s) while the operation ran: its result is lost, run it again', o.lease_owner, $2::text)
					ELSE format('worker %s stopped renewing its lease (no heartbeat within %s) and the operation was claimed %s times: giving up', o.lease_owner, $2::text, o.attempts) END,
				finished_at = CASE WHEN r.again THEN NULL ELSE clock_timestamp() END,
				started_at = CASE WHEN r.again THEN NULL ELSE o.started_at END,
				queued_at = CASE WHEN r.again THEN clock_timestamp() ELSE o.queued_at END
			FROM r WHERE o.uuid = r.uuid
			RETURNING `+prefixed("o.", opCols), q.cfg.MaxAttempts, q.cfg.LeaseTTL.String())
		if err != nil {
			return err
		}
		ops, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Operation, error) { return scanOp(r) })
		if err != nil {
			return err
		}
		for _, o := range ops {
			if o.Status == "PENDING" {
				requeued = append(requeued, o.UUID)
				continue
			}
			failed = append(failed, o.UUID)
			if completion == nil {
				continue
			}
			ev := completion(o)
			last, err := lastEventID(ctx, tx, o.UUID, true)
			if err != nil {
				return err
			}
			ev.ID = last + 1
			if err := appendEvent(ctx, tx, o.UUID, ev); err != nil {
				return fmt.Errorf("completion event of reaped operation %s: %w", o.UUID, err)
			}
		}
		return nil
	})
	return requeued, failed, err
}

// Workers lists the registered workers.
func (q *Queue) Workers(ctx context.Context) ([]store.Worker, error) {
	rows, err := q.s.pool.Query(ctx, `SELECT id, slots, registered_at, heartbeat_at, heartbeat_at > clock_timestamp() - $1 * interval '1 microsecond'
		FROM workers ORDER BY id`, micros(q.cfg.LeaseTTL))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Worker, error) {
		var w store.Worker
		err := r.Scan(&w.ID, &w.Slots, &w.RegisteredAt, &w.HeartbeatAt, &w.Alive)
		return w, err
	})
}

// prefixed qualifies each column of the list cols with p.
func prefixed(p, cols string) string {
	parts := strings.Split(cols, ", ")
	for i := range parts {
		parts[i] = p + parts[i]
	}
	return strings.Join(parts, ", ")
}
