package layerfs

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
)

func TestFlatten(t *testing.T) {
	img := newImage(t)
	f := New(img.layers)
	parent := tempDir(t)
	dst := filepath.Join(parent, "flat")
	if err := f.Flatten(context.Background(), dst); err != nil {
		t.Fatal(err)
	}

	// The flattened layer, read as a host directory, is the kernel's merged
	// view: no whiteouts, nothing hidden, the same metadata.
	want := hostRecs(t, mountOverlay(t, img.layers, ""))
	compareRecs(t, hostRecs(t, dst), want)
	compareRecs(t, recsOf(t, New([]string{dst})), want)

	err := filepath.Walk(dst, func(p string, info fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		names := make([]byte, 4096)
		n, err := unix.Llistxattr(p, names)
		if err != nil {
			return err
		}
		for name := range bytes.SplitSeq(names[:n], []byte{0}) {
			if strings.Contains(string(name), "overlay.") {
				t.Errorf("%s has xattr %s", p, name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	buf := make([]byte, 16)
	n, err := unix.Lgetxattr(filepath.Join(dst, "etc/motd"), "user.origin", buf)
	if err != nil || string(buf[:n]) != "test" {
		t.Errorf("etc/motd xattr user.origin = %q, %v; want test", buf[:n], err)
	}
	var a, b, dev unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "usr/share/doc/a.txt"), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(dst, "usr/share/doc/b.txt"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino {
		t.Errorf("hard linked a.txt and b.txt were copied apart")
	}
	if err := unix.Lstat(filepath.Join(dst, "dev/null"), &dev); err != nil {
		t.Fatal(err)
	}
	if dev.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("dev/null is device %d:%d, want 1:3", unix.Major(dev.Rdev), unix.Minor(dev.Rdev))
	}
	if names := dirNames(t, parent); len(names) != 1 || names[0] != "flat" {
		t.Errorf("after Flatten the parent holds %v, want only flat", names)
	}

	if err := f.Flatten(context.Background(), dst); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Flatten to an existing directory = %v, want conflict", err)
	}
}

func TestFlattenFailureLeavesNothing(t *testing.T) {
	f := New(newImage(t).layers)
	parent := tempDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Flatten(ctx, filepath.Join(parent, "flat")); !isCanceled(err) {
		t.Errorf("Flatten with a canceled context = %v, want context.Canceled", err)
	}
	if err := New([]string{filepath.Join(parent, "missing")}).Flatten(context.Background(), filepath.Join(parent, "flat")); err == nil {
		t.Error("Flatten of a missing layer succeeded")
	}
	if names := dirNames(t, parent); len(names) != 0 {
		t.Errorf("failed Flatten left %v", names)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestFlattenKeepsHoles: squashing a chain must not turn a sparse file's
// holes into disk blocks.
func TestFlattenKeepsHoles(t *testing.T) {
	requireRoot(t)
	base := tempDir(t)
	layers := buildLayers(t, base, []ent{file("top.txt", "x")}, []ent{dir("data")})
	f, err := os.OpenFile(filepath.Join(layers[1], "data", "sparse"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	// 2 GiB long: 4 KiB of data at 1 MiB and at the very end, holes around.
	const size = 2 << 30
	for _, off := range []int64{1 << 20, size - 4096} {
		if _, err := f.WriteAt(bytes.Repeat([]byte{7}, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dst := filepath.Join(base, "flat")
	if err := New(layers).Flatten(context.Background(), dst); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dst, "data", "sparse"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size || st.Blocks*512 > 1<<20 {
		t.Fatalf("flattened sparse file: size %d, %d bytes allocated; want size %d in a few blocks", st.Size, st.Blocks*512, int64(size))
	}
	out, err := os.Open(filepath.Join(dst, "data", "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for _, c := range []struct {
		off  int64
		want byte
	}{{0, 0}, {1 << 20, 7}, {1<<20 + 4096, 0}, {size / 2, 0}, {size - 4096, 7}} {
		got := make([]byte, 4096)
		if _, err := out.ReadAt(got, c.off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, bytes.Repeat([]byte{c.want}, 4096)) {
			t.Errorf("4 KiB at %d are not all %d", c.off, c.want)
		}
	}
}

// TestFlattenSyncsWhatItWrote: every regular file and directory of the
// flattened layer is fsynced while it is still in the staging directory,
// before the rename makes the layer visible, and dst's parent after it.
func TestFlattenSyncsWhatItWrote(t *testing.T) {
	img := newImage(t)
	parent := tempDir(t)
	dst := filepath.Join(parent, "flat")
	var synced []string
	renamed := false
	saved := syncFile
	t.Cleanup(func() { syncFile = saved })
	syncFile = func(f *os.File) error {
		if _, err := os.Lstat(dst); err == nil && !renamed {
			renamed = true
			synced = append(synced, "RENAMED")
		}
		synced = append(synced, f.Name())
		return saved(f)
	}
	if err := New(img.layers).Flatten(context.Background(), dst); err != nil {
		t.Fatal(err)
	}
	at := slices.Index(synced, "RENAMED")
	if at < 0 || !slices.Equal(synced[at+1:], []string{parent}) {
		t.Fatalf("after the rename, synced %q; want only the parent %s", synced[max(at, 0):], parent)
	}
	// Before the rename, paths are in the staging sibling dst.tmp-*. A file
	// counts as synced when its inode was (hard links share one).
	syncedInodes := map[uint64]bool{}
	for _, p := range synced[:at] {
		if !strings.HasPrefix(p, dst+".tmp-") {
			t.Fatalf("synced %s before the rename, outside the staging directory", p)
		}
		rel := "."
		if _, r, ok := strings.Cut(strings.TrimPrefix(p, dst), "/"); ok {
			rel = r
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dst, rel), &st); err != nil {
			t.Fatal(err)
		}
		syncedInodes[st.Ino] = true
	}
	n := 0
	err := filepath.Walk(dst, func(p string, fi fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() && !fi.IsDir() {
			return nil // symlinks and devices: their entries are in a synced directory
		}
		if !syncedInodes[fi.Sys().(*syscall.Stat_t).Ino] {
			t.Errorf("%s was not synced before the rename", p)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("checked %d files and directories, want the whole image", n)
	}
}
