package layerfs

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
)

// requireRoot skips a test that needs root (mknod, trusted xattrs, chown,
// mount), except in CI, which runs as root and must run every test.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root; CI must run it as root")
	}
	t.Skip("needs root")
}

// ent is one entry written into a test layer.
type ent struct {
	path string
	// kind: 'f' file, 'd' directory, 'o' opaque directory (trusted xattr),
	// 'u' opaque directory (user xattr), 'l' symlink, 'w' whiteout, 'p' fifo,
	// 'c' character device 1:3, 'h' hard link to the layer path in body.
	kind     byte
	body     string // file content, symlink target or hard link source
	perm     uint32 // permission bits incl. setuid/setgid/sticky; 0 = default
	uid, gid int
	xattrs   map[string]string
}

func file(p, body string) ent   { return ent{path: p, kind: 'f', body: body} }
func dir(p string) ent          { return ent{path: p, kind: 'd'} }
func opaque(p string) ent       { return ent{path: p, kind: 'o'} }
func symlink(p, to string) ent  { return ent{path: p, kind: 'l', body: to} }
func whiteout(p string) ent     { return ent{path: p, kind: 'w'} }
func hardlink(p, to string) ent { return ent{path: p, kind: 'h', body: to} }

// fixedTime is the mtime of the test entries of the top layer; layer i's are
// i hours older, so a test sees from which layer an entry's attributes come.
var fixedTime = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

func layerTime(i int) time.Time { return fixedTime.Add(-time.Duration(i) * time.Hour) }

