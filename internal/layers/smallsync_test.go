package layers

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/testutil"
)

// countSyncs counts the fsyncs and syncfs calls syncTree makes (and still
// makes them).
func countSyncs(t *testing.T) (fsyncs, syncfses *atomic.Int32) {
	fsyncs, syncfses = new(atomic.Int32), new(atomic.Int32)
	oldF, oldS := fsyncFD, syncfs
	fsyncFD = func(fd int) error { fsyncs.Add(1); return oldF(fd) }
	syncfs = func(fd int) error { syncfses.Add(1); return oldS(fd) }
	t.Cleanup(func() { fsyncFD, syncfs = oldF, oldS })
	return fsyncs, syncfses
}

// TestSyncTreeSmall: a small layer (an agent's step) is made durable by
// fsyncing its files and directories, not by a syncfs that would wait for
// everything anyone wrote to the filesystem; a large one by one syncfs.
func TestSyncTreeSmall(t *testing.T) {
	fsyncs, syncfses := countSyncs(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "root", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"root/out", "root/sub/b"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("out", filepath.Join(dir, "root", "lnk")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "root", "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syncTree(dir); err != nil {
		t.Fatal(err)
	}
	// Two files and three directories; the symlink and the fifo go with
	// their directory.
	if f, s := fsyncs.Load(), syncfses.Load(); f != 5 || s != 0 {
		t.Errorf("small tree: %d fsyncs and %d syncfs, want 5 and 0", f, s)
	}

	fsyncs.Store(0)
	big := t.TempDir()
	for i := range smallTree + 1 {
		if err := os.WriteFile(filepath.Join(big, fmt.Sprint(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := syncTree(big); err != nil {
		t.Fatal(err)
	}
	if f, s := fsyncs.Load(), syncfses.Load(); f != 0 || s != 1 {
		t.Errorf("large tree: %d fsyncs and %d syncfs, want 0 and 1", f, s)
	}
}

// TestSyncDiffed: a layer a diff wrote is made durable with its files'
// fsyncs and one of its root directory (the diff's last change), not one
// per directory; it is then the same tree (DiffUpper is not disturbed).
func TestSyncDiffed(t *testing.T) {
	testutil.RequiresRoot(t)
	fsyncs, syncfses := countSyncs(t)
	dir, _, upper, merged, tr := trackedOverlay(t, "")
	sh(t, merged, "mkdir -p a/b/c && echo x > a/b/c/f && echo y > a/g")
	l, _, _ := trackedStep(t, dir, upper, tr, nil)
	fsyncs.Store(0)
	if err := SyncDiffed(l); err != nil {
		t.Fatal(err)
	}
	// Two files and the root; not a, a/b and a/b/c.
	if f, s := fsyncs.Load(), syncfses.Load(); f != 3 || s != 0 {
		t.Errorf("a diffed layer of 2 files in 4 directories: %d fsyncs and %d syncfs, want 3 and 0", f, s)
	}
}
