package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
)

// Operation is an operation row. Metadata is the wire JSON of the request
// echo (and, for runs, the result once known).
type Operation struct {
	UUID            string
	Account         string
	Kind            string
	Status          string
	Error           string
	CreatedAt       time.Time
	StartedAt       time.Time
	FinishedAt      time.Time
	ImageUUID       string
	ResultImageUUID string
	ResultTag       string
	Metadata        string
	CPUSeconds      float64
	MaxRSSBytes     int64
	ImageSize       int64
}

const opCols = `uuid, account, kind, status, error, created_at, started_at, finished_at, image_uuid, result_image_uuid, result_tag, metadata, cpu_seconds, max_rss_bytes, image_size`

// opListCols are what a list returns: every column but metadata (read as
// an empty string), all of them in the operations_list index, so a list
// never reads a row and its stored output.
const opListCols = `uuid, account, kind, status, error, created_at, started_at, finished_at, image_uuid, result_image_uuid, result_tag, '', cpu_seconds, max_rss_bytes, image_size`

func scanOp(sc interface{ Scan(...any) error }) (Operation, error) {
	var o Operation
	var errS, img, res, tag sql.NullString
	var created int64
	var started, finished sql.NullInt64
	err := sc.Scan(&o.UUID, &o.Account, &o.Kind, &o.Status, &errS, &created, &started, &finished, &img, &res, &tag, &o.Metadata, &o.CPUSeconds, &o.MaxRSSBytes, &o.ImageSize)
	o.Error, o.ImageUUID, o.ResultImageUUID, o.ResultTag = errS.String, img.String, res.String, tag.String
	o.CreatedAt = time.Unix(0, created)
	o.StartedAt, o.FinishedAt = nullTime(started), nullTime(finished)
	return o, err
}

// InsertOperationLimited writes a new operation unless its account already
// has limit operations in flight (PENDING, ASSIGNED or EXECUTING); then it
// writes nothing and returns an error of class ErrResourceExhausted. Check
// and insert are one statement on the single writer connection, so
// concurrent inserts cannot all pass the check. The count reads the small
// partial index of in-flight operations (named, since without statistics
// SQLite would rather scan the account's whole history).
func (s *Store) InsertOperationLimited(ctx context.Context, o Operation, limit int) error {
	res, err := s.w.ExecContext(ctx, `INSERT INTO operations(uuid, account, kind, status, created_at, image_uuid, metadata)
		SELECT ?,?,?,?,?,?,? WHERE (SELECT COUNT(*) FROM operations INDEXED BY operations_inflight
			WHERE account=? AND status IN ('PENDING','ASSIGNED','EXECUTING')) < ?`,
		o.UUID, o.Account, o.Kind, o.Status, o.CreatedAt.UnixNano(), nullStr(o.ImageUUID), o.Metadata, o.Account, limit)
	if err != nil {
		return conflict(err, "operation %s exists", o.UUID)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return errdefs.ResourceExhausted("account has %d operations in flight (the limit): wait for some to finish or cancel them", limit)
	}
	return nil
}

// SetStatus moves a non-terminal operation to status.
func (s *Store) SetStatus(ctx context.Context, uuid, status string) error {
	_, err := s.w.ExecContext(ctx, `UPDATE operations SET status=?, started_at=COALESCE(started_at, ?) WHERE uuid=? AND status IN ('PENDING','ASSIGNED','EXECUTING')`, status, now(), uuid)
	return err
}

