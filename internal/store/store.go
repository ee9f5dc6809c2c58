// Package store defines the contract of arbor's metadata, [Metadata], and
// implements it as [Store] on an embedded SQLite database
// (modernc.org/sqlite, pure Go, WAL mode). storetest is the conformance
// suite of the contract.
//
// Schema (see migrations below for the exact DDL):
//
//	accounts   id, name
//	tokens     uuid, account, sha256 of the secret, name, expiry, revocation, parent token
//	images     uuid, account, parent, layer, flat (squashed chain) and its bytes, depth, tag, operation, env,
//	           base and hidden/chain (content-addressed import layers, see Image)
//	files      uuid, account, sha256, size            (blobs live on disk by sha256)
//	operations uuid, account, kind, status, timings, input/result image, metadata JSON
//	events     (operation, id) → ts, spid, type, data JSON
//
// Writes go through one connection (SQLite allows one writer); reads use a
// separate pool so readers never wait for the writer in WAL mode.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"modernc.org/sqlite" // also registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"
)

// Store is the SQLite implementation of [Metadata].
type Store struct {
	w *db // single writer connection
	r *db // reader pool
}

// Open opens (creating if needed) the database at path and applies migrations.
func Open(ctx context.Context, path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	r, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r.SetMaxOpenConns(8)
	s := &Store{w: newDB(w), r: newDB(r)}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

var migrations = []string{
	// 1: initial schema.
	`CREATE TABLE accounts (
		id TEXT PRIMARY KEY,
		name TEXT NOT NULL UNIQUE,
		created_at INTEGER NOT NULL
	);
	CREATE TABLE tokens (
		uuid TEXT PRIMARY KEY,
		account TEXT NOT NULL REFERENCES accounts(id),
		secret_sha256 TEXT NOT NULL UNIQUE,
		name TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL,
		expires_at INTEGER,
		revoked_at INTEGER
	);
	CREATE TABLE images (
		uuid TEXT PRIMARY KEY,
		account TEXT NOT NULL,
		parent TEXT,
		layer TEXT NOT NULL,
		flat TEXT,
		depth INTEGER NOT NULL,
		tag TEXT,
		operation TEXT,
		env TEXT,
		layer_bytes INTEGER NOT NULL DEFAULT 0,
		created_at INTEGER NOT NULL,
		deleted_at INTEGER
	);
	CREATE UNIQUE INDEX images_account_tag ON images(account, tag) WHERE tag IS NOT NULL;
	CREATE INDEX images_account_created ON images(account, created_at);
	CREATE INDEX images_parent ON images(parent);
	CREATE TABLE files (
		uuid TEXT PRIMARY KEY,
		account TEXT NOT NULL,
		sha256 TEXT NOT NULL,
		size INTEGER NOT NULL,
		created_at INTEGER NOT NULL,
		updated_at INTEGER NOT NULL,
		UNIQUE(account, sha256)
	);
	CREATE TABLE operations (
		uuid TEXT PRIMARY KEY,
		account TEXT NOT NULL,
		kind TEXT NOT NULL,
		status TEXT NOT NULL,
		error TEXT,
		created_at INTEGER NOT NULL,
		started_at INTEGER,
		finished_at INTEGER,
		image_uuid TEXT,
		result_image_uuid TEXT,
		result_tag TEXT,
		metadata TEXT NOT NULL,
		cpu_seconds REAL NOT NULL DEFAULT 0,
		max_rss_bytes INTEGER NOT NULL DEFAULT 0,
		image_size INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX operations_account_created ON operations(account, created_at);
	CREATE INDEX operations_status ON operations(status);
	CREATE TABLE events (
		operation TEXT NOT NULL,
		id INTEGER NOT NULL,
		ts INTEGER NOT NULL,
		spid INTEGER NOT NULL,
		type TEXT NOT NULL,
		data TEXT NOT NULL,
		PRIMARY KEY (operation, id)
	) WITHOUT ROWID;`,
	// 2: imported images as chains of shared, content-addressed layers.
	// A hidden row is one layer of an imported chain (chain: its chain ID),
	// never listed or addressable by users; base links a visible image, or
	// a hidden row, to the hidden row its layer lies on.
	`ALTER TABLE images ADD COLUMN base TEXT;
	ALTER TABLE images ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE images ADD COLUMN chain TEXT;
	CREATE UNIQUE INDEX images_account_chain ON images(account, chain) WHERE hidden = 1;
	CREATE INDEX images_layer ON images(layer);`,
	// 3: tokens remember the token that created them (revocation cascades);
	// listing operations reads a covering index, never the rows, whose
	// metadata holds each run's output (up to 64 MiB); the in-flight count
	// of the concurrency limit reads a small partial index.
	`ALTER TABLE tokens ADD COLUMN parent TEXT;
	CREATE INDEX tokens_parent ON tokens(parent);
	CREATE INDEX operations_list ON operations(account, created_at, uuid, kind, status, error, started_at, finished_at,
		image_uuid, result_image_uuid, result_tag, cpu_seconds, max_rss_bytes, image_size);
	CREATE INDEX operations_inflight ON operations(account) WHERE status IN ('PENDING','ASSIGNED','EXECUTING');`,
	// 4: the disk a squashed chain's flat layer uses, charged to the
	// image's account like its own layer.
	`ALTER TABLE images ADD COLUMN flat_bytes INTEGER NOT NULL DEFAULT 0;`,
}

func (s *Store) migrate(ctx context.Context) error {
	var version int
	if err := s.w.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this arbor (%d): upgrade arbor", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		err := s.sqlTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, i+1))
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	return nil
}

// Update runs fn in one write transaction (see [Metadata]).
func (s *Store) Update(ctx context.Context, fn func(tx Tx) error) error {
	return s.sqlTx(ctx, func(tx *sql.Tx) error { return fn(txn{tx}) })
}

// sqlTx runs fn in a write transaction on the writer connection,
// committing if fn returns nil and rolling back otherwise (a panic in fn
// rolls back too, so the single writer connection is never left inside a
// transaction).
func (s *Store) sqlTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
	}()
	if err := fn(tx); err != nil {
		return errors.Join(err, tx.Rollback())
	}
	return tx.Commit()
}

// txn is the [Tx] of [Store.Update]: the same statements as the Store's
// methods, on the transaction.
type txn struct{ tx *sql.Tx }

func (t txn) InsertImage(ctx context.Context, im Image) error { return insertImage(ctx, t.tx, im) }

func (t txn) SetTag(ctx context.Context, account, uuid, tag string) error {
	return setTag(ctx, t.tx, account, uuid, tag)
}

func (t txn) FinishOperation(ctx context.Context, out Outcome) error {
	return finishOperation(ctx, t.tx, out)
}

func (t txn) AppendEvent(ctx context.Context, op string, ev Event) error {
	return appendEvent(ctx, t.tx, op, ev)
}

func (t txn) LastEventID(ctx context.Context, op string) (int64, error) {
	return lastEventID(ctx, t.tx, op)
}

// conflict classes a unique-key violation as errdefs.ErrConflict, saying
// what was duplicated; other errors are returned as they are.
func conflict(err error, format string, args ...any) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return errdefs.Conflict(format, args...)
		}
	}
	return err
}

// querier is satisfied by *sql.DB and *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// now returns the current time in unix nanoseconds, the unit of every time column.
func now() int64 { return time.Now().UnixNano() }

func nullStr(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func nullTime(ns sql.NullInt64) time.Time {
	if !ns.Valid {
		return time.Time{}
	}
	return time.Unix(0, ns.Int64)
}
