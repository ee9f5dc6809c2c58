package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
	"github.com/jackc/pgx/v5"
)

var _ store.Cluster = (*Queue)(nil)

// insertLimited inserts o with its request or node, as
// InsertOperationLimited does. A queued run's workers are told at the
// commit (ChannelQueue). The statements go in one batch: this is on the
// path of every spawn on a cluster.
func (s *Store) insertLimited(ctx context.Context, o store.Operation, limit int, request []byte, node string) error {
	return inTx(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`SELECT pg_advisory_xact_lock($1, hashtext($2))`, lockInflight, o.Account)
		var req any
		held := request != nil && o.ImageUUID != ""
		if request != nil {
			req = string(request)
		}
		if held {
			b.Queue(holdQueuedImage, o.ImageUUID)
		}
		b.Queue(`INSERT INTO operations(uuid, account, kind, status, created_at, image_uuid, metadata, request, node)
			SELECT $1::text,$2::text,$3::text,$4::text,$5::timestamptz,$6::text,$7::text,$9::text,$10::text WHERE (SELECT COUNT(*) FROM operations WHERE account=$2 AND status IN `+inFlight+`) < $8`,
			o.UUID, o.Account, o.Kind, o.Status, o.CreatedAt, nullStr(o.ImageUUID), o.Metadata, limit, req, nullStr(node))
		if request != nil {
			b.Queue(`SELECT pg_notify($1, '')`, store.ChannelQueue)
		}
		br := tx.SendBatch(ctx, b)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		if held {
			var u string
			err := br.QueryRow().Scan(&u)
			if errors.Is(err, pgx.ErrNoRows) {
				return errdefs.NotFound("image %s not found: it was deleted", o.ImageUUID)
			}
			if err != nil {
				return err
			}
		}
		res, err := br.Exec()
		if err != nil {
			return classify(err, "operation %s exists", o.UUID)
		}
		if res.RowsAffected() == 0 {
			return errdefs.ResourceExhausted("account has %d operations in flight (the limit): wait for some to finish or cancel them", limit)
		}
		if request != nil {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		return br.Close()
	})
}

// holdQueuedImage checks, in a queued run's insert, that its image is
// still live and locks its row until the insert commits: a deletion waits
// for the run to be recorded, and a purge after the deletion sees the run
// in flight (PurgeImages keeps its row, and so its chain), or the run
// fails here at admission instead of on a worker with its chain gone.
const holdQueuedImage = `SELECT uuid FROM images WHERE uuid=$1 AND deleted_at IS NULL FOR SHARE`

// InsertQueued inserts o with the request a worker runs it from.
func (q *Queue) InsertQueued(ctx context.Context, o store.Operation, limit int, request []byte) error {
	if request == nil {
		request = []byte{}
	}
	return q.s.insertLimited(ctx, o, limit, request, "")
}

// InsertLocal inserts o, run by node itself.
func (q *Queue) InsertLocal(ctx context.Context, o store.Operation, limit int, node string) error {
	if node == "" {
		return errdefs.InvalidArgument("local operation %s without a node", o.UUID)
	}
	return q.s.insertLimited(ctx, o, limit, nil, node)
}

// Request returns a queued operation's request.
func (q *Queue) Request(ctx context.Context, op string) ([]byte, error) {
	var r *string
	err := q.s.pool.QueryRow(ctx, `SELECT request FROM operations WHERE uuid=$1`, op).Scan(&r)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && r == nil) {
		return nil, errdefs.NotFound("operation %s has no queued request", op)
	}
	if err != nil {
		return nil, err
	}
	return []byte(*r), nil
}

// UnfinishedLocal returns node's own operations in flight.
func (q *Queue) UnfinishedLocal(ctx context.Context, node string) ([]store.Operation, error) {
	return q.s.queryOps(ctx, `SELECT `+opCols+` FROM operations WHERE status IN `+inFlight+` AND node=$1 ORDER BY created_at, uuid`, node)
}