// MoveOperation moves operation uuid from status from to status to (both
// in flight), recording when it started. It is a compare-and-set: when the
// row is not in from (finished, or moved by someone else), it writes
// nothing and returns an error of class ErrFailedPrecondition.
func (s *Store) MoveOperation(ctx context.Context, uuid, from, to string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE operations SET status=?, started_at=COALESCE(started_at, ?) WHERE uuid=? AND status=?`, to, now(), uuid, from)
	if err != nil {
		return fmt.Errorf("operation %s: %s → %s: %w", uuid, from, to, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return errdefs.FailedPrecondition("operation %s is not %s: cannot move it to %s", uuid, from, to)
	}
	return nil
}

// Outcome is everything an operation leaves when it ends, written by
// FinishOperation in one transaction.
type Outcome struct {
	// Operation is the terminal row: UUID, Status (SUCCESS, FAILED or
	// CANCELLED), Error, FinishedAt, ResultImageUUID, ResultTag (moved to
	// the result image), Metadata, CPUSeconds, MaxRSSBytes, ImageSize.
	Operation Operation
	// Images are the rows the operation makes visible (an import's chain,
	// a run's snapshot), inserted in order before the row is finished.
	Images []Image
	// Completion is the last event of the operation's log. An ID below 0
	// takes the next id after the stored events.
	Completion Event
}

// FinishOperation records an operation's outcome: its images, its tag, its
// terminal row and its completion event, all or nothing, so a crash never
// leaves an image visible whose operation did not succeed, nor a SUCCESS
// whose image is missing. An operation that has already finished is left
// untouched and the call fails with ErrFailedPrecondition.
func (s *Store) FinishOperation(ctx context.Context, out Outcome) error {
	return s.sqlTx(ctx, func(tx *sql.Tx) error { return finishOperation(ctx, tx, out) })
}

func finishOperation(ctx context.Context, tx *sql.Tx, out Outcome) error {
	o := out.Operation
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
	res, err := tx.ExecContext(ctx, `UPDATE operations SET status=?, error=?, finished_at=?, result_image_uuid=?, result_tag=?, metadata=?, cpu_seconds=?, max_rss_bytes=?, image_size=?
		WHERE uuid=? AND status IN ('PENDING','ASSIGNED','EXECUTING')`,
		o.Status, nullStr(o.Error), o.FinishedAt.UnixNano(), nullStr(o.ResultImageUUID), nullStr(o.ResultTag), o.Metadata, o.CPUSeconds, o.MaxRSSBytes, o.ImageSize, o.UUID)
	if err != nil {
		return fmt.Errorf("record outcome: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return errdefs.FailedPrecondition("operation %s has already finished (or does not exist)", o.UUID)
	}
	ev := out.Completion
	if ev.Type == "" {
		return nil // no completion event (a test's bare outcome)
	}
	if ev.ID < 0 {
		var last sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(id) FROM events WHERE operation=?`, o.UUID).Scan(&last); err != nil {
			return err
		}
		ev.ID = 0
		if last.Valid {
			ev.ID = last.Int64 + 1
		}
	}
	if err := appendEvent(ctx, tx, o.UUID, ev); err != nil {
		return fmt.Errorf("record completion event: %w", err)
	}
	return nil
}

// Operation returns account's operation.
func (s *Store) Operation(ctx context.Context, account, uuid string) (Operation, error) {
	o, err := scanOp(s.r.QueryRowContext(ctx, `SELECT `+opCols+` FROM operations WHERE uuid=? AND account=?`, uuid, account))
	if errors.Is(err, sql.ErrNoRows) {
		return o, errdefs.NotFound("operation %s not found", uuid)
	}
	return o, err
}

// OperationFilter selects operations to list.
type OperationFilter struct {
	Account  string
	Statuses []string
	Kind     string
	Since    time.Time
	Until    time.Time
	Limit    int
	Offset   int
}

// ListOperations lists operations newest first, without their Metadata.
func (s *Store) ListOperations(ctx context.Context, f OperationFilter) ([]Operation, error) {
	q, args := listQuery(f)
	return s.queryOps(ctx, q, args...)
}

