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

const opCols = `uuid, account, kind, status, error, created_at, started_at, finished_at, image_uuid, result_image_uuid, result_tag, metadata, cpu_seconds, max_rss_bytes, image_size`

// opListCols are the columns of operations_list (metadata read as an empty string),
// so a list is an index-only scan.
const opListCols = `uuid, account, kind, status, error, created_at, started_at, finished_at, image_uuid, result_image_uuid, result_tag, '', cpu_seconds, max_rss_bytes, image_size`

func scanOp(row pgx.Row) (store.Operation, error) {
	var o store.Operation
	var errS, img, res, tag *string
	var started, finished *time.Time
	err := row.Scan(&o.UUID, &o.Account, &o.Kind, &o.Status, &errS, &o.CreatedAt, &started, &finished, &img, &res, &tag, &o.Metadata,
		&o.CPUSeconds, &o.MaxRSSBytes, &o.ImageSize)
	o.Error, o.ImageUUID, o.ResultImageUUID, o.ResultTag = str(errS), str(img), str(res), str(tag)
	o.StartedAt, o.FinishedAt = tm(started), tm(finished)
	return o, err
}

func (s *Store) queryOps(ctx context.Context, q string, args ...any) ([]store.Operation, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Operation, error) { return scanOp(r) })
}

// InsertOperationLimited writes o unless its account has limit operations
// in flight. The account's lock is taken before the count, in a statement
// of its own, so the count's snapshot sees every insert that held the lock
// before: of concurrent inserts, no more pass than the limit allows.
func (s *Store) InsertOperationLimited(ctx context.Context, o store.Operation, limit int) error {
	return inTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lock(ctx, tx, lockInflight, o.Account); err != nil {
			return err
		}
		res, err := tx.Exec(ctx, `INSERT INTO operations(uuid, account, kind, status, created_at, image_uuid, metadata)
			SELECT $1::text,$2::text,$3::text,$4::text,$5::timestamptz,$6::text,$7::text WHERE (SELECT COUNT(*) FROM operations WHERE account=$2 AND status IN `+inFlight+`) < $8`,
			o.UUID, o.Account, o.Kind, o.Status, o.CreatedAt, nullStr(o.ImageUUID), o.Metadata, limit)
		if err != nil {
			return classify(err, "operation %s exists", o.UUID)
		}
		if res.RowsAffected() == 0 {
			return errdefs.ResourceExhausted("account has %d operations in flight (the limit): wait for some to finish or cancel them", limit)
		}
		return nil
	})
}

// SetStatus moves an in-flight operation to status.
func (s *Store) SetStatus(ctx context.Context, uuid, status string) error {
	_, err := s.pool.Exec(ctx, `UPDATE operations SET status=$1, started_at=COALESCE(started_at, clock_timestamp()) WHERE uuid=$2 AND status IN `+inFlight,
		status, uuid)
	return err
}

// MoveOperation moves operation uuid from status from to status to: a
// compare-and-set (the row lock makes a concurrent mover re-check).
func (s *Store) MoveOperation(ctx context.Context, uuid, from, to string) error {
	res, err := s.pool.Exec(ctx, `UPDATE operations SET status=$1, started_at=COALESCE(started_at, clock_timestamp()) WHERE uuid=$2 AND status=$3`,
		to, uuid, from)
	if err != nil {
		return fmt.Errorf("operation %s: %s → %s: %w", uuid, from, to, err)
	}
	if res.RowsAffected() == 0 {
		return errdefs.FailedPrecondition("operation %s is not %s: cannot move it to %s", uuid, from, to)
	}
	return nil
}

// FinishOperation records an operation's outcome, all or nothing, once.
func (s *Store) FinishOperation(ctx context.Context, out store.Outcome) error {
	mark, redo := s.redoFor(out)
	err := finishOperation(ctx, s.pool, out, redo)
	if err == nil {
		s.redo.durable(mark, out.Operation.UUID)
	}
	return err
}

