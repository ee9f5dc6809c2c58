package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
	"github.com/jackc/pgx/v5"
)

// TestMain stops the package's PostgreSQL cluster (see pgtest) when the
// tests, internal and external, end.
func TestMain(m *testing.M) { pgtest.Main(m) }

func openDSN(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestMigrationsOnceAndVersioned: nodes opening a new database together
// migrate it once; reopening changes nothing; a database from a newer
// arbor is refused with what to do.
func TestMigrationsOnceAndVersioned(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := Open(ctx, dsn)
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d of 4 at once: %v", i, err)
		}
	}
	s := openDSN(t, dsn)
	var version, rows int
	if err := s.pool.QueryRow(ctx, `SELECT max(version), count(*) FROM arbor_schema`).Scan(&version, &rows); err != nil {
		t.Fatal(err)
	}
	if version != SchemaVersion() || rows != 1 || version < 2 {
		t.Fatalf("schema version %d in %d rows, want %d in one", version, rows, SchemaVersion())
	}
	if _, err := s.pool.Exec(ctx, `UPDATE arbor_schema SET version=version+1`); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, dsn)
	if err == nil || !strings.Contains(err.Error(), "upgrade arbor") {
		t.Fatalf("Open(newer schema) = %v, want a refusal saying to upgrade arbor", err)
	}
}

// TestOpenBadDSN: a malformed DSN is an error naming the fix.
func TestOpenBadDSN(t *testing.T) {
	_, err := Open(context.Background(), "postgres://[::1")
	if err == nil || !strings.Contains(err.Error(), "want postgres://") {
		t.Fatalf("Open(bad DSN) = %v", err)
	}
}

// TestListOperationsIndexOnly: listing operations can be answered from the
// operations_list index alone (an index-only scan), never reading the
// rows, whose metadata holds each run's output; and what it returns has
// no Metadata.
func TestListOperationsIndexOnly(t *testing.T) {
	ctx := context.Background()
	s := openDSN(t, pgtest.DSN(t))
	big := `{"result":{"stdout":"` + strings.Repeat("x", 1<<20) + `"}}`
	for i := range 50 {
		o := store.Operation{UUID: fmt.Sprint("op", i), Account: fmt.Sprint("a", i%5), Kind: "instance", Status: "PENDING",
			CreatedAt: time.Now(), Metadata: big}
		if err := s.InsertOperationLimited(ctx, o, 100); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.pool.Exec(ctx, `VACUUM ANALYZE operations`); err != nil {
		t.Fatal(err)
	}
	since, until := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	for _, f := range []store.OperationFilter{
		{Account: "a1"},
		{Account: "a1", Statuses: []string{"PENDING", "SUCCESS"}, Kind: "instance", Since: since, Until: until, Limit: 2, Offset: 1},
	} {
		q, a := listQuery(f)
		var plan []string
		// With so few rows the planner may prefer a sequential scan;
		// forbidding it asks whether the index can answer on its own.
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, "EXPLAIN "+q, a...)
			if err != nil {
				return err
			}
			plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if p := strings.Join(plan, "\n"); !strings.Contains(p, "Index Only Scan using operations_list") {
			t.Errorf("plan of %+v:\n%s\nwant an index-only scan of operations_list", f, p)
		}
		ops, err := s.ListOperations(ctx, f)
		if err != nil || len(ops) == 0 {
			t.Fatalf("ListOperations(%+v) = %d, %v", f, len(ops), err)
		}
		for _, o := range ops {
			if o.Metadata != "" || o.Account != "a1" {
				t.Errorf("listed %s of %s with %d bytes of metadata, want a1 and none", o.UUID, o.Account, len(o.Metadata))
			}
		}
	}
}

// TestSingleNode: one store at a time holds a database's node lock; it
// goes with the store's Close.
func TestSingleNode(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	if err := a.SingleNode(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.SingleNode(ctx); err != nil {
		t.Fatalf("SingleNode again on the holder: %v", err)
	}
	if err := b.SingleNode(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "another arbor node") {
		t.Fatalf("SingleNode on a second store = %v, want it refused", err)
	}
	a.Close()
	// The server ends the holder's session asynchronously after Close.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := b.SingleNode(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SingleNode after the holder closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
