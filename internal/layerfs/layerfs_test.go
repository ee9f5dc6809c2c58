package layerfs

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/arborsh/arbor/internal/errdefs"
)

func TestLstatStat(t *testing.T) {
	img := newImage(t)
	f := New(img.layers)
	tests := []struct {
		name    string
		path    string
		follow  bool   // Stat rather than Lstat
		want    string // canonical path
		layer   int
		mode    fs.FileMode
		link    string
		wantErr func(error) bool
	}{
		{name: "absolute", path: "/etc/passwd", want: "/etc/passwd", layer: 2, mode: 0o644},
		{name: "relative", path: "etc/passwd", want: "/etc/passwd", layer: 2, mode: 0o644},
		{name: "dotdot clamps at root", path: "/../../etc/passwd", want: "/etc/passwd", layer: 2, mode: 0o644},
		{name: "dotdot inside", path: "/etc/../../etc/./hosts", want: "/etc/hosts", layer: 1, mode: 0o644},
		{name: "empty is root", path: "", want: "/", layer: 0, mode: fs.ModeDir | 0o755},
		{name: "dot is root", path: ".", want: "/", layer: 0, mode: fs.ModeDir | 0o755},
		{name: "double slashes", path: "//etc//motd", want: "/etc/motd", layer: 0, mode: 0o644},
		{name: "lstat symlink", path: "/evil", want: "/evil", layer: 0, mode: fs.ModeSymlink | 0o777, link: "../../../../etc/passwd"},
		{name: "relative escape stays inside", path: "/evil", follow: true, want: "/etc/passwd", layer: 2, mode: 0o644},
		{name: "absolute symlink", path: "/evilabs", follow: true, want: "/etc/passwd", layer: 2, mode: 0o644},
		{name: "symlink to root", path: "/rootlink/rootlink/etc/hosts", want: "/etc/hosts", layer: 1, mode: 0o644},
		{name: "stat symlink to root", path: "/rootlink", follow: true, want: "/", layer: 0, mode: fs.ModeDir | 0o755},
		{name: "chain", path: "/chain1", follow: true, want: "/etc/hosts", layer: 1, mode: 0o644},
		{name: "dotdot symlink", path: "/dotdot/dotdot/etc/passwd", want: "/etc/passwd", layer: 2, mode: 0o644},
		{name: "self link", path: "/etc/selflink/selflink/passwd", want: "/etc/passwd", layer: 2, mode: 0o644},
		{name: "dotdot after symlink is physical", path: "/bin/sh/../../etc/passwd", wantErr: isNotFound},
		{name: "dotdot after dir symlink", path: "/lib/../bin/sudo", want: "/usr/bin/sudo", layer: 2, mode: fs.ModeSetuid | 0o755},
		{name: "directory symlink", path: "/var/run/initctl", want: "/run/initctl", layer: 2, mode: fs.ModeNamedPipe | 0o644},
		{name: "trailing slash follows", path: "/lib/", want: "/usr/lib", layer: 2, mode: fs.ModeDir | 0o755},
		{name: "relative symlink", path: "/bin/sh", follow: true, want: "/bin/dash", layer: 2, mode: 0o755},
		{name: "loop lstat", path: "/loop1", want: "/loop1", layer: 0, mode: fs.ModeSymlink | 0o777, link: "loop2"},
		{name: "loop stat", path: "/loop1", follow: true, wantErr: isInvalidArgument},
		{name: "loop intermediate", path: "/loop1/x", wantErr: isInvalidArgument},
		{name: "dangling lstat", path: "/dangling", want: "/dangling", layer: 0, mode: fs.ModeSymlink | 0o777, link: "/nonexistent"},
		{name: "dangling stat", path: "/dangling", follow: true, wantErr: isNotFound},
		{name: "host absolute symlink", path: "/hostescape/secret", wantErr: isNotFound},
		{name: "host relative symlink", path: "/upescape/secret", wantErr: isNotFound},
		{name: "whiteout hides file", path: "/var/log/old.log", wantErr: isNotFound},
		{name: "sibling of whiteout", path: "/var/log/keep.log", want: "/var/log/keep.log", layer: 2, mode: 0o644},
		{name: "opaque hides lower", path: "/var/cache/apt/pkg.bin", wantErr: isNotFound},
		{name: "opaque dir content", path: "/var/cache/new.txt", want: "/var/cache/new.txt", layer: 1, mode: 0o644},
		{name: "whiteout of dir hides it", path: "/opt/app/config.yaml", wantErr: isNotFound},
		{name: "dir recreated over whiteout", path: "/opt/app/new", want: "/opt/app/new", layer: 0, mode: 0o644},
		{name: "file hides dir below", path: "/etc/ssl/certs/ca.pem", wantErr: isNotFound},
		{name: "dir over file", path: "/etc/ssl", want: "/etc/ssl", layer: 0, mode: fs.ModeDir | 0o755},
		{name: "dir replaces file", path: "/srv/data/x", want: "/srv/data/x", layer: 0, mode: 0o644},
		{name: "whiteout in top", path: "/etc/os-release", wantErr: isNotFound},
		{name: "file as dir", path: "/etc/passwd/", wantErr: isNotFound},
		{name: "file as dir component", path: "/etc/passwd/x", wantErr: isNotFound},
		{name: "missing", path: "/nope", wantErr: isNotFound},
		{name: "setuid", path: "/usr/bin/sudo", want: "/usr/bin/sudo", layer: 2, mode: fs.ModeSetuid | 0o755},
		{name: "sticky", path: "/tmp", want: "/tmp", layer: 2, mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{name: "setgid", path: "/var/mail", want: "/var/mail", layer: 2, mode: fs.ModeDir | fs.ModeSetgid | 0o775},
		{name: "char device", path: "/dev/null", want: "/dev/null", layer: 2, mode: fs.ModeDevice | fs.ModeCharDevice | 0o644},
		{name: "NUL byte", path: "/etc\x00/passwd", wantErr: isInvalidArgument},
		{name: "name too long", path: "/" + strings.Repeat("a", 300), wantErr: isInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stat, fn := f.Lstat, "Lstat"
			if tc.follow {
				stat, fn = f.Stat, "Stat"
			}
			e, err := stat(tc.path)
			if tc.wantErr != nil {
				if !tc.wantErr(err) {
					t.Fatalf("%s(%q) error = %v, want another class", fn, tc.path, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s(%q): %v", fn, tc.path, err)
			}
			if e.Path != tc.want || e.Layer != tc.layer || e.Mode != tc.mode || e.Linkname != tc.link {
				t.Errorf("%s(%q) = path %s layer %d mode %v link %q, want %s %d %v %q",
					fn, tc.path, e.Path, e.Layer, e.Mode, e.Linkname, tc.want, tc.layer, tc.mode, tc.link)
			}
			if want := filepath.Join(img.layers[tc.layer], tc.want); e.HostPath != want {
				t.Errorf("%s(%q).HostPath = %s, want %s", fn, tc.path, e.HostPath, want)
			}
			if want := filepath.Base(tc.want); e.Name != want {
				t.Errorf("%s(%q).Name = %s, want %s", fn, tc.path, e.Name, want)
			}
			if !e.ModTime.Equal(layerTime(tc.layer)) {
				t.Errorf("%s(%q).ModTime = %v, want %v", fn, tc.path, e.ModTime, layerTime(tc.layer))
			}
		})
	}
}

func TestEntryFields(t *testing.T) {
	f := New(newImage(t).layers)
	tests := []struct {
		path     string
		rawMode  uint32
		size     int64
		uid, gid uint32
		nlink    uint64
	}{
		{path: "/etc/passwd", rawMode: 0o100644, size: 69, nlink: 1},
		{path: "/usr/bin/sudo", rawMode: 0o104755, size: 5, nlink: 1},
		{path: "/home/user/.bashrc", rawMode: 0o100600, size: 18, uid: 1000, gid: 1000, nlink: 1},
		{path: "/home/user", rawMode: 0o40750, size: 4096, uid: 1000, gid: 1000, nlink: 2},
		{path: "/usr/share/doc/a.txt", rawMode: 0o100644, size: 4, nlink: 2},
		{path: "/lib", rawMode: 0o120777, size: 7, nlink: 1},
	}
	for _, tc := range tests {
		e, err := f.Lstat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if e.RawMode != tc.rawMode || e.Size != tc.size || e.UID != tc.uid || e.GID != tc.gid || e.Nlink != tc.nlink {
			t.Errorf("Lstat(%q) = raw %o size %d uid %d gid %d nlink %d, want %o %d %d %d %d",
				tc.path, e.RawMode, e.Size, e.UID, e.GID, e.Nlink, tc.rawMode, tc.size, tc.uid, tc.gid, tc.nlink)
		}
	}
}

func TestReadDir(t *testing.T) {
	f := New(newImage(t).layers)
	tests := []struct {
		path    string
		want    []string // name:layer
		wantErr func(error) bool
	}{
		{path: "/etc", want: []string{"hosts:1", "motd:0", "passwd:2", "selflink:0", "ssl:0"}},
		{path: "/etc/ssl", want: []string{"new.pem:0"}},
		{path: "/var/log", want: []string{"keep.log:2", "new.log:0"}},
		{path: "/var/cache", want: []string{"new.txt:1"}},
		{path: "/opt", want: []string{"app:0", "app2:1"}},
		{path: "/opt/app", want: []string{"new:0"}},
		{path: "/srv/data", want: []string{"x:0"}},
		{path: "/var", want: []string{"cache:1", "log:0", "mail:2", "run:0"}},
		{path: "/lib", want: []string{"libc.so:2"}},
		{path: "/rootlink/etc/selflink/ssl", want: []string{"new.pem:0"}},
		{path: "/etc/passwd", wantErr: isNotFound},
		{path: "/var/cache/apt", wantErr: isNotFound},
		{path: "/loop1", wantErr: isInvalidArgument},
	}
	for _, tc := range tests {
		entries, err := f.ReadDir(tc.path)
		if tc.wantErr != nil {
			if !tc.wantErr(err) {
				t.Errorf("ReadDir(%q) error = %v, want another class", tc.path, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("ReadDir(%q): %v", tc.path, err)
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.Name+":"+string(rune('0'+e.Layer)))
			if e.Path != filepath.Join(entries[0].Path, "..", e.Name) {
				t.Errorf("ReadDir(%q): entry %s has path %s", tc.path, e.Name, e.Path)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("ReadDir(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}

func TestOpen(t *testing.T) {
	f := New(newImage(t).layers)
	tests := []struct {
		path    string
		want    string
		wantErr func(error) bool
	}{
		{path: "/etc/hosts", want: "127.0.0.1 localhost\n10.0.0.1 db\n"},
		{path: "/evil", want: "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n"},
		{path: "/bin/sh", want: "#!dash\n"},
		{path: "/var/run/../srv/data/x", want: "x in dir\n"},
		{path: "/etc", wantErr: isInvalidArgument},
		{path: "/dev/null", wantErr: isInvalidArgument},
		{path: "/hostescape/secret", wantErr: isNotFound},
		{path: "/upescape/secret", wantErr: isNotFound},
		{path: "/etc/os-release", wantErr: isNotFound},
	}
	for _, tc := range tests {
		file, e, err := f.Open(tc.path)
		if tc.wantErr != nil {
			if !tc.wantErr(err) {
				t.Errorf("Open(%q) error = %v, want another class", tc.path, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Open(%q): %v", tc.path, err)
		}
		data, err := io.ReadAll(file)
		file.Close()
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != tc.want || e.Size != int64(len(tc.want)) {
			t.Errorf("Open(%q) = %q (size %d), want %q", tc.path, data, e.Size, tc.want)
		}
	}
}

func TestWalk(t *testing.T) {
	f := New(newImage(t).layers)
	tests := []struct {
		name string
		root string
		skip map[string]error // error fn returns for a path
		want []string
	}{
		{name: "subtree", root: "/etc", want: []string{"/etc", "/etc/hosts", "/etc/motd", "/etc/passwd", "/etc/selflink", "/etc/ssl", "/etc/ssl/new.pem"}},
		{name: "skip dir", root: "/etc", skip: map[string]error{"/etc/ssl": fs.SkipDir}, want: []string{"/etc", "/etc/hosts", "/etc/motd", "/etc/passwd", "/etc/selflink", "/etc/ssl"}},
		{name: "skip rest of dir", root: "/etc", skip: map[string]error{"/etc/motd": fs.SkipDir}, want: []string{"/etc", "/etc/hosts", "/etc/motd"}},
		{name: "skip all", root: "/", skip: map[string]error{"/data/a.txt": fs.SkipAll}, want: []string{"/", "/bin", "/bin/dash", "/bin/sh", "/chain1", "/chain2", "/dangling", "/data", "/data/a.txt"}},
		{name: "skip root", root: "/etc", skip: map[string]error{"/etc": fs.SkipDir}, want: []string{"/etc"}},
		{name: "symlink root not followed", root: "/lib", want: []string{"/lib"}},
		{name: "intermediate symlink followed", root: "/rootlink/opt", want: []string{"/opt", "/opt/app", "/opt/app/new", "/opt/app2", "/opt/app2/readme"}},
		{name: "file", root: "/etc/motd", want: []string{"/etc/motd"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			err := f.Walk(context.Background(), tc.root, func(e Entry) error {
				got = append(got, e.Path)
				return tc.skip[e.Path]
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Walk(%q) visited %v, want %v", tc.root, got, tc.want)
			}
		})
	}

	t.Run("errors", func(t *testing.T) {
		boom := errors.New("boom")
		err := f.Walk(context.Background(), "/etc", func(e Entry) error {
			if e.Name == "passwd" {
				return boom
			}
			return nil
		})
		if !errors.Is(err, boom) {
			t.Errorf("Walk error = %v, want %v", err, boom)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := f.Walk(ctx, "/", func(Entry) error { return nil }); !isCanceled(err) {
			t.Errorf("Walk with a canceled context = %v, want context.Canceled", err)
		}
		if err := f.Walk(context.Background(), "/nope", func(Entry) error { return nil }); !isNotFound(err) {
			t.Errorf("Walk(/nope) = %v, want not found", err)
		}
	})
}

func TestNoLayers(t *testing.T) {
	if _, err := New(nil).Stat("/"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Stat on an empty chain = %v, want failed precondition", err)
	}
}

// TestUserXattrOpaque checks that user.overlay.opaque hides lower layers
// like trusted.overlay.opaque.
func TestUserXattrOpaque(t *testing.T) {
	requireRoot(t)
	layers := buildLayers(t, tempDir(t),
		[]ent{{path: "/d", kind: 'u'}, file("/d/new", "n")},
		[]ent{file("/d/old", "o"), file("/other", "x")},
	)
	entries, err := New(layers).ReadDir("/d")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name != "new" {
		t.Errorf("ReadDir(/d) = %v, want only new", entries)
	}
	if _, err := New(layers).Stat("/d/old"); !isNotFound(err) {
		t.Errorf("Stat(/d/old) = %v, want not found", err)
	}
}