// finishOperation records out; redo are events of the operation written
// asynchronously, inserted again if a crash lost them (async.go).
func finishOperation(ctx context.Context, q querier, out store.Outcome, redo []store.Event) error {
	o := out.Operation
	return inTx(ctx, q, func(tx pgx.Tx) error {
		// Lock the row first: of concurrent finishers, the later ones wait
		// here, then find it terminal, before writing anything.
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM operations WHERE uuid=$1 AND status IN `+inFlight+` FOR UPDATE`, o.UUID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return errdefs.FailedPrecondition("operation %s has already finished (or does not exist)", o.UUID)
		}
		if err != nil {
			return err
		}
		if err := redoEvents(ctx, tx, o.UUID, redo); err != nil {
			return fmt.Errorf("write again the events a crash lost: %w", err)
		}
		for _, im := range out.Images {
			if err := insertImage(ctx, tx, im); err != nil {
				return fmt.Errorf("record image %s: %w", im.UUID, err)
			}
		}
		if o.ResultTag != "" && o.ResultImageUUID != "" {
			if err := setTag(ctx, tx, o.Account, o.ResultImageUUID, o.ResultTag); err != nil {
				return fmt.Errorf("tag result: %w", err)
			}
		}
		_, err = tx.Exec(ctx, `UPDATE operations SET status=$1, error=$2, finished_at=$3, result_image_uuid=$4, result_tag=$5, metadata=$6,
			cpu_seconds=$7, max_rss_bytes=$8, image_size=$9 WHERE uuid=$10`,
			o.Status, nullStr(o.Error), o.FinishedAt, nullStr(o.ResultImageUUID), nullStr(o.ResultTag), o.Metadata, o.CPUSeconds, o.MaxRSSBytes,
			o.ImageSize, o.UUID)
		if err != nil {
			return fmt.Errorf("record outcome: %w", err)
		}
		ev := out.Completion
		if ev.Type == "" {
			return nil // no completion event (a test's bare outcome)
		}
		if ev.ID < 0 {
			last, err := lastEventID(ctx, tx, o.UUID, true)
			if err != nil {
				return err
			}
			ev.ID = last + 1
		}
		if err := appendEvent(ctx, tx, o.UUID, ev); err != nil {
			return fmt.Errorf("record completion event: %w", err)
		}
		return nil
	})
}

// Operation returns account's operation with its Metadata.
func (s *Store) Operation(ctx context.Context, account, uuid string) (store.Operation, error) {
	o, err := scanOp(s.pool.QueryRow(ctx, `SELECT `+opCols+` FROM operations WHERE uuid=$1 AND account=$2`, uuid, account))
	if errors.Is(err, pgx.ErrNoRows) {
		return o, errdefs.NotFound("operation %s not found", uuid)
	}
	return o, err
}

// ListOperations lists operations newest first, without their Metadata.
func (s *Store) ListOperations(ctx context.Context, f store.OperationFilter) ([]store.Operation, error) {
	q, a := listQuery(f)
	return s.queryOps(ctx, q, a...)
}

func listQuery(f store.OperationFilter) (string, args) {
	var a args
	q := `SELECT ` + opListCols + ` FROM operations WHERE account=` + a.add(f.Account)
	if len(f.Statuses) > 0 {
		q += ` AND status = ANY(` + a.add(f.Statuses) + `)`
	}
	if f.Kind != "" {
		q += ` AND kind=` + a.add(f.Kind)
	}
	if !f.Since.IsZero() {
		q += ` AND created_at >= ` + a.add(f.Since)
	}
	if !f.Until.IsZero() {
		q += ` AND created_at <= ` + a.add(f.Until)
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q += ` ORDER BY created_at DESC, uuid LIMIT ` + a.add(f.Limit) + ` OFFSET ` + a.add(f.Offset)
	return q, a
}

// UnfinishedOperations returns every in-flight operation, oldest first.
func (s *Store) UnfinishedOperations(ctx context.Context) ([]store.Operation, error) {
	return s.queryOps(ctx, `SELECT `+opCols+` FROM operations WHERE status IN `+inFlight+` ORDER BY created_at, uuid`)
}

// OperationStats returns account's counts by status and CPU seconds.
func (s *Store) OperationStats(ctx context.Context, account string) (map[string]int64, float64, error) {
	rows, err := s.pool.Query(ctx, `SELECT status, COUNT(*), COALESCE(SUM(cpu_seconds), 0) FROM operations WHERE account=$1 GROUP BY status`, account)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	out := map[string]int64{}
	var cpu float64
	for rows.Next() {
		var st string
		var n int64
		var c float64
		if err := rows.Scan(&st, &n, &c); err != nil {
			return nil, 0, err
		}
		out[st] = n
		cpu += c
	}
	return out, cpu, rows.Err()
}

// AppendEvent stores ev in op's log, with an asynchronous commit: the
// outcome of op makes it durable, or writes it again (async.go). Once the
// events kept for that are too many, it commits durably instead.
func (s *Store) AppendEvent(ctx context.Context, op string, ev store.Event) error {
	if s.redo.full() {
		mark := s.redo.mark()
		err := appendEvent(ctx, s.pool, op, ev)
		if err == nil {
			s.redo.durable(mark, "")
		}
		return err
	}
	_, err := s.pool.execAsync(ctx, appendEventSQL, lockEvents, op, ev.ID, ev.TS, ev.Spid, ev.Type, ev.Data)
	if err != nil {
		return classify(err, "event %d of operation %s exists", ev.ID, op)
	}
	s.redo.add(op, ev)
	return nil
}

// appendEventSQL takes the log's lock in the same statement, so an append
// outside a transaction waits for an Update that read the log's last ID
// (LastEventID holds the lock to its commit).
const appendEventSQL = `WITH l AS (SELECT pg_advisory_xact_lock($1, hashtext($2)))
		INSERT INTO events(operation, id, ts, spid, type, data) SELECT $2::text,$3::bigint,$4::timestamptz,$5::integer,$6::text,$7::text FROM l`

func appendEvent(ctx context.Context, q querier, op string, ev store.Event) error {
	_, err := q.Exec(ctx, appendEventSQL, lockEvents, op, ev.ID, ev.TS, ev.Spid, ev.Type, ev.Data)
	return classify(err, "event %d of operation %s exists", ev.ID, op)
}

// Events returns op's events with id > after, in order, at most limit (0: all).
func (s *Store) Events(ctx context.Context, op string, after int64, limit int) ([]store.Event, error) {
	var a args
	q := `SELECT id, ts, spid, type, data FROM events WHERE operation=` + a.add(op) + ` AND id > ` + a.add(after) + ` ORDER BY id`
	if limit > 0 {
		q += ` LIMIT ` + a.add(limit)
	}
	rows, err := s.pool.Query(ctx, q, a...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Event, error) {
		var e store.Event
		err := r.Scan(&e.ID, &e.TS, &e.Spid, &e.Type, &e.Data)
		return e, err
	})
}

// LastEventID returns the highest event id of op, or -1.
func (s *Store) LastEventID(ctx context.Context, op string) (int64, error) {
	return lastEventID(ctx, s.pool, op, false)
}

// lastEventID reads op's last event ID; with locked, inside a transaction,
// it first takes the log's lock, so no other writer appends until the
// transaction ends (the read holds at commit).
func lastEventID(ctx context.Context, q querier, op string, locked bool) (int64, error) {
	if locked {
		if err := lock(ctx, q, lockEvents, op); err != nil {
			return 0, err
		}
	}
	var id int64
	err := q.QueryRow(ctx, `SELECT COALESCE(MAX(id), -1) FROM events WHERE operation=$1`, op).Scan(&id)
	return id, err
}

func (f expiry) where(a *args) string {
	q := ` FROM operations WHERE status NOT IN ` + inFlight + ` AND finished_at IS NOT NULL AND finished_at < ` + a.add(f.FinishedBefore) +
		` AND created_at < ` + a.add(f.FinishedBefore)
	if f.Account != "" {
		q += ` AND account=` + a.add(f.Account)
	} else if len(f.Except) > 0 {
		q += ` AND NOT (account = ANY(` + a.add(f.Except) + `))`
	}
	return q
}

type expiry store.OperationExpiry

// ExpiredOperations counts the operations f selects and their events.
func (s *Store) ExpiredOperations(ctx context.Context, f store.OperationExpiry) (ops, events int64, err error) {
	var a args
	q := expiry(f).where(&a)
	err = s.pool.QueryRow(ctx, `SELECT (SELECT COUNT(*)`+q+`), (SELECT COUNT(*) FROM events WHERE operation IN (SELECT uuid`+q+`))`, a...).
		Scan(&ops, &events)
	return ops, events, err
}

// DeleteExpiredOperations deletes up to f.Limit of the operations f
// selects with their event logs, in one transaction.
func (s *Store) DeleteExpiredOperations(ctx context.Context, f store.OperationExpiry) (ops, events int64, err error) {
	if f.Limit <= 0 {
		f.Limit = 500
	}
	var a args
	q := expiry(f).where(&a)
	err = inTx(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT uuid`+q+` LIMIT `+a.add(f.Limit), a...)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(ids) == 0 {
			return err
		}
		res, err := tx.Exec(ctx, `DELETE FROM events WHERE operation = ANY($1)`, ids)
		if err != nil {
			return err
		}
		events = res.RowsAffected()
		if res, err = tx.Exec(ctx, `DELETE FROM operations WHERE uuid = ANY($1)`, ids); err != nil {
			return err
		}
		ops = res.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return ops, events, nil
}
