package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/arborsh/arbor/internal/errdefs"
)

// While PostgreSQL is down or restarting, every store call fails. Those
// failures are errdefs.ErrUnavailable naming the database, so the API
// answers 503 with Retry-After (clients retry) instead of 500, and the
// engine knows to retry writing an outcome. The pool reconnects by itself
// once the server is back. classPool and classTx classify at the one
// place every query passes.

// classPool is a pool whose query errors are classified.
type classPool struct {
	*pgxpool.Pool
	name string // user@host/database, for messages
}

func newClassPool(p *pgxpool.Pool) *classPool {
	c := p.Config().ConnConfig
	return &classPool{Pool: p, name: c.User + "@" + c.Host + "/" + c.Database}
}

func (p *classPool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	t, err := p.Pool.Exec(ctx, sql, args...)
	return t, p.classify(err)
}

func (p *classPool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r, err := p.Pool.Query(ctx, sql, args...)
	if err != nil {
		return r, p.classify(err)
	}
	return classRows{r, p}, nil
}

func (p *classPool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return classRow{p.Pool.QueryRow(ctx, sql, args...), p}
}

func (p *classPool) Begin(ctx context.Context) (pgx.Tx, error) {
	tx, err := p.Pool.Begin(ctx)
	if err != nil {
		return nil, p.classify(err)
	}
	return classTx{tx, p}, nil
}

// classify turns an error that says the database cannot be reached (or
// dropped the connection, or is shutting down or starting up) into
// errdefs.ErrUnavailable; other errors pass unchanged.
func (p *classPool) classify(err error) error {
	if err == nil || !unreachable(err) {
		return err
	}
	return errdefs.Unavailable("metadata database unavailable (PostgreSQL %s): %v; retry when it is back", p.name, err)
}

func unreachable(err error) bool {
	if errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08: connection exception; 57P01-57P03: admin or crash
		// shutdown, cannot connect now (starting up or shutting down).
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) || pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed")
}

// classTx is a transaction whose errors are classified.
type classTx struct {
	pgx.Tx
	p *classPool
}

func (t classTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := t.Tx.Exec(ctx, sql, args...)
	return tag, t.p.classify(err)
}

func (t classTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r, err := t.Tx.Query(ctx, sql, args...)
	if err != nil {
		return r, t.p.classify(err)
	}
	return classRows{r, t.p}, nil
}

func (t classTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return classRow{t.Tx.QueryRow(ctx, sql, args...), t.p}
}

func (t classTx) Begin(ctx context.Context) (pgx.Tx, error) {
	tx, err := t.Tx.Begin(ctx)
	if err != nil {
		return nil, t.p.classify(err)
	}
	return classTx{tx, t.p}, nil
}

func (t classTx) Commit(ctx context.Context) error { return t.p.classify(t.Tx.Commit(ctx)) }

type classRows struct {
	pgx.Rows
	p *classPool
}

func (r classRows) Err() error             { return r.p.classify(r.Rows.Err()) }
func (r classRows) Scan(dest ...any) error { return r.p.classify(r.Rows.Scan(dest...)) }

type classRow struct {
	pgx.Row
	p *classPool
}

func (r classRow) Scan(dest ...any) error { return r.p.classify(r.Row.Scan(dest...)) }
