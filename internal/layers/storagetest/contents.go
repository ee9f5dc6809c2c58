package storagetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/layers"
)

// buildFull makes a layer holding what an overlayfs upper directory can:
// owners, odd modes, user xattrs, a whiteout, an opaque directory, hard
// links, symlinks, a sparse file, a fifo and a character device, and a
// root directory with its own owner and mode.
func buildFull(t *testing.T, staging string) string {
	t.Helper()
	dir, err := os.MkdirTemp(staging, "layer-*")
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	must(os.MkdirAll(p("etc/opaque"), 0o755))
	must(os.WriteFile(p("etc/opaque/kept"), []byte("kept"), 0o600))
	must(unix.Setxattr(p("etc/opaque"), "trusted.overlay.opaque", []byte("y"), 0))
	must(unix.Mknod(p("etc/deleted"), unix.S_IFCHR, 0)) // a whiteout
	must(os.WriteFile(p("etc/owned"), []byte("owned"), 0o640))
	must(os.Lchown(p("etc/owned"), 1234, 5678))
	must(os.WriteFile(p("bin-suid"), []byte("#!"), 0o755))
	must(unix.Chmod(p("bin-suid"), 0o4755))
	must(os.WriteFile(p("xattr"), []byte("x"), 0o644))
	must(unix.Lsetxattr(p("xattr"), "user.note", []byte("hello\x00world"), 0))
	must(os.WriteFile(p("link1"), []byte("shared inode"), 0o644))
	must(os.Link(p("link1"), p("etc/link2")))
	must(os.Symlink("../etc/owned", p("sym")))
	must(os.Lchown(p("sym"), 42, 43))
	must(unix.Mkfifo(p("fifo"), 0o600))
	must(unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	f, err := os.Create(p("sparse"))
	must(err)
	_, err = f.WriteAt([]byte("end"), 64<<20)
	must(err)
	must(f.Close())
	must(os.Mkdir(p("ro"), 0o500))
	past := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	must(os.Chtimes(p("etc/owned"), past, past))
	must(os.Chtimes(p("ro"), past, past))
	must(os.Chmod(dir, 0o751))
	must(os.Chown(dir, 7, 8))
	return dir
}

// describe lists everything of the tree at dir that a layer must keep.
func describe(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	inodes := map[uint64]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		line := fmt.Sprintf("%s mode=%o owner=%d:%d", rel, st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			line += fmt.Sprintf(" size=%d sha=%s mtime=%d", st.Size, hex.EncodeToString(sum[:6]), st.Mtim.Sec)
			if st.Nlink > 1 {
				if first, ok := inodes[st.Ino]; ok {
					line += " linked-to=" + first
				} else {
					inodes[st.Ino] = rel
				}
			}
			if st.Size > 1<<20 && st.Blocks*512 >= st.Size {
				line += " NOT-SPARSE"
			}
		case unix.S_IFLNK:
			target, _ := os.Readlink(path)
			line += " -> " + target
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" rdev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		case unix.S_IFDIR:
			if rel != "." {
				line += fmt.Sprintf(" mtime=%d", st.Mtim.Sec)
			}
		}
		for _, name := range []string{"trusted.overlay.opaque", "user.note"} {
			buf := make([]byte, 64)
			if n, err := unix.Lgetxattr(path, name, buf); err == nil {
				line += fmt.Sprintf(" %s=%q", name, buf[:n])
			}
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// testContents: Get returns exactly what Put was given.
func testContents(t *testing.T, st layers.Storage, staging string) {
	testContentsElsewhere(t, st, st, staging)
}

// testContentsElsewhere: Get from other returns exactly what Put into st
// was given, whatever the storages do with it in between.
func testContentsElsewhere(t *testing.T, st, other layers.Storage, staging string) {
	// testutil.RequiresRoot's rule; storagetest is not a test file, so it
	// may not import testutil.
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root, and CI must run it: run the suite as root")
		}
		t.Skip("requires root: owners, devices and trusted xattrs")
	}
	ctx := context.Background()
	dir := buildFull(t, staging)
	want := describe(t, dir)
	if err := st.Put(ctx, "full", dir); err != nil {
		t.Fatal(err)
	}
	if ids, err := other.List(ctx); err != nil || !slices.Equal(ids, []string{"full"}) {
		t.Errorf("List elsewhere = %q, %v; want [full]", ids, err)
	}
	p, err := other.Get(ctx, "full")
	if err != nil {
		t.Fatal(err)
	}
	if got := describe(t, p); got != want {
		t.Errorf("layer read back differs.\ngot:\n%s\nwant:\n%s", got, want)
	}
}

// testConcurrentGets: Gets of one layer at once all see the whole layer.
func testConcurrentGets(t *testing.T, st layers.Storage, staging string) {
	ctx := context.Background()
	files := map[string]string{}
	for i := range 50 {
		files[fmt.Sprintf("f%02d", i)] = strings.Repeat("x", i*100)
	}
	if err := st.Put(ctx, "c", build(t, staging, files)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			p, err := st.Get(ctx, "c")
			if err != nil {
				errs <- err
				return
			}
			ents, err := os.ReadDir(p)
			if err != nil || len(ents) != len(files) {
				errs <- fmt.Errorf("Get(c) holds %d entries (%v), want %d", len(ents), err, len(files))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
