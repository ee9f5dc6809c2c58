package runtime

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/archive"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/overlay"
	"github.com/arborsh/arbor/internal/testutil"
)

// TestRunCancelledIsKilled: cancelling a run kills its sandbox and reports
// Result.Killed. Run with -race, it also checks that the watcher goroutine
// hands Killed back without a data race.
func TestRunCancelledIsKilled(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	rootfs, bundle := filepath.Join(dir, "rootfs"), filepath.Join(dir, "bundle")
	for _, d := range []string{rootfs, bundle} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var tarball bytes.Buffer
	if err := baseimage.WriteBusyboxTar(&tarball); err != nil {
		t.Fatal(err)
	}
	if _, err := archive.ApplyTar(context.Background(), &tarball, rootfs, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { overlay.UnmountUnder(filepath.Join(dir, "state")) })
	o, err := NewOCI("runc", "", filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const id = "cancel-runc"
	go func() {
		wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
		defer wcancel()
		if err := o.WaitRunning(wctx, id); err != nil {
			t.Errorf("WaitRunning: %v", err)
		}
		cancel()
	}()
	start := time.Now()
	res, err := o.Run(ctx, Spec{ID: id, Bundle: bundle, Rootfs: rootfs, Args: []string{"/bin/sleep", "1000"},
		Env: []string{"PATH=/bin"}, Cwd: "/", Hostname: "t"})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !res.Killed {
		t.Errorf("Result.Killed = false after cancelling a run of sleep 1000 (exit %d, after %v)", res.ExitCode, time.Since(start))
	}
}
