package engine

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/testutil"
)

// oneSlotEngine is a runc engine with one run slot and no warm pool, its
// home, its busybox image and its Close (once; also at the end).
func oneSlotEngine(t *testing.T) (*Engine, string, string, func() error) {
	t.Helper()
	home := testutil.Home(t)
	e, err := New(context.Background(), Config{Home: home, Runtime: "runc", InitBinary: staticInit(t), WarmPerImage: -1, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	closeEngine := sync.OnceValue(e.Close)
	t.Cleanup(func() { closeEngine() })
	return e, home, busybox(t, e), closeEngine
}

// TestRunDirRemovedOffSlot: a finished run's directory is removed after
// its slot is free, so a run queued behind the only slot starts while the
// first one's removal is still going on; Close waits for the removal, and
// nothing is left under run/.
func TestRunDirRemovedOffSlot(t *testing.T) {
	testutil.RequiresRoot(t)
	e, home, base, closeEngine := oneSlotEngine(t)
	held, entered := make(chan struct{}), make(chan string, 8)
	release := sync.OnceFunc(func() { close(held) })
	t.Cleanup(release) // before Close, should the test stop early
	e.removeRunDir = func(dir string) error {
		entered <- dir
		<-held
		return os.RemoveAll(dir)
	}

	a, _ := run(t, e, base, "echo a > /a")
	dirA := <-entered // A's removal has begun and is held
	if filepath.Base(dirA) != a.UUID {
		t.Fatalf("removal of %s, want A's run dir (%s)", dirA, a.UUID)
	}
	// B needs the only slot: it gets it although A's directory is not gone.
	b, _ := run(t, e, base, "echo b > /b")
	if a.Status != apitypes.StatusSuccess || b.Status != apitypes.StatusSuccess {
		t.Fatalf("A %s, B %s, want both SUCCESS", a.Status, b.Status)
	}
	if _, err := os.Stat(dirA); err != nil {
		t.Fatalf("A's run dir while its removal is held: %v, want it there", err)
	}
	release()
	if err := closeEngine(); err != nil {
		t.Fatal(err)
	}
	if runs := listDir(t, filepath.Join(home, "run")); len(runs) != 0 {
		t.Errorf("run dirs left after Close: %v", runs)
	}
}

// TestSlotFreedBeforeUnmount: a run gives its slot back once its sandbox
// is gone, before its root filesystem is unmounted (and, unless it is
// disposable, committed): a run queued behind the only slot runs while the
// first one's unmount is held. The first run then commits what it wrote,
// and no mount and no run directory is left, after the runs or after Close.
func TestSlotFreedBeforeUnmount(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, tc := range []struct {
		name       string
		disposable bool
	}{{"commit", false}, {"disposable", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			e, home, base, closeEngine := oneSlotEngine(t)
			held, entered := make(chan struct{}), make(chan string, 1)
			release := sync.OnceFunc(func() { close(held) })
			t.Cleanup(release) // before Close, should the test stop early
			var first atomic.Bool
			e.unmountRoot = func(merged string) error {
				if first.CompareAndSwap(false, true) { // A's: held
					entered <- merged
					<-held
				}
				return e.rootfs.Unmount(merged)
			}

			sh := true
			opA, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "echo a > /a", Image: base, Shell: &sh, Disposable: &tc.disposable})
			if err != nil {
				t.Fatal(err)
			}
			mergedA := <-entered // A's sandbox is gone, its unmount held
			// B needs the only slot: it gets it although A is still mounted.
			b, _ := run(t, e, base, "echo b > /b")
			if b.Status != apitypes.StatusSuccess {
				t.Fatalf("B %s (%s), want SUCCESS", b.Status, b.Error)
			}
			if mountsUnder(filepath.Dir(mergedA)) == 0 {
				t.Fatalf("A's root %s not mounted while its unmount is held", mergedA)
			}
			release()
			a, _ := waitMeta(t, e, opA, "echo a > /a")
			if a.Status != apitypes.StatusSuccess {
				t.Fatalf("A %s (%s), want SUCCESS", a.Status, a.Error)
			}
			if !tc.disposable {
				// A finished after its unmount, in its commit's transaction.
				if n := mountsUnder(filepath.Dir(mergedA)); n != 0 {
					t.Errorf("%d mounts under A's run dir after A", n)
				}
				_, m := run(t, e, a.ResultImageUUID, "cat /a")
				if out, _ := m.Result.Stdout.Bytes(); string(out) != "a\n" {
					t.Errorf("A's image: /a = %q, want %q", out, "a\n")
				}
			}
			if err := closeEngine(); err != nil {
				t.Fatal(err)
			}
			if n := mountsUnder(home); n != 0 {
				t.Errorf("%d mounts under %s after Close", n, home)
			}
			if runs := listDir(t, filepath.Join(home, "run")); len(runs) != 0 {
				t.Errorf("run dirs left after Close: %v", runs)
			}
		})
	}
}