// tempDir returns a short temporary directory: overlay mount options must fit
// in a page, and t.TempDir paths of long test names are long.
func tempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "lfs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// buildLayers writes one directory per layer (top first) below base and
// returns their paths.
func buildLayers(t testing.TB, base string, layers ...[]ent) []string {
	t.Helper()
	var dirs []string
	for i, ents := range layers {
		root := filepath.Join(base, "L"+string(rune('0'+i)))
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			writeEnt(t, root, e, layerTime(i))
		}
		dirs = append(dirs, root)
	}
	// Set directory times last, as creating entries changes them.
	for i, root := range dirs {
		err := filepath.Walk(root, func(p string, info fs.FileInfo, err error) error {
			if err != nil || !info.IsDir() {
				return err
			}
			return os.Chtimes(p, layerTime(i), layerTime(i))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return dirs
}

func writeEnt(t testing.TB, root string, e ent, mtime time.Time) {
	t.Helper()
	h := filepath.Join(root, e.path)
	if err := os.MkdirAll(filepath.Dir(h), 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	switch e.kind {
	case 'f':
		err = os.WriteFile(h, []byte(e.body), 0o644)
	case 'd', 'o', 'u':
		err = os.Mkdir(h, 0o755)
		if err == nil && e.kind == 'o' {
			err = unix.Lsetxattr(h, "trusted.overlay.opaque", []byte("y"), 0)
		}
		if err == nil && e.kind == 'u' {
			err = unix.Lsetxattr(h, "user.overlay.opaque", []byte("y"), 0)
		}
	case 'l':
		err = os.Symlink(e.body, h)
	case 'w':
		err = unix.Mknod(h, unix.S_IFCHR, 0)
	case 'p':
		err = unix.Mkfifo(h, 0o644)
	case 'c':
		err = unix.Mknod(h, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
	case 'h':
		err = os.Link(filepath.Join(root, e.body), h)
	default:
		t.Fatalf("bad entry kind %q", e.kind)
	}
	if err != nil {
		t.Fatalf("creating %s: %v", h, err)
	}
	if e.kind == 'h' {
		return
	}
	if e.perm != 0 && e.kind != 'l' {
		if err := unix.Chmod(h, e.perm); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Lchown(h, e.uid, e.gid); err != nil {
		t.Fatal(err)
	}
	if e.perm != 0 && e.kind != 'l' {
		// Again: chown cleared setuid and setgid.
		if err := unix.Chmod(h, e.perm); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range e.xattrs {
		if err := unix.Lsetxattr(h, k, []byte(v), 0); err != nil {
			t.Fatal(err)
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, h, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

// image is the shared test image: a rootfs and two upper layers exercising
// every merge rule, plus hostile symlinks.
type image struct {
	base    string   // holds the layers and an "outside" directory
	layers  []string // top first
	outside string   // a host directory with a secret, outside the layers
}

func newImage(t testing.TB) *image {
	t.Helper()
	requireRoot(t)
	base := tempDir(t)
	outside := filepath.Join(base, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("TOP SECRET\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bottom := []ent{
		file("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n"),
		file("/etc/hosts", "127.0.0.1 localhost\n"),
		file("/etc/os-release", "ID=debian\n"),
		file("/etc/ssl/certs/ca.pem", "CERT\n"),
		{path: "/bin/dash", kind: 'f', body: "#!dash\n", perm: 0o755},
		symlink("/bin/sh", "dash"),
		file("/usr/lib/libc.so", "\x7fELF\x00\x01binary"),
		symlink("/lib", "usr/lib"),
		{path: "/usr/bin/sudo", kind: 'f', body: "sudo\n", perm: 0o4755},
		{path: "/tmp", kind: 'd', perm: 0o1777},
		{path: "/var/mail", kind: 'd', perm: 0o2775, gid: 8},
		file("/var/log/old.log", "old log\n"),
		file("/var/log/keep.log", "keep\n"),
		file("/var/cache/apt/pkg.bin", "pkg"),
		file("/opt/app/config.yaml", "a: 1\n"),
		file("/opt/app/data/x.txt", "x\n"),
		{path: "/home/user", kind: 'd', perm: 0o750, uid: 1000, gid: 1000},
		{path: "/home/user/.bashrc", kind: 'f', body: "alias ll='ls -l'\n", perm: 0o600, uid: 1000, gid: 1000},
		file("/srv/data", "i am a file\n"),
		{path: "/dev/null", kind: 'c'},
		{path: "/run/initctl", kind: 'p'},
		file("/usr/share/doc/a.txt", "doc\n"),
		hardlink("/usr/share/doc/b.txt", "usr/share/doc/a.txt"),
		file("/data/a.txt", "alpha\nbeta\ngamma\ndelta\nepsilon\nzeta\neta\ntheta\n"),
		file("/data/b.log", "Error: disk\nerror: net\nok\nERROR: cpu\n"),
		file("/data/bin.dat", "error\x00binary"),
		file("/data/sub/c.txt", "beta in sub\n"),
		file("/data/long.txt", strings.Repeat("x", 70000)+"needle\nshort needle\n"),
	}
	middle := []ent{
		file("/etc/hosts", "127.0.0.1 localhost\n10.0.0.1 db\n"),
		whiteout("/var/log/old.log"),
		opaque("/var/cache"),
		file("/var/cache/new.txt", "fresh\n"),
		whiteout("/opt/app"),
		file("/opt/app2/readme", "app2\n"),
		file("/etc/ssl", "ssl is a file now\n"),
		{path: "/home/user", kind: 'd', perm: 0o750, uid: 1000, gid: 1000},
		{path: "/home/user/.bashrc", kind: 'f', body: "alias ll='ls -la'\n", perm: 0o600, uid: 1000, gid: 1000},
	}
	top := []ent{
		{path: "/etc/motd", kind: 'f', body: "Welcome to arbor\n", xattrs: map[string]string{"user.origin": "test"}},
		dir("/etc/ssl"),
		file("/etc/ssl/new.pem", "NEW\n"),
		dir("/srv/data"),
		file("/srv/data/x", "x in dir\n"),
		dir("/opt/app"),
		file("/opt/app/new", "new app\n"),
		whiteout("/etc/os-release"),
		file("/var/log/new.log", "new\n"),
		symlink("/evil", "../../../../etc/passwd"),
		symlink("/evilabs", "/etc/passwd"),
		symlink("/rootlink", "/"),
		symlink("/loop1", "loop2"),
		symlink("/loop2", "loop1"),
		symlink("/chain1", "chain2"),
		symlink("/chain2", "/etc/../etc/hosts"),
		symlink("/dotdot", ".."),
		symlink("/etc/selflink", "."),
		symlink("/var/run", "../run"),
		symlink("/dangling", "/nonexistent"),
		symlink("/hostescape", outside),
		symlink("/upescape", "../../../../../../../../"+strings.TrimPrefix(outside, "/")),
	}
	return &image{
		base:    base,
		layers:  buildLayers(t, base, top, middle, bottom),
		outside: outside,
	}
}

// rec is what the comparison tests check of an entry.
type rec struct {
	Path     string
	Mode     fs.FileMode
	Size     int64
	UID, GID uint32
	ModTime  time.Time
	Link     string
	Data     string
}

// recsOf walks f from "/" and records every entry.
func recsOf(t *testing.T, f *FS) []rec {
	t.Helper()
	var recs []rec
	err := f.Walk(context.Background(), "/", func(e Entry) error {
		r := rec{Path: e.Path, Mode: e.Mode, Size: e.Size, UID: e.UID, GID: e.GID, ModTime: e.ModTime.UTC(), Link: e.Linkname}
		if e.Mode.IsRegular() {
			file, _, err := f.Open(e.Path)
			if err != nil {
				return err
			}
			data, err := io.ReadAll(file)
			file.Close()
			if err != nil {
				return err
			}
			r.Data = string(data)
		}
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// hostRecs walks a host directory (a mount or a flattened layer) with
// filepath.Walk and records every entry by its path below root.
func hostRecs(t *testing.T, root string) []rec {
	t.Helper()
	var recs []rec
	err := filepath.Walk(root, func(p string, info fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		r := rec{Path: filepath.Join("/", rel), Mode: info.Mode(), Size: info.Size(), UID: st.Uid, GID: st.Gid, ModTime: info.ModTime().UTC()}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			r.Link, err = os.Readlink(p)
		case info.Mode().IsRegular():
			var data []byte
			data, err = os.ReadFile(p)
			r.Data = string(data)
		}
		recs = append(recs, r)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func isNotFound(err error) bool        { return errdefs.IsNotFound(err) }
func isInvalidArgument(err error) bool { return errdefs.IsInvalidArgument(err) }
func isCanceled(err error) bool        { return errors.Is(err, context.Canceled) }

// compareRecs reports every difference between two walks.
func compareRecs(t *testing.T, got, want []rec) {
	t.Helper()
	short := func(r rec) rec {
		if len(r.Data) > 40 {
			r.Data = r.Data[:40] + "..."
		}
		return r
	}
	wantBy := map[string]rec{}
	for _, r := range want {
		wantBy[r.Path] = r
	}
	gotBy := map[string]rec{}
	for _, r := range got {
		gotBy[r.Path] = r
		w, ok := wantBy[r.Path]
		switch {
		case !ok:
			t.Errorf("extra entry %+v", short(r))
		case r != w:
			t.Errorf("entry differs:\n got  %+v\n want %+v", short(r), short(w))
		}
	}
	for _, r := range want {
		if _, ok := gotBy[r.Path]; !ok {
			t.Errorf("missing entry %+v", short(r))
		}
	}
	if !t.Failed() {
		for i := range got {
			if got[i].Path != want[i].Path {
				t.Errorf("walk order: entry %d is %s, want %s", i, got[i].Path, want[i].Path)
				break
			}
		}
	}
}
