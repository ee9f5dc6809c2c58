package archive

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// buildSourceTree makes a host rootfs with every file type CopyDir handles.
func buildSourceTree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "rootfs")
	do := func(err error) {
		t.Helper()
		must(t, err)
	}
	p := func(rel string) string { return filepath.Join(src, rel) }
	do(os.Mkdir(src, 0o750))
	do(os.MkdirAll(p("usr/bin"), 0o755))
	do(os.MkdirAll(p("etc"), 0o755))
	do(os.Mkdir(p("tmp"), 0o755))
	do(os.Chmod(p("tmp"), 0o1777))
	do(os.Mkdir(p("shared"), 0o755))
	do(os.Chmod(p("shared"), 0o2775))
	do(os.Chown(p("shared"), 0, 100))
	do(os.Mkdir(p("ro"), 0o755))
	do(os.WriteFile(p("ro/inside"), []byte("in a read-only dir"), 0o444))
	do(os.Chmod(p("ro"), 0o555))

	do(os.WriteFile(p("usr/bin/sudo"), []byte("#!/bin/true\n"), 0o755))
	do(os.Chown(p("usr/bin/sudo"), 0, 0))
	do(os.Chmod(p("usr/bin/sudo"), 0o4755))
	do(os.WriteFile(p("usr/bin/wall"), []byte("wall"), 0o755))
	do(os.Chown(p("usr/bin/wall"), 1000, 5))
	do(os.Chmod(p("usr/bin/wall"), 0o2755))
	do(os.WriteFile(p("etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644))
	do(os.WriteFile(p("etc/big"), []byte(strings.Repeat("0123456789", 100000)), 0o600))
	do(os.Link(p("usr/bin/sudo"), p("usr/bin/sudo-link")))
	do(os.Link(p("usr/bin/sudo"), p("etc/sudo-link")))
	do(os.Symlink("/etc/passwd", p("abs-link")))
	do(os.Symlink("../etc/passwd", p("usr/rel-link")))
	do(os.Symlink("/nonexistent", p("dangling")))
	do(os.Symlink("/", p("root-link"))) // following it would copy the host
	do(os.Link(p("abs-link"), p("abs-link-hard")))
	do(unix.Lchown(p("abs-link"), 3, 4))
	do(unix.Mkfifo(p("fifo"), 0o640))
	do(unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	do(unix.Mknod(p("loop"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 0))))
	do(unix.Lsetxattr(p("etc/passwd"), "user.color", []byte("blue"), 0))
	do(unix.Lsetxattr(p("etc/passwd"), "trusted.note", []byte("t"), 0))
	do(unix.Lsetxattr(p("abs-link"), "trusted.link", []byte("l"), 0))
	do(unix.Lsetxattr(p("etc"), "trusted.overlay.opaque", []byte("y"), 0))
	do(unix.Lsetxattr(p("etc"), "user.dir", []byte("d"), 0))
	l, err := net.Listen("unix", p("sock"))
	do(err)
	t.Cleanup(func() { l.Close() })

	// Times last, deepest first, so later steps do not disturb them.
	when := time.Date(2001, 2, 3, 4, 5, 6, 789, time.UTC)
	var all []string
	do(filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		all = append(all, path)
		return err
	}))
	for i := len(all) - 1; i >= 0; i-- {
		ts := []unix.Timespec{unix.NsecToTimespec(when.UnixNano()), unix.NsecToTimespec(when.Add(time.Duration(i) * time.Hour).UnixNano())}
		do(unix.UtimesNanoAt(unix.AT_FDCWD, all[i], ts, unix.AT_SYMLINK_NOFOLLOW))
	}
	return src
}

