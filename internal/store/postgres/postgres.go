// Package postgres implements [store.Metadata] and [store.Queue] on
// PostgreSQL (13 or later) through pgx v5's connection pool, so that any
// number of arbor nodes can share one metadata database.
//
// The schema is the SQLite store's (see migrations/), with timestamptz
// times (microseconds) and the work queue's columns and workers table on
// top. Migrations are embedded, numbered files applied in order under an
// advisory lock, so nodes starting together migrate once.
//
// Where SQLite's single writer makes a check-then-write atomic for free,
// this store takes a transaction-scoped advisory lock instead (see
// lockClass): per account for the concurrency limit, per account and tag
// for a retag, per operation for its event log, and one for the token
// tree.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Store is the PostgreSQL implementation of [store.Metadata].
type Store struct {
	pool *classPool // errors of an unreachable database are errdefs.ErrUnavailable
	log  *slog.Logger

	// The single-node lock (SingleNode), if taken: held by watchNode on
	// a connection of its own.
	lost      chan error
	stopWatch chan struct{}
	watchDone chan struct{}
	checkNode chan struct{} // a test's nudge: check the connection now
	closeOnce sync.Once

	redo redoLog // events written asynchronously (async.go)
}

var (
	_ store.Metadata   = (*Store)(nil)
	_ store.PassLocker = (*Store)(nil)
)

// defaultMaxConns is the pool size unless the DSN sets pool_max_conns.
const defaultMaxConns = 20

// Open connects to the database dsn (a postgres:// URL or key=value
// pairs, as libpq takes them) and applies the migrations it lacks.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, errdefs.InvalidArgument("PostgreSQL DSN: %v (want postgres://user@host/db or host=... dbname=...)", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		// pgxpool's default (the CPU count, at least 4) would queue an API
		// node's concurrent requests behind a few connections.
		cfg.MaxConns = defaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	s := &Store{pool: newClassPool(pool)}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the pool; it may be called again.
func (s *Store) Close() error {
	if s.stopWatch != nil {
		s.closeOnce.Do(func() { close(s.stopWatch) })
		<-s.watchDone
	}
	s.pool.Close()
	return nil
}

// SingleNode makes this store the only one serving the database until it
// is closed: a session advisory lock on a connection of its own, so it
// goes with the process (or the connection) that holds it. Until workers
// claim operations through [Queue], an arbor node runs every operation
// itself and fails, when it starts, every operation it finds in flight:
// two nodes on one database would fail each other's runs.
func (s *Store) SingleNode(ctx context.Context) error {
	if s.lost != nil {
		return nil
	}
	conn, got, err := s.takeNode(ctx)
	if err != nil {
		return fmt.Errorf("take the node lock: %w", err)
	}
	if !got {
		return errdefs.FailedPrecondition("another arbor node serves this database: one node per database without shared layers; stop it, give this one its own database, or run every node with --blobs s3://... (README \"Scale-out\")")
	}
	s.lost, s.stopWatch, s.watchDone, s.checkNode = make(chan error, 1), make(chan struct{}), make(chan struct{}), make(chan struct{})
	go s.watchNode(conn) // see nodelock.go
	return nil
}

// migrations returns the embedded migration files in order. A file is
// named NNNN_what.sql; its number is the schema version it makes.
func migrations() ([]string, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []string
	for i, n := range names {
		v, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(n, "migrations/"), "_", 2)[0])
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("migration %s: want number %04d", n, i+1)
		}
		b, err := migrationFiles.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, string(b))
	}
	return out, nil
}

// SchemaVersion is the schema version this build of arbor writes.
func SchemaVersion() int {
	m, _ := migrations()
	return len(m)
}

func (s *Store) migrate(ctx context.Context) error {
	steps, err := migrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// One node migrates at a time; the others then find nothing to do.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, 0)`, lockMigrate); err != nil {
			return fmt.Errorf("lock the schema: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS arbor_schema (version integer NOT NULL)`); err != nil {
			return fmt.Errorf("schema version table: %w", err)
		}
		var version int
		err := tx.QueryRow(ctx, `SELECT version FROM arbor_schema`).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			_, err = tx.Exec(ctx, `INSERT INTO arbor_schema(version) VALUES (0)`)
		}
		if err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if version > len(steps) {
			return fmt.Errorf("database schema version %d is newer than this arbor (%d): upgrade arbor", version, len(steps))
		}
		for i := version; i < len(steps); i++ {
			if _, err := tx.Exec(ctx, steps[i]); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		_, err = tx.Exec(ctx, `UPDATE arbor_schema SET version=$1`, len(steps))
		return err
	})
}

// Advisory lock classes (the first key of pg_advisory_xact_lock(int, int);
// the second is hashtext of what is locked). A lock is held until its
// transaction ends.
const (
	lockMigrate  = 1 // schema migrations
	lockInflight = 2 // an account's in-flight count (InsertOperationLimited)
	lockTag      = 3 // an account's tag (untag-then-tag)
	lockEvents   = 4 // an operation's event log (LastEventID, AppendEvent)
	lockTokens   = 5 // the token tree (creation under a parent, revocation)
	lockNode     = 6 // the single serving node (a session lock: SingleNode)
)

func lock(ctx context.Context, q querier, class int, key string) error {
	_, err := q.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, class, key)
	return err
}

// querier is what the pool and a transaction both offer.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// inTx runs fn in a transaction on q: a new one on the pool, or a
// savepoint inside Update's. It commits when fn returns nil and rolls back
// when fn fails or panics.
func inTx(ctx context.Context, q querier, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, q, fn)
}

// Update runs fn in one write transaction (see [store.Metadata]).
func (s *Store) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	return inTx(ctx, s.pool, func(tx pgx.Tx) error { return fn(txn{tx}) })
}

// txn is the [store.Tx] of [Store.Update].
type txn struct{ q pgx.Tx }

func (t txn) InsertImage(ctx context.Context, im store.Image) error {
	return insertImage(ctx, t.q, im)
}

func (t txn) SetTag(ctx context.Context, account, uuid, tag string) error {
	return setTag(ctx, t.q, account, uuid, tag)
}

func (t txn) FinishOperation(ctx context.Context, out store.Outcome) error {
	return finishOperation(ctx, t.q, out, nil)
}

func (t txn) AppendEvent(ctx context.Context, op string, ev store.Event) error {
	return appendEvent(ctx, t.q, op, ev)
}

func (t txn) LastEventID(ctx context.Context, op string) (int64, error) {
	return lastEventID(ctx, t.q, op, true)
}

// classify maps unique and foreign-key violations to errdefs classes,
// with the message of the caller; other errors pass unchanged.
func classify(err error, format string, args ...any) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505": // unique_violation
			return errdefs.Conflict(format, args...)
		}
	}
	return err
}

func isForeignKey(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503"
}

// nullStr stores "" as NULL.
func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// nullTime stores the zero time as NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// str reads a nullable text column.
func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// tm reads a nullable timestamptz column.
func tm(p *time.Time) time.Time {
	if p == nil {
		return time.Time{}
	}
	return *p
}

// inFlight is the SQL list of the in-flight statuses.
const inFlight = `('PENDING','ASSIGNED','EXECUTING')`
