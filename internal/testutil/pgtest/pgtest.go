// Package pgtest gives tests a fresh, empty PostgreSQL database each.
//
// A test binary shares one throwaway cluster: initdb into a temporary
// directory (as the postgres user when run as root, since initdb refuses
// root), started by pg_ctl on a Unix socket in that directory with no TCP
// listener, so parallel test binaries never fight over a port. With
// ARBOR_TEST_PG set to a DSN, that server is used instead, and must allow
// CREATE DATABASE. The package's TestMain must call [Main] (or [Stop]
// after running the tests), which stops the cluster:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Without PostgreSQL the tests skip, except under CI (CI=true), where they
// fail: scripts/setup.sh installs postgresql-15.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/arborsh/arbor/internal/testutil"
)

// EnvDSN names the variable that points the tests at an existing server.
const EnvDSN = "ARBOR_TEST_PG"

var (
	once    sync.Once
	admin   string // DSN of a database to run CREATE DATABASE in
	cluster *localCluster
	setErr  error
	missing bool // no PostgreSQL binaries and no ARBOR_TEST_PG
)

// Main runs the tests of m, stops the cluster if one was started and
// exits. A TestMain that runs m otherwise calls [Stop] after it.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	testutil.RemoveBuildDir()
	os.Exit(code)
}

// Stop stops the cluster if one was started.
func Stop() {
	if cluster != nil {
		if err := cluster.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
		cluster = nil
	}
}

// DSN creates a new empty database for t, dropped when t ends, and
// returns its connection string.
func DSN(t testing.TB) string {
	t.Helper()
	once.Do(setUp)
	if missing {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is needed and CI must run these tests: install postgresql-15 (scripts/setup.sh) or set %s", EnvDSN)
		}
		t.Skipf("no PostgreSQL: install postgresql-15 or set %s to a DSN", EnvDSN)
	}
	if setErr != nil {
		t.Fatalf("pgtest: %v", setErr)
	}
	ctx := context.Background()
	name := "arbor_test_" + randomHex(8)
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return withDatabase(admin, name)
}

func setUp() {
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		admin = dsn
		return
	}
	bin := binDir()
	if bin == "" {
		missing = true
		return
	}
	reapStale(bin)
	cluster, setErr = startCluster(bin)
	if setErr == nil {
		admin = cluster.dsn("postgres")
	}
}

// binDir finds the directory of initdb and pg_ctl: on PATH, else Debian's
// /usr/lib/postgresql/<version>/bin (newest version first).
func binDir() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

type localCluster struct {
	bin, dir string
	cred     *syscall.Credential // nil: run as ourselves
}

func (c *localCluster) dsn(db string) string {
	return fmt.Sprintf("postgres://arbor@/%s?host=%s&sslmode=disable", db, url.QueryEscape(c.dir))
}

func (c *localCluster) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	cmd.Dir = c.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// startCluster initialises and starts a cluster tuned for tests: no
// fsync (a test cluster is thrown away; durability tests need their own
// with the defaults), a socket in its own directory, no TCP.
func startCluster(bin string) (*localCluster, error) {
	// Under /tmp whatever TMPDIR says: the postgres user must reach it, and
	// the socket's path must stay within the 107 bytes a Unix address holds.
	dir, err := os.MkdirTemp("/tmp", "arbor-pg-")
	if err != nil {
		return nil, err
	}
	c := &localCluster{bin: bin, dir: dir}
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("initdb refuses root and there is no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	start := time.Now()
	err = c.run("initdb", "-D", filepath.Join(dir, "data"), "-U", "arbor", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
	if err == nil {
		err = c.run("pg_ctl", "-D", filepath.Join(dir, "data"), "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start", "-o",
			"-c listen_addresses='' -k "+dir+" -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
	}
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, errors.Join(err, fmt.Errorf("server log:\n%s", log))
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		_ = c.stop()
		return nil, err
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "pgtest: cluster in %s ready in %v\n", dir, time.Since(start).Round(time.Millisecond))
	}
	return c, nil
}

// ownerFile, in a cluster's directory, holds the pid of the test binary
// that started it.
const ownerFile = "owner.pid"

// reapStale stops and removes the clusters of test binaries that died
// without stopping them (killed by a test timeout, say): a server outlives
// the process that started it.
func reapStale(bin string) {
	dirs, _ := filepath.Glob("/tmp/arbor-pg-*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // starting, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || alive(pid) {
			continue
		}
		c := &localCluster{bin: bin, dir: d}
		if fi, err := os.Stat(d); err == nil && os.Getuid() == 0 {
			st := fi.Sys().(*syscall.Stat_t)
			c.cred = &syscall.Credential{Uid: st.Uid, Gid: st.Gid}
		}
		_ = c.stop()
	}
}

// alive reports whether process pid runs (a zombie does not).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	rest := stat[strings.LastIndexByte(string(stat), ')')+1:]
	return !strings.HasPrefix(strings.TrimSpace(string(rest)), "Z")
}

func (c *localCluster) stop() error {
	err := c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
	return errors.Join(err, os.RemoveAll(c.dir))
}

// withDatabase returns dsn (a URL or key=value pairs) naming database db.
func withDatabase(dsn, db string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err == nil {
			u.Path = "/" + db
			return u.String()
		}
	}
	return dsn + " dbname=" + db // a later keyword wins
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