func listQuery(f OperationFilter) (string, []any) {
	q := `SELECT ` + opListCols + ` FROM operations WHERE account=?`
	args := []any{f.Account}
	if len(f.Statuses) > 0 {
		q += ` AND status IN (?` + strings.Repeat(",?", len(f.Statuses)-1) + `)`
		for _, st := range f.Statuses {
			args = append(args, st)
		}
	}
	if f.Kind != "" {
		q += ` AND kind=?`
		args = append(args, f.Kind)
	}
	if !f.Since.IsZero() {
		q += ` AND created_at >= ?`
		args = append(args, f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		q += ` AND created_at <= ?`
		args = append(args, f.Until.UnixNano())
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q += ` ORDER BY created_at DESC, uuid LIMIT ? OFFSET ?`
	args = append(args, f.Limit, f.Offset)
	return q, args
}

func (s *Store) queryOps(ctx context.Context, q string, args ...any) ([]Operation, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Operation
	for rows.Next() {
		o, err := scanOp(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// UnfinishedOperations returns every operation not in a terminal state (recovery).
func (s *Store) UnfinishedOperations(ctx context.Context) ([]Operation, error) {
	return s.queryOps(ctx, `SELECT `+opCols+` FROM operations WHERE status IN ('PENDING','ASSIGNED','EXECUTING') ORDER BY created_at`)
}

// OperationStats returns counts by status and total CPU seconds for account.
func (s *Store) OperationStats(ctx context.Context, account string) (map[string]int64, float64, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT status, COUNT(*), SUM(cpu_seconds) FROM operations WHERE account=? GROUP BY status`, account)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	out := map[string]int64{}
	var cpu float64
	for rows.Next() {
		var st string
		var n int64
		var c sql.NullFloat64
		if err := rows.Scan(&st, &n, &c); err != nil {
			return nil, 0, err
		}
		out[st] = n
		cpu += c.Float64
	}
	return out, cpu, rows.Err()
}

// Event is one stored event.
type Event struct {
	ID   int64
	TS   time.Time
	Spid int
	Type string
	Data string
}

// AppendEvent stores ev for operation op.
func (s *Store) AppendEvent(ctx context.Context, op string, ev Event) error {
	return appendEvent(ctx, s.w, op, ev)
}

func appendEvent(ctx context.Context, q querier, op string, ev Event) error {
	_, err := q.ExecContext(ctx, `INSERT INTO events(operation, id, ts, spid, type, data) VALUES(?,?,?,?,?,?)`, op, ev.ID, ev.TS.UnixNano(), ev.Spid, ev.Type, ev.Data)
	return conflict(err, "event %d of operation %s exists", ev.ID, op)
}

// Events returns op's events with id > after, in order, at most limit (0 = all).
func (s *Store) Events(ctx context.Context, op string, after int64, limit int) ([]Event, error) {
	q := `SELECT id, ts, spid, type, data FROM events WHERE operation=? AND id > ? ORDER BY id`
	args := []any{op, after}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var ts int64
		if err := rows.Scan(&e.ID, &ts, &e.Spid, &e.Type, &e.Data); err != nil {
			return nil, err
		}
		e.TS = time.Unix(0, ts)
		out = append(out, e)
	}
	return out, rows.Err()
}

// LastEventID returns the highest event id of op, or -1.
func (s *Store) LastEventID(ctx context.Context, op string) (int64, error) {
	return lastEventID(ctx, s.w, op)
}

func lastEventID(ctx context.Context, q querier, op string) (int64, error) {
	var id sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(id) FROM events WHERE operation=?`, op).Scan(&id); err != nil {
		return 0, err
	}
	if !id.Valid {
		return -1, nil
	}
	return id.Int64, nil
}

// OperationExpiry selects finished operations whose logs retention deletes.
type OperationExpiry struct {
	// Account limits the selection to one account; "" selects every
	// account but those in Except.
	Account string
	Except  []string
	// FinishedBefore: operations that finished before this time.
	FinishedBefore time.Time
	// Limit bounds the operations one DeleteExpiredOperations call deletes
	// (default 500), so one transaction stays short.
	Limit int
}

func (f OperationExpiry) where() (string, []any) {
	// created_at <= finished_at, so the bound on created_at lets the
	// account's created index narrow the scan.
	at := f.FinishedBefore.UnixNano()
	cond, args := accountFilter(f.Account, f.Except)
	return ` FROM operations WHERE status NOT IN ('PENDING','ASSIGNED','EXECUTING') AND finished_at IS NOT NULL AND finished_at < ? AND created_at < ?` + cond,
		append([]any{at, at}, args...)
}

// ExpiredOperations counts the operations f selects and their events.
func (s *Store) ExpiredOperations(ctx context.Context, f OperationExpiry) (ops, events int64, err error) {
	q, args := f.where()
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*)`+q, args...).Scan(&ops); err != nil {
		return 0, 0, err
	}
	err = s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE operation IN (SELECT uuid`+q+`)`, args...).Scan(&events)
	return ops, events, err
}

// DeleteExpiredOperations deletes up to f.Limit of the operations f
// selects with their event logs, in one transaction, and returns how many
// rows went. Call it until it deletes no operation.
func (s *Store) DeleteExpiredOperations(ctx context.Context, f OperationExpiry) (ops, events int64, err error) {
	if f.Limit <= 0 {
		f.Limit = 500
	}
	q, args := f.where()
	err = s.sqlTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT uuid`+q+` LIMIT ?`, append(args, f.Limit)...)
		if err != nil {
			return err
		}
		var ids []any
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, u)
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(ids) == 0 {
			return err
		}
		in := `(?` + strings.Repeat(",?", len(ids)-1) + `)`
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE operation IN `+in, ids...)
		if err != nil {
			return err
		}
		events, _ = res.RowsAffected()
		if res, err = tx.ExecContext(ctx, `DELETE FROM operations WHERE uuid IN `+in, ids...); err != nil {
			return err
		}
		ops, _ = res.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return ops, events, nil
}