// Placement says where op runs.
func (q *Queue) Placement(ctx context.Context, op string) (store.Placement, error) {
	var p store.Placement
	var owner, addr, node *string
	var exp *time.Time
	err := q.s.pool.QueryRow(ctx, `SELECT o.status, CASE WHEN o.status IN `+leased+` THEN o.lease_owner END, w.address, o.node, o.lease_expires
		FROM operations o LEFT JOIN workers w ON o.status IN `+inFlight+` AND w.id = COALESCE(o.node, o.lease_owner) WHERE o.uuid=$1`, op).
		Scan(&p.Status, &owner, &addr, &node, &exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, errdefs.NotFound("operation %s not found", op)
	}
	p.Worker, p.Address, p.Node, p.Expires = str(owner), str(addr), str(node), tm(exp)
	return p, err
}

// CancelPending finishes an operation no worker has claimed.
func (q *Queue) CancelPending(ctx context.Context, out store.Outcome) (bool, error) {
	done := false
	err := inTx(ctx, q.s.pool, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM operations WHERE uuid=$1 AND status='PENDING' AND node IS NULL FOR UPDATE`, out.Operation.UUID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		done = true
		return finishOperation(ctx, tx, out, nil)
	})
	return done, err
}

// RequestCancel marks op, in flight, as to be cancelled.
func (q *Queue) RequestCancel(ctx context.Context, op string) (bool, error) {
	res, err := q.s.pool.Exec(ctx, `UPDATE operations SET cancel_requested=true WHERE uuid=$1 AND status IN `+inFlight, op)
	if err != nil {
		return false, err
	}
	return res.RowsAffected() > 0, nil
}

// CancelRequested returns those of ops a cancel was asked for.
func (q *Queue) CancelRequested(ctx context.Context, ops []string) ([]string, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	rows, err := q.s.pool.Query(ctx, `SELECT uuid FROM operations WHERE uuid = ANY($1) AND cancel_requested`, ops)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// SetAddress records worker's advertised address.
func (q *Queue) SetAddress(ctx context.Context, worker, addr string) error {
	res, err := q.s.pool.Exec(ctx, `UPDATE workers SET address=$2 WHERE id=$1`, worker, addr)
	if err == nil && res.RowsAffected() == 0 {
		return errdefs.NotFound("worker %s is not registered: register it first", worker)
	}
	return err
}

// LiveAddresses returns the addresses of the live workers (see store.Cluster).
func (q *Queue) LiveAddresses(ctx context.Context) (map[string]string, error) {
	rows, err := q.s.pool.Query(ctx, `SELECT id, address FROM workers
		WHERE address <> '' AND heartbeat_at > clock_timestamp() - $1 * interval '1 microsecond'`, micros(q.cfg.LeaseTTL))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var id, addr string
	_, err = pgx.ForEachRow(rows, []any{&id, &addr}, func() error { out[id] = addr; return nil })
	return out, err
}

// Secret returns the cluster's shared secret.
func (q *Queue) Secret(ctx context.Context) (string, error) {
	var s string
	err := q.s.pool.QueryRow(ctx, `SELECT secret FROM cluster WHERE id=1`).Scan(&s)
	return s, err
}

// Notify sends one notification per payload on channel, with an
// asynchronous commit: a notification is only a wake-up (async.go).
func (q *Queue) Notify(ctx context.Context, channel string, payloads []string) error {
	if len(payloads) == 0 {
		return nil
	}
	_, err := q.s.pool.execAsync(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`, channel, payloads)
	return err
}

// Listen listens on channels from a connection of its own (not the pool's:
// a LISTEN belongs to its session), until ctx ends or the connection fails.
func (q *Queue) Listen(ctx context.Context, channels []string, ready func(), fn func(channel, payload string)) error {
	conn, err := pgx.ConnectConfig(ctx, q.s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL to listen: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, c := range channels {
		if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{c}.Sanitize()); err != nil {
			return fmt.Errorf("listen on %s: %w", c, err)
		}
	}
	if ready != nil {
		ready()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		fn(n.Channel, n.Payload)
	}
}
