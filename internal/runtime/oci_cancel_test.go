package runtime

import (
	"context"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/testutil"
)

// TestRunCancelledIsKilled: cancelling a run kills its sandbox and reports
// Result.Killed. Run with -race, it also checks that the watcher goroutine
// hands Killed back without a data race.
func TestRunCancelledIsKilled(t *testing.T) {
	testutil.RequiresRoot(t)
	o, rootfs, bundle := busyboxOCI(t, "runc")
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
