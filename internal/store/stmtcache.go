package store

import (
	"context"
	"database/sql"
	"sync"
)

// db is a *sql.DB that prepares each distinct query once and reuses the
// statement: the SQLite driver otherwise parses and plans every query on
// every call, which was ~9% of the daemon's CPU in the fan-out benchmark.
type db struct {
	*sql.DB
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

// maxStmts bounds the cache; queries built from filters are few, but
// anything beyond the bound simply runs unprepared.
const maxStmts = 256

func newDB(d *sql.DB) *db { return &db{DB: d, stmts: map[string]*sql.Stmt{}} }

func (d *db) stmt(ctx context.Context, q string) *sql.Stmt {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st, ok := d.stmts[q]; ok {
		return st
	}
	if len(d.stmts) >= maxStmts {
		return nil
	}
	st, err := d.DB.PrepareContext(ctx, q)
	if err != nil {
		return nil // let the plain call report the error
	}
	d.stmts[q] = st
	return st
}

func (d *db) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := d.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return d.DB.ExecContext(ctx, q, args...)
}

func (d *db) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := d.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return d.DB.QueryContext(ctx, q, args...)
}

func (d *db) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := d.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return d.DB.QueryRowContext(ctx, q, args...)
}

// Close closes the statements, then the database.
func (d *db) Close() error {
	d.mu.Lock()
	for _, st := range d.stmts {
		st.Close()
	}
	d.stmts = nil
	d.mu.Unlock()
	return d.DB.Close()
}