func TestCopyDir(t *testing.T) {
	requireRoot(t)
	src := buildSourceTree(t)
	dst := filepath.Join(t.TempDir(), "layer")
	must(t, os.Mkdir(dst, 0o755))

	st, err := CopyDir(context.Background(), src, dst)
	if err != nil {
		t.Fatalf("CopyDir() = %v", err)
	}
	// Files: sudo, wall, passwd, big, ro/inside, fifo, null, loop.
	want := Stats{Files: 8, Dirs: 6, Symlinks: 4, Hardlinks: 3, Skipped: 1, Bytes: 12 + 4 + 26 + 1000000 + 18}
	if st != want {
		t.Errorf("CopyDir() stats = %+v, want %+v", st, want)
	}

	err = filepath.WalkDir(src, func(sp string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, sp)
		dp := filepath.Join(dst, rel)
		s := lstat(t, sp)
		if fileType(s) == unix.S_IFSOCK {
			assertMissing(t, dp)
			return nil
		}
		d := lstat(t, dp)
		if fileType(d) != fileType(s) || d.Uid != s.Uid || d.Gid != s.Gid || d.Rdev != s.Rdev {
			t.Errorf("%s: type %o owner %d:%d rdev %d, want %o %d:%d %d", rel, fileType(d), d.Uid, d.Gid, d.Rdev, fileType(s), s.Uid, s.Gid, s.Rdev)
		}
		if fileType(s) != unix.S_IFLNK && d.Mode&0o7777 != s.Mode&0o7777 {
			t.Errorf("%s: mode %o, want %o", rel, d.Mode&0o7777, s.Mode&0o7777)
		}
		if d.Mtim != s.Mtim {
			t.Errorf("%s: mtime %v, want %v", rel, time.Unix(d.Mtim.Unix()), time.Unix(s.Mtim.Unix()))
		}
		if rel != "." && d.Ino == s.Ino {
			t.Errorf("%s: same inode as the source; want a copy", rel)
		}
		switch fileType(s) {
		case unix.S_IFREG:
			if got, want := readFile(t, dp), readFile(t, sp); got != want {
				t.Errorf("%s: content differs", rel)
			}
		case unix.S_IFLNK:
			got, _ := os.Readlink(dp)
			want, _ := os.Readlink(sp)
			if got != want {
				t.Errorf("%s: target %q, want %q", rel, got, want)
			}
		}
		return nil
	})
	must(t, err)

	for _, c := range []struct{ path, key, want string }{
		{"etc/passwd", "user.color", "blue"},
		{"etc/passwd", "trusted.note", "t"},
		{"abs-link", "trusted.link", "l"},
		{"etc", "user.dir", "d"},
	} {
		if got, err := getxattr(filepath.Join(dst, c.path), c.key); err != nil || got != c.want {
			t.Errorf("xattr %s on %s = %q, %v, want %q", c.key, c.path, got, err, c.want)
		}
	}
	if _, err := getxattr(filepath.Join(dst, "etc"), xattrOpaque); !errors.Is(err, unix.ENODATA) {
		t.Errorf("etc %s: %v, want it not copied", xattrOpaque, err)
	}

	sudo := lstat(t, filepath.Join(dst, "usr/bin/sudo"))
	for _, p := range []string{"usr/bin/sudo-link", "etc/sudo-link"} {
		if got := lstat(t, filepath.Join(dst, p)); got.Ino != sudo.Ino {
			t.Errorf("%s inode %d, want %d (hard link kept)", p, got.Ino, sudo.Ino)
		}
	}
	if sudo.Nlink != 3 {
		t.Errorf("sudo nlink = %d, want 3", sudo.Nlink)
	}
	if a, b := lstat(t, filepath.Join(dst, "abs-link")), lstat(t, filepath.Join(dst, "abs-link-hard")); a.Ino != b.Ino {
		t.Errorf("hard-linked symlink has inodes %d and %d, want one", a.Ino, b.Ino)
	}
}

func TestCopyDirCanceled(t *testing.T) {
	requireRoot(t)
	src := buildSourceTree(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := CopyDir(ctx, src, t.TempDir()); !errors.Is(err, context.Canceled) {
		t.Errorf("CopyDir(canceled) = %v, want context.Canceled", err)
	}
}
