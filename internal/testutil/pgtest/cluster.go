package pgtest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Cluster is a PostgreSQL server of one test's own, which the test may
// stop and start again (outage tests), with the durable defaults (fsync
// on). It listens on a Unix socket in its directory only.
type Cluster struct {
	c        *localCluster
	settings []string // -c name=value of every start
}

// NewCluster starts a cluster for t with an empty database "arbor",
// stopped and removed when t ends. Like [DSN], it skips without
// PostgreSQL (fails under CI); with ARBOR_TEST_PG set it skips too, since
// a server it did not start cannot be restarted.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	return NewClusterWith(t)
}

// NewClusterWith is NewCluster with server settings ("name=value", passed
// as -c to every start) on top of the durable defaults.
func NewClusterWith(t testing.TB, settings ...string) *Cluster {
	t.Helper()
	if os.Getenv(EnvDSN) != "" {
		t.Skipf("%s is set: this test restarts its own PostgreSQL", EnvDSN)
	}
	bin := binDir()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("PostgreSQL is needed and CI must run these tests: install postgresql-15 (scripts/setup.sh)")
		}
		t.Skip("no PostgreSQL: install postgresql-15")
	}
	c, err := startCluster(bin)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cl := &Cluster{c: c, settings: settings}
	t.Cleanup(func() {
		if err := c.stop(); err != nil {
			t.Logf("pgtest: %v", err)
		}
	})
	// Started again without startCluster's fsync=off: durable defaults.
	cl.Stop(t)
	cl.Start(t)
	conn, err := pgx.Connect(context.Background(), c.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "CREATE DATABASE arbor"); err != nil {
		t.Fatal(err)
	}
	return cl
}

// DSN returns the URL of the cluster's database "arbor".
func (cl *Cluster) DSN() string { return cl.c.dsn("arbor") }

// Stop stops the server as a restart does ("fast": sessions are ended,
// the data is checkpointed).
func (cl *Cluster) Stop(t testing.TB) {
	t.Helper()
	if err := cl.c.run("pg_ctl", "-D", filepath.Join(cl.c.dir, "data"), "-m", "fast", "-w", "stop"); err != nil {
		t.Fatal(err)
	}
}

// Crash stops the server as a crash would ("immediate": its processes
// quit at once, without a checkpoint; WAL still in the server's buffers,
// that of asynchronous commits the WAL writer has not written yet, is
// lost). Start then recovers.
func (cl *Cluster) Crash(t testing.TB) {
	t.Helper()
	if err := cl.c.run("pg_ctl", "-D", filepath.Join(cl.c.dir, "data"), "-m", "immediate", "-w", "stop"); err != nil {
		t.Fatal(err)
	}
}

// Start starts the stopped server again on the same socket.
func (cl *Cluster) Start(t testing.TB) {
	t.Helper()
	opts := "-c listen_addresses='' -k " + cl.c.dir + " -c max_connections=200"
	for _, s := range cl.settings {
		opts += " -c " + s
	}
	if err := cl.c.run("pg_ctl", "-D", filepath.Join(cl.c.dir, "data"), "-l", filepath.Join(cl.c.dir, "log"), "-w", "-t", "60", "start", "-o",
		opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(cl.c.dir, "log"))
		t.Fatalf("%v\nserver log:\n%s", err, log)
	}
}
