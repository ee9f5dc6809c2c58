package archive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"archive/tar"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
)

func TestApplyTar(t *testing.T) {
	requireRoot(t)
	nanoTime := time.Date(2020, 1, 2, 3, 4, 5, 123456789, time.UTC)
	accessTime := time.Date(2019, 6, 7, 8, 9, 10, 987654321, time.UTC)
	longDir := strings.Repeat("d", 200) + "/" + strings.Repeat("e", 200)
	longTarget := "/" + strings.Repeat("t", 300)

	tests := []struct {
		name  string
		ents  []ent
		opts  Options
		stats Stats
		check func(t *testing.T, dir string)
	}{
		{
			name:  "regular file with owner, mode and mtime",
			ents:  []ent{file("f", "hello", mode(0o640), owner(1000, 2000))},
			stats: Stats{Files: 1, Bytes: 5},
			check: func(t *testing.T, dir string) {
				p := filepath.Join(dir, "f")
				st := lstat(t, p)
				if got := readFile(t, p); got != "hello" {
					t.Errorf("content = %q, want %q", got, "hello")
				}
				if fileType(st) != unix.S_IFREG || st.Mode&0o7777 != 0o640 || st.Uid != 1000 || st.Gid != 2000 {
					t.Errorf("f: type %o mode %o owner %d:%d, want regular 0640 1000:2000", fileType(st), st.Mode&0o7777, st.Uid, st.Gid)
				}
				if got := mtimeOf(st); !got.Equal(testTime) {
					t.Errorf("mtime = %v, want %v", got, testTime)
				}
			},
		},
		{
			name: "setuid setgid and sticky bits survive chown",
			ents: []ent{
				file("suid", "x", mode(0o4755), owner(1000, 1000)),
				file("sgid", "x", mode(0o2755), owner(1000, 1000)),
				dir("tmp", mode(0o1777)),
				dir("shared", mode(0o2775), owner(0, 100)),
			},
			stats: Stats{Files: 2, Dirs: 2, Bytes: 2},
			check: func(t *testing.T, dir string) {
				for name, want := range map[string]uint32{"suid": 0o4755, "sgid": 0o2755, "tmp": 0o1777, "shared": 0o2775} {
					if got := lstat(t, filepath.Join(dir, name)).Mode & 0o7777; got != want {
						t.Errorf("%s mode = %o, want %o", name, got, want)
					}
				}
			},
		},
		{
			name: "read-only directory gets its mode and mtime after its contents",
			ents: []ent{
				dir("ro", mode(0o555), owner(3, 4), mtime(nanoTime)),
				file("ro/f", "data"),
				dir("ro/sub", mode(0o500)),
				file("ro/sub/g", "data"),
			},
			stats: Stats{Files: 2, Dirs: 2, Bytes: 8},
			check: func(t *testing.T, dir string) {
				st := lstat(t, filepath.Join(dir, "ro"))
				if st.Mode&0o7777 != 0o555 || st.Uid != 3 || st.Gid != 4 {
					t.Errorf("ro: mode %o owner %d:%d, want 0555 3:4", st.Mode&0o7777, st.Uid, st.Gid)
				}
				if got := mtimeOf(st); !got.Equal(nanoTime) {
					t.Errorf("ro mtime = %v, want %v", got, nanoTime)
				}
				if got := lstat(t, filepath.Join(dir, "ro/sub")).Mode & 0o7777; got != 0o500 {
					t.Errorf("ro/sub mode = %o, want 500", got)
				}
			},
		},
		{
			name:  "missing parents are created 0755",
			ents:  []ent{file("a/b/c", "x")},
			stats: Stats{Files: 1, Bytes: 1},
			check: func(t *testing.T, dir string) {
				for _, p := range []string{"a", "a/b"} {
					st := lstat(t, filepath.Join(dir, p))
					if fileType(st) != unix.S_IFDIR || st.Mode&0o7777 != 0o755 {
						t.Errorf("%s: type %o mode %o, want dir 0755", p, fileType(st), st.Mode&0o7777)
					}
				}
			},
		},
		{
			name: "symlinks are created, not followed, with owner and mtime",
			ents: []ent{
				symlink("abs", "/etc/passwd", owner(7, 8), mtime(nanoTime)),
				symlink("rel", "../../x"),
				symlink("long", longTarget),
			},
			stats: Stats{Symlinks: 3},
			check: func(t *testing.T, dir string) {
				for name, want := range map[string]string{"abs": "/etc/passwd", "rel": "../../x", "long": longTarget} {
					got, err := os.Readlink(filepath.Join(dir, name))
					if err != nil || got != want {
						t.Errorf("Readlink(%s) = %q, %v, want %q", name, got, err, want)
					}
				}
				st := lstat(t, filepath.Join(dir, "abs"))
				if st.Uid != 7 || st.Gid != 8 || !mtimeOf(st).Equal(nanoTime) {
					t.Errorf("abs: owner %d:%d mtime %v, want 7:8 %v", st.Uid, st.Gid, mtimeOf(st), nanoTime)
				}
			},
		},
		{
			name: "hard links share the inode",
			ents: []ent{
				file("a/f", "shared", mode(0o600)),
				hardlink("b/h", "a/f"),
				hardlink("/c", "./a/f"),
				hardlink("d", "b/h"),
			},
			stats: Stats{Files: 1, Hardlinks: 3, Bytes: 6},
			check: func(t *testing.T, dir string) {
				want := lstat(t, filepath.Join(dir, "a/f"))
				if want.Nlink != 4 {
					t.Errorf("nlink = %d, want 4", want.Nlink)
				}
				for _, p := range []string{"b/h", "c", "d"} {
					if got := lstat(t, filepath.Join(dir, p)); got.Ino != want.Ino {
						t.Errorf("%s inode = %d, want %d", p, got.Ino, want.Ino)
					}
				}
			},
		},
		{
			name: "fifos and char devices, block devices skipped",
			ents: []ent{
				fifo("dev/fifo", mode(0o620)),
				device(tar.TypeChar, "dev/null", 1, 3, mode(0o666)),
				device(tar.TypeChar, "dev/wh", 0, 0),
				device(tar.TypeBlock, "dev/sda", 8, 0),
			},
			stats: Stats{Files: 3, Skipped: 1},
			check: func(t *testing.T, dir string) {
				if st := lstat(t, filepath.Join(dir, "dev/fifo")); fileType(st) != unix.S_IFIFO || st.Mode&0o7777 != 0o620 {
					t.Errorf("fifo: type %o mode %o", fileType(st), st.Mode&0o7777)
				}
				st := lstat(t, filepath.Join(dir, "dev/null"))
				if fileType(st) != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 || st.Mode&0o7777 != 0o666 {
					t.Errorf("null: type %o rdev %d:%d mode %o", fileType(st), unix.Major(st.Rdev), unix.Minor(st.Rdev), st.Mode&0o7777)
				}
				assertMissing(t, filepath.Join(dir, "dev/sda"))
			},
		},
		{
			name: "long names in PAX and GNU formats",
			ents: []ent{
				file(longDir+"/pax", "p", format(tar.FormatPAX)),
				file(longDir+"/gnu", "g", format(tar.FormatGNU)),
				hardlink(longDir+"/link", longDir+"/pax"),
			},
			stats: Stats{Files: 2, Hardlinks: 1, Bytes: 2},
			check: func(t *testing.T, dir string) {
				if got := readFile(t, filepath.Join(dir, longDir, "gnu")); got != "g" {
					t.Errorf("gnu content = %q", got)
				}
				if a, b := lstat(t, filepath.Join(dir, longDir, "pax")), lstat(t, filepath.Join(dir, longDir, "link")); a.Ino != b.Ino {
					t.Errorf("long hard link has inode %d, want %d", b.Ino, a.Ino)
				}
			},
		},
		{
			name: "xattrs from PAX records, overlay ones dropped",
			ents: []ent{
				file("f", "x", xattr("user.color", "blue"), xattr("trusted.note", "t"), xattr("security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
					xattr("trusted.overlay.redirect", "/etc"), xattr("user.overlay.origin", "x")),
				dir("d", xattr("trusted.overlay.opaque", "y"), xattr("trusted.d", "dir")),
				symlink("l", "f", xattr("trusted.l", "link"), xattr("user.ignored", "symlinks cannot hold user xattrs")),
			},
			stats: Stats{Files: 1, Dirs: 1, Symlinks: 1, Bytes: 1},
			check: func(t *testing.T, dir string) {
				for _, c := range []struct{ path, key, want string }{
					{"f", "user.color", "blue"},
					{"f", "trusted.note", "t"},
					{"d", "trusted.d", "dir"},
					{"l", "trusted.l", "link"},
				} {
					if got, err := getxattr(filepath.Join(dir, c.path), c.key); err != nil || got != c.want {
						t.Errorf("xattr %s on %s = %q, %v, want %q", c.key, c.path, got, err, c.want)
					}
				}
				if _, err := getxattr(filepath.Join(dir, "f"), "security.capability"); err != nil {
					t.Errorf("security.capability on f: %v, want it set after chown", err)
				}
				for _, c := range []struct{ path, key string }{{"f", "trusted.overlay.redirect"}, {"f", "user.overlay.origin"}, {"d", "trusted.overlay.opaque"}} {
					if got, err := getxattr(filepath.Join(dir, c.path), c.key); !errors.Is(err, unix.ENODATA) {
						t.Errorf("xattr %s on %s = %q, %v, want ENODATA", c.key, c.path, got, err)
					}
				}
			},
		},
		{
			name:  "nanosecond mtime and atime",
			ents:  []ent{file("f", "", mtime(nanoTime), atime(accessTime))},
			stats: Stats{Files: 1},
			check: func(t *testing.T, dir string) {
				st := lstat(t, filepath.Join(dir, "f"))
				if got := mtimeOf(st); !got.Equal(nanoTime) {
					t.Errorf("mtime = %v, want %v", got, nanoTime)
				}
				if got := time.Unix(st.Atim.Unix()); !got.Equal(accessTime) {
					t.Errorf("atime = %v, want %v", got, accessTime)
				}
			},
		},
		{
			name: "later entries replace earlier ones",
			ents: []ent{
				file("f2d", "file"),
				dir("f2d"),
				dir("d2f"),
				file("d2f/child", "x"),
				file("d2f", "now a file"),
				file("f2l", "file"),
				symlink("f2l", "target"),
				symlink("l2f", "/etc/passwd"),
				file("l2f", "replaced the link, not its target"),
				dir("merge", mode(0o700)),
				file("merge/a", "a"),
				dir("merge", mode(0o750)),
			},
			stats: Stats{Files: 6, Dirs: 4, Symlinks: 2, Bytes: 4 + 1 + 10 + 4 + 33 + 1},
			check: func(t *testing.T, dir string) {
				if st := lstat(t, filepath.Join(dir, "f2d")); fileType(st) != unix.S_IFDIR {
					t.Errorf("f2d type %o, want dir", fileType(st))
				}
				if got := readFile(t, filepath.Join(dir, "d2f")); got != "now a file" {
					t.Errorf("d2f = %q", got)
				}
				if st := lstat(t, filepath.Join(dir, "f2l")); fileType(st) != unix.S_IFLNK {
					t.Errorf("f2l type %o, want symlink", fileType(st))
				}
				if st := lstat(t, filepath.Join(dir, "l2f")); fileType(st) != unix.S_IFREG {
					t.Errorf("l2f type %o, want regular", fileType(st))
				}
				if got := readFile(t, filepath.Join(dir, "merge/a")); got != "a" {
					t.Errorf("merge/a = %q, want it kept when the directory reappears", got)
				}
				if got := lstat(t, filepath.Join(dir, "merge")).Mode & 0o7777; got != 0o750 {
					t.Errorf("merge mode = %o, want the last entry's 0750", got)
				}
			},
		},
		{
			name: "names through in-layer symlinks are the same entries",
			ents: []ent{
				dir("usr/lib"),
				symlink("lib", "usr/lib"),
				file("lib/x", "x"),
				hardlink("y", "usr/lib/x"),
				hardlink("lib/z", "usr/lib/x"),
				hardlink("usr/lib/z", "lib/z"), // itself
				file("usr/lib/.wh..wh..opq", ""),
			},
			opts:  Options{ConvertWhiteouts: true},
			stats: Stats{Files: 1, Dirs: 1, Symlinks: 1, Hardlinks: 2, Whiteouts: 1, Bytes: 1},
			check: func(t *testing.T, dir string) {
				want := lstat(t, filepath.Join(dir, "usr/lib/x"))
				for _, p := range []string{"y", "usr/lib/z"} {
					if got := lstat(t, filepath.Join(dir, p)); got.Ino != want.Ino {
						t.Errorf("%s inode = %d, want %d", p, got.Ino, want.Ino)
					}
				}
				if got, err := getxattr(filepath.Join(dir, "usr/lib"), xattrOpaque); err != nil || got != "y" {
					t.Errorf("usr/lib opaque = %q, %v", got, err)
				}
			},
		},
		{
			name: "replacing a directory redirects later entries under its name",
			ents: []ent{
				dir("e"),
				file("d/a", "a"),
				symlink("d", "e"),
				file("d/b", "b"),
			},
			stats: Stats{Files: 2, Dirs: 1, Symlinks: 1, Bytes: 2},
			check: func(t *testing.T, dir string) {
				if got := readFile(t, filepath.Join(dir, "e/b")); got != "b" {
					t.Errorf("e/b = %q, want the file written through the new symlink", got)
				}
				assertMissing(t, filepath.Join(dir, "e/a"))
			},
		},
		{
			name:  "whiteout names are ordinary files without conversion",
			ents:  []ent{file(".wh.foo", "x"), file("d/.wh..wh..opq", "")},
			stats: Stats{Files: 2, Bytes: 1},
			check: func(t *testing.T, dir string) {
				for _, p := range []string{".wh.foo", "d/.wh..wh..opq"} {
					if st := lstat(t, filepath.Join(dir, p)); fileType(st) != unix.S_IFREG {
						t.Errorf("%s type %o, want regular", p, fileType(st))
					}
				}
				if _, err := getxattr(filepath.Join(dir, "d"), xattrOpaque); !errors.Is(err, unix.ENODATA) {
					t.Errorf("d is opaque (%v), want no xattr", err)
				}
			},
		},
		{
			name:  "root entry sets the layer root's metadata; absolute names are relative",
			ents:  []ent{dir("./", mode(0o750), owner(0, 5), mtime(nanoTime), xattr("trusted.root", "r")), file("/etc/hostname", "box"), dir("/")},
			stats: Stats{Files: 1, Bytes: 3},
			check: func(t *testing.T, dir string) {
				if got := readFile(t, filepath.Join(dir, "etc/hostname")); got != "box" {
					t.Errorf("etc/hostname = %q", got)
				}
				if got, err := getxattr(dir, "trusted.root"); err != nil || got != "r" {
					t.Errorf("root xattr = %q, %v, want \"r\"", got, err)
				}
				// The last root entry ("/", 0755, testTime) wins.
				st := lstat(t, dir)
				if st.Mode&0o7777 != 0o755 || !mtimeOf(st).Equal(testTime) {
					t.Errorf("root mode %o mtime %v, want 0755 %v", st.Mode&0o7777, mtimeOf(st), testTime)
				}
			},
		},
		{
			name:  "gzip input is detected",
			ents:  nil, // replaced below by a gzip stream
			stats: Stats{Files: 1, Bytes: 3},
			check: func(t *testing.T, dir string) {
				if got := readFile(t, filepath.Join(dir, "z")); got != "zip" {
					t.Errorf("z = %q", got)
				}
			},
		},
		{
			name:  "empty input is an empty layer",
			stats: Stats{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			var in []byte
			switch {
			case tc.name == "gzip input is detected":
				in = gzipped(t, tarball(t, file("z", "zip")))
			case tc.ents != nil:
				in = tarball(t, tc.ents...)
			}
			st, err := ApplyTar(context.Background(), bytes.NewReader(in), s.dir, tc.opts)
			if err != nil {
				t.Fatalf("ApplyTar() = %v", err)
			}
			if st != tc.stats {
				t.Errorf("ApplyTar() stats = %+v, want %+v", st, tc.stats)
			}
			if tc.check != nil {
				tc.check(t, s.dir)
			}
			s.assertContained(t)
		})
	}
}

func TestApplyTarWhiteouts(t *testing.T) {
	requireRoot(t)
	s := newSandbox(t)
	// Content from "an earlier attempt" that the opaque marker must hide.
	if err := os.MkdirAll(filepath.Join(s.dir, "opq/stale"), 0o755); err != nil {
		t.Fatal(err)
	}
	in := tarball(t,
		file("opq/early", "same layer, before the marker"),
		dir("opq"),
		file("opq/.wh..wh..opq", ""),
		file("opq/late", "same layer, after the marker"),
		file(".wh.gone", ""),
		file("dir/.wh.sub", ""),
		file("implicit/.wh..wh..opq", ""),
		file("replaced", "x"),
		file(".wh.replaced", ""),
		file(".wh..wh.plnk/123", "aufs bookkeeping"),
		file(".wh..wh.aufs", ""),
	)
	st, err := ApplyTar(context.Background(), bytes.NewReader(in), s.dir, Options{ConvertWhiteouts: true})
	if err != nil {
		t.Fatalf("ApplyTar() = %v", err)
	}
	if want := (Stats{Files: 3, Dirs: 1, Whiteouts: 5, Bytes: 29 + 28 + 1}); st != want {
		t.Errorf("ApplyTar() stats = %+v, want %+v", st, want)
	}
	for _, p := range []string{"gone", "dir/sub", "replaced"} {
		st := lstat(t, filepath.Join(s.dir, p))
		if fileType(st) != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%s: type %o rdev %d, want a 0/0 char device whiteout", p, fileType(st), st.Rdev)
		}
	}
	for _, p := range []string{"opq", "implicit"} {
		if got, err := getxattr(filepath.Join(s.dir, p), xattrOpaque); err != nil || got != "y" {
			t.Errorf("%s %s = %q, %v, want \"y\"", p, xattrOpaque, got, err)
		}
	}
	for _, p := range []string{"opq/early", "opq/late"} {
		if st := lstat(t, filepath.Join(s.dir, p)); fileType(st) != unix.S_IFREG {
			t.Errorf("%s type %o, want the same-layer file kept", p, fileType(st))
		}
	}
	for _, p := range []string{"opq/stale", "opq/.wh..wh..opq", ".wh.gone", "dir/.wh.sub", ".wh..wh.plnk", ".wh..wh.aufs"} {
		assertMissing(t, filepath.Join(s.dir, p))
	}
	s.assertContained(t)
}

func TestApplyTarCanceled(t *testing.T) {
	requireRoot(t)
	s := newSandbox(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ApplyTar(ctx, bytes.NewReader(tarball(t, file("f", "x"))), s.dir, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("ApplyTar(canceled) = %v, want context.Canceled", err)
	}
	s.assertContained(t)
}

func TestApplyTarMissingDir(t *testing.T) {
	_, err := ApplyTar(context.Background(), bytes.NewReader(nil), filepath.Join(t.TempDir(), "nope"), Options{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ApplyTar(missing dir) = %v, want ErrNotExist", err)
	}
	if errdefs.IsInvalidArgument(err) {
		t.Errorf("ApplyTar(missing dir) = %v, must not blame the archive", err)
	}
}
