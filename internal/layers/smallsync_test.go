package layers

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
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
