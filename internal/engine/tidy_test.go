package engine

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/testutil"
)

// TestRunDirRemovedOffSlot: a finished run's directory is removed after
// its slot is free, so a run queued behind the only slot starts while the
// first one's removal is still going on; Close waits for the removal, and
// nothing is left under run/.
func TestRunDirRemovedOffSlot(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	home := testutil.Home(t)
	e, err := New(ctx, Config{Home: home, Runtime: "runc", InitBinary: staticInit(t), WarmPerImage: -1, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	closeEngine := sync.OnceValue(e.Close)
	t.Cleanup(func() { closeEngine() })
	base := busybox(t, e)

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
