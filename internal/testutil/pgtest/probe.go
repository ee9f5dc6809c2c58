package pgtest

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
)

// commitProbe records every writing transaction in commit_probe: a row
// trigger on every table of the database notes the transaction, the
// synchronous_commit its commit follows (as set when it wrote) and the
// tables it wrote.
const commitProbe = `
CREATE TABLE commit_probe (xid xid8 PRIMARY KEY, sync text NOT NULL, tables text[] NOT NULL, n bigserial);
CREATE FUNCTION commit_probe() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO commit_probe(xid, sync, tables) VALUES (pg_current_xact_id(), current_setting('synchronous_commit'), ARRAY[TG_TABLE_NAME::text])
	ON CONFLICT (xid) DO UPDATE SET sync = EXCLUDED.sync,
		tables = CASE WHEN TG_TABLE_NAME::text = ANY(commit_probe.tables) THEN commit_probe.tables ELSE commit_probe.tables || EXCLUDED.tables END;
	RETURN NULL;
END $$;
DO $$
DECLARE t text;
BEGIN
	FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'commit_probe' LOOP
		EXECUTE format('CREATE TRIGGER commit_probe AFTER INSERT OR UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION commit_probe()', t);
	END LOOP;
END $$;`

// Commit is a writing transaction the probe recorded.
type Commit struct {
	// Sync: its commit waits for the WAL flush (synchronous_commit is not
	// off). A transaction that wrote no row (a NOTIFY alone, a row lock)
	// is not recorded.
	Sync   bool
	Tables []string // sorted
}

// InstallCommitProbe adds the probe to database dsn (after its tables
// exist); [Commits] reads what it recorded.
func InstallCommitProbe(t testing.TB, dsn string) {
	t.Helper()
	if err := execSQL(dsn, commitProbe); err != nil {
		t.Fatalf("commit probe: %v", err)
	}
}

// Commits returns the writing transactions recorded since the last call,
// in order, and forgets them.
func Commits(t testing.TB, dsn string) []Commit {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("commit probe: %v", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `WITH d AS (DELETE FROM commit_probe RETURNING *) SELECT sync <> 'off', tables FROM d ORDER BY n`)
	if err != nil {
		t.Fatalf("commit probe: %v", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Commit, error) {
		var c Commit
		err := r.Scan(&c.Sync, &c.Tables)
		slices.Sort(c.Tables)
		return c, err
	})
	if err != nil {
		t.Fatalf("commit probe: %v", err)
	}
	return out
}

func execSQL(dsn, sql string) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}
