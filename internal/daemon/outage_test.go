package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// logWatch counts the records logged through its handlers, so a test can
// wait for one, and writes warnings and errors to stderr.
type logWatch struct {
	mu   sync.Mutex
	seen map[string]int // message → records
	wake chan struct{}  // closed and replaced on every record
}

func newLogWatch() *logWatch { return &logWatch{seen: map[string]int{}, wake: make(chan struct{})} }

// logger returns a logger whose records l counts.
func (l *logWatch) logger() *slog.Logger {
	return slog.New(watchHandler{l, slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})})
}

type watchHandler struct {
	w *logWatch
	h slog.Handler
}

func (v watchHandler) Enabled(context.Context, slog.Level) bool { return true }

func (v watchHandler) Handle(ctx context.Context, r slog.Record) error {
	v.w.mu.Lock()
	v.w.seen[r.Message]++
	close(v.w.wake)
	v.w.wake = make(chan struct{})
	v.w.mu.Unlock()
	if !v.h.Enabled(ctx, r.Level) {
		return nil
	}
	return v.h.Handle(ctx, r)
}

func (v watchHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return watchHandler{v.w, v.h.WithAttrs(as)}
}
func (v watchHandler) WithGroup(g string) slog.Handler { return watchHandler{v.w, v.h.WithGroup(g)} }

// await waits until n records whose message contains msg were logged.
func (l *logWatch) await(t *testing.T, ctx context.Context, msg string, n int) {
	t.Helper()
	for {
		l.mu.Lock()
		count := 0
		for m, c := range l.seen {
			if strings.Contains(m, msg) {
				count += c
			}
		}
		wake := l.wake
		l.mu.Unlock()
		if count >= n {
			return
		}
		select {
		case <-wake:
		case <-ctx.Done():
			t.Fatalf("waiting for %d log records %q: %v", n, msg, ctx.Err())
		}
	}
}

// awaitStatus polls operation id until it reaches status.
func awaitStatus(t *testing.T, ctx context.Context, c *client.Client, id string, status string) {
	t.Helper()
	for {
		op, err := c.Operation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if op.Status == status {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("operation %s: %s, waiting for %s", id, op.Status, status)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestOutagePostgresRestart: a daemon on PostgreSQL and S3 whose database
// restarts under it answers 503 naming the database meanwhile, stays up,
// writes the outcomes of the runs that ended during the outage once the
// database is back (a disposable run's result; a saved run's commit, which
// needs the database, fails clearly and leaves no image), keeps its
// single-node lock, and serves and saves again.
func TestOutagePostgresRestart(t *testing.T) {
	testutil.RequiresRoot(t)
	cl := pgtest.NewCluster(t)
	srv, bucket, blobs := s3Bucket(t, "arbor")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	logs := newLogWatch()
	home := testutil.Home(t)
	c, _ := runDaemonWith(t, home, func(cfg *Config) { blobs(cfg); cfg.DB = cl.DSN(); cfg.Logger = logs.logger() })
	base, err := testdaemon.ImportBusybox(ctx, c, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	disposable, err := c.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: base, Command: "sleep 2; echo done", Shell: ptr(true), Disposable: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	saved, err := c.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: base, Command: "sleep 2; echo x > /x", Shell: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	awaitStatus(t, ctx, c, disposable.UUID, apitypes.StatusExecuting)
	awaitStatus(t, ctx, c, saved.UUID, apitypes.StatusExecuting)

	cl.Stop(t)
	tok, _ := os.ReadFile(filepath.Join(home, "token"))
	once, err := client.New(c.BaseURL(), strings.TrimSpace(string(tok)), client.WithRetries(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	_, err = once.ListImages(ctx, client.ImageListOptions{})
	if client.StatusCode(err) != 503 || !strings.Contains(err.Error(), "metadata database unavailable (PostgreSQL") {
		t.Errorf("a request with PostgreSQL down: %v (status %d), want 503 naming the database", err, client.StatusCode(err))
	}
	// Both runs end while the database is down.
	logs.await(t, ctx, "operation outcome not recorded yet", 2)
	cl.Start(t)

	op, err := c.Wait(ctx, disposable.UUID)
	if err != nil || op.Status != apitypes.StatusSuccess {
		t.Fatalf("the disposable run that ended during the outage: %v %+v", err, op)
	}
	var meta apitypes.InstanceMetadata
	if err := json.Unmarshal(op.Metadata, &meta); err != nil || meta.Result == nil {
		t.Fatalf("its result: %s (%v)", op.Metadata, err)
	}
	if b, _ := meta.Result.Stdout.Bytes(); string(b) != "done\n" {
		t.Errorf("its stdout = %q, want done", b)
	}
	op, err = c.Wait(ctx, saved.UUID)
	if err != nil || op.Status != apitypes.StatusFailed || op.Error == nil || !strings.Contains(*op.Error, "metadata database") || op.ResultImageUUID != nil {
		t.Fatalf("the saved run that ended during the outage: %v %+v; want FAILED naming the database, no image", err, op)
	}
	t.Logf("the saved run says: %s", *op.Error)

	// Serving and saving again.
	op, err = c.Run(ctx, apitypes.InstanceSpawnRequest{Image: base, Command: "echo y > /y", Shell: ptr(true)})
	if err != nil || op.Status != apitypes.StatusSuccess || op.ResultImageUUID == nil {
		t.Fatalf("a run after the restart: %v %+v", err, op)
	}
	if got, err := c.ReadFile(ctx, *op.ResultImageUUID, "/y"); err != nil || string(got) != "y\n" {
		t.Errorf("/y = %q, %v", got, err)
	}
	// With --blobs as well this node is a cluster node (role all): it holds
	// no single-node lock, so there is none to take again here; the lock's
	// own recovery is TestNodeLockRetakenAfterOutage and
	// TestNodeLockTakenOver.
	_, _ = srv, bucket
}

// TestBlobsBriefOutage: a saved run whose commit finds S3 down waits,
// retrying its upload, and saves its image once S3 is back; nothing of it
// is visible before.
func TestBlobsBriefOutage(t *testing.T) {
	srv, _, blobs := s3Bucket(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	logs := newLogWatch()
	c, _ := runDaemonWith(t, testutil.Home(t), func(cfg *Config) { blobs(cfg); cfg.Logger = logs.logger(); cfg.BlobsRetryFor = 2 * time.Minute })
	base, err := testdaemon.ImportBusybox(ctx, c, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	before, err := c.ListImages(ctx, client.ImageListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	spawned, err := c.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: base, Command: "echo x > /x", Shell: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	logs.await(t, ctx, "layer storage unavailable; retrying", 1)
	if ims, err := c.ListImages(ctx, client.ImageListOptions{}); err != nil || len(ims) != len(before) {
		t.Errorf("images while the commit waits: %d, %v; want the %d from before", len(ims), err, len(before))
	}
	if op, err := c.Operation(ctx, spawned.UUID); err != nil || op.Status != apitypes.StatusExecuting {
		t.Errorf("the run while S3 is down: %v %+v, want it EXECUTING (committing)", err, op)
	}
	srv.Restart(t)
	op, err := c.Wait(ctx, spawned.UUID)
	if err != nil || op.Status != apitypes.StatusSuccess || op.ResultImageUUID == nil {
		t.Fatalf("the run across a brief S3 outage: %v %+v", err, op)
	}
	if got, err := c.ReadFile(ctx, *op.ResultImageUUID, "/x"); err != nil || string(got) != "x\n" {
		t.Errorf("/x = %q, %v", got, err)
	}
}
