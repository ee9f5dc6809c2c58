package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// runDaemon runs the daemon (Run, runc) on home until stop, which returns
// Run's error.
func runDaemon(t *testing.T, home string) (c *client.Client, stop func() error) {
	t.Helper()
	return runDaemonWith(t, home, nil)
}

// runDaemonWith is runDaemon with mod applied to the daemon's Config.
func runDaemonWith(t *testing.T, home string, mod func(*Config)) (c *client.Client, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	cfg := Config{Home: home, Listen: "127.0.0.1:0", ShutdownTimeout: 0,
		Engine: engine.Config{Runtime: "runc", WarmPerImage: -1},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Ready:  func(url string) { ready <- url }}
	if mod != nil {
		mod(&cfg)
	}
	go func() { done <- Run(ctx, cfg) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { stop() })
	var url string
	select {
	case url = <-ready:
	case err := <-done:
		t.Fatalf("daemon stopped: %v", err)
	}
	tok, err := os.ReadFile(filepath.Join(home, "token"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err = client.New(url, strings.TrimSpace(string(tok))); err != nil {
		t.Fatal(err)
	}
	return c, stop
}

// TestBackupWhileCommittingRestores: a backup taken while runs commit
// restores (daemon stopped) to a daemon that serves every image the backup
// has: its files read, and a run on it works.
func TestBackupWhileCommittingRestores(t *testing.T) {
	testutil.RequiresRoot(t)
	home := testutil.Home(t)
	c, stop := runDaemon(t, home)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	base, err := testdaemon.ImportBusybox(ctx, c, "busybox")
	if err != nil {
		t.Fatal(err)
	}

	// Runs commit images, each writing its number to /n, on two chains,
	// until told to stop.
	var mu sync.Mutex
	want := map[string]string{base: ""} // image → its /n
	quit := make(chan struct{})
	var wg sync.WaitGroup
	committed := make(chan struct{}, 100)
	errs := make(chan error, 2)
	for chain := range 2 {
		wg.Go(func() {
			img := base
			for i := 0; ; i++ {
				select {
				case <-quit:
					return
				default:
				}
				n := fmt.Sprintf("%d-%d", chain, i)
				op, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Command: "echo " + n + " > /n", Image: img, Shell: ptr(true)})
				if err != nil || op.Status != apitypes.StatusSuccess || op.Result.Image == nil {
					errs <- fmt.Errorf("run %s: %v %v", n, err, op)
					return
				}
				img = *op.Result.Image
				mu.Lock()
				want[img] = n
				mu.Unlock()
				committed <- struct{}{}
			}
		})
	}
	for range 4 { // some images before the backup
		<-committed
	}
	backup := filepath.Join(t.TempDir(), "arbor-backup.db")
	mu.Lock()
	before := len(want)
	mu.Unlock()
	if err := Backup(ctx, home, backup); err != nil {
		t.Fatal(err)
	}
	for range 4 { // and some after it
		<-committed
	}
	close(quit)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := Backup(ctx, home, backup); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("backup over an existing file: %v, want a refusal", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	kept, err := Restore(ctx, home, backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("the replaced database was not kept: %v", err)
	}
	c, _ = runDaemon(t, home)
	imgs, err := c.ListImages(ctx, client.ImageListOptions{Page: client.Page{Limit: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) < before || len(imgs) >= len(want) {
		t.Errorf("restored %d images; the backup was taken with %d of %d made", len(imgs), before, len(want))
	}
	var last string
	for _, im := range imgs {
		n, ok := want[im.UUID]
		if !ok {
			t.Errorf("restored image %s was never made", im.UUID)
			continue
		}
		if im.UUID == base {
			continue
		}
		got, err := c.ReadFile(ctx, im.UUID, "/n")
		if err != nil || strings.TrimSpace(string(got)) != n {
			t.Errorf("restored image %s: /n = %q, %v; want %s", im.UUID, got, err, n)
		}
		last = im.UUID
	}
	if last == "" {
		t.Fatal("no run image was restored")
	}
	op, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Command: "cat /n", Image: last, Shell: ptr(true)})
	if err != nil || op.Status != apitypes.StatusSuccess {
		t.Fatalf("run on a restored image: %v %v", err, op)
	}
}

func ptr[T any](v T) *T { return &v }

// A damaged or foreign file is refused and changes nothing.
func TestRestoreRefusesABadBackup(t *testing.T) {
	home := t.TempDir()
	db := filepath.Join(home, "arbor.db")
	os.WriteFile(db, []byte("current"), 0o600)
	bad := filepath.Join(t.TempDir(), "bad.db")
	os.WriteFile(bad, []byte("not a database"), 0o600)
	if _, err := Restore(context.Background(), home, bad); err == nil || !strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("restore of a bad file: %v", err)
	}
	if b, _ := os.ReadFile(db); string(b) != "current" {
		t.Error("a refused restore changed the database")
	}
}
