package layerfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
)

// FuzzResolve resolves arbitrary paths in an image full of hostile symlinks:
// whatever the path, a result must be backed by a host path inside a layer
// reached through real directories only, and a failure must be a client
// error.
func FuzzResolve(f *testing.F) {
	img := newImage(f)
	fsys := New(img.layers)
	for _, seed := range []string{
		"", "/", ".", "..", "/etc/passwd", "etc/../../../etc/hosts", "/evil", "/evilabs",
		"/rootlink/rootlink/evil", "/loop1/x", "/chain1", "/dotdot/../..", "/etc/selflink/selflink/",
		"/hostescape/secret", "/upescape/secret", "/var/run/initctl", "/lib/libc.so", "/bin/sh/..",
		"/etc/passwd/", "/var/cache/apt", "/opt/app/config.yaml", "/etc/ssl/certs", "/srv/data/x",
		"/a\x00b", "/" + strings.Repeat("../", 100) + "etc", strings.Repeat("x/", 3000),
		"/" + strings.Repeat("y", 256), "/dangling/..", "/proc/self/root/etc/passwd",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p string) {
		for _, stat := range []func(string) (Entry, error){fsys.Lstat, fsys.Stat} {
			e, err := stat(p)
			if err != nil {
				checkClientError(t, p, err)
				continue
			}
			checkHostPath(t, img.layers, e)
		}
		entries, err := fsys.ReadDir(p)
		if err != nil {
			checkClientError(t, p, err)
		}
		for _, e := range entries {
			checkHostPath(t, img.layers, e)
		}
		file, e, err := fsys.Open(p)
		if err != nil {
			checkClientError(t, p, err)
			return
		}
		defer file.Close()
		checkHostPath(t, img.layers, e)
		if file.Name() != e.HostPath {
			t.Errorf("Open(%q) opened %s, entry says %s", p, file.Name(), e.HostPath)
		}
	})
}

func checkClientError(t *testing.T, p string, err error) {
	t.Helper()
	if !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("resolving %q: %v is not a client error", p, err)
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("resolving %q: error %q leaks a secret", p, err)
	}
}

// checkHostPath checks that e's host path is in layer e.Layer and that every
// directory on the way there is a real directory, not a symlink.
func checkHostPath(t *testing.T, layers []string, e Entry) {
	t.Helper()
	if e.Layer < 0 || e.Layer >= len(layers) {
		t.Fatalf("entry %s has layer %d", e.Path, e.Layer)
	}
	root := layers[e.Layer]
	rel, err := filepath.Rel(root, e.HostPath)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.Join(root, e.Path) != e.HostPath {
		t.Fatalf("entry %s has host path %s outside layer %s", e.Path, e.HostPath, root)
	}
	dir := root
	parts := strings.Split(rel, "/")
	for _, part := range parts[:len(parts)-1] {
		dir = filepath.Join(dir, part)
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.Fatalf("entry %s is reached through %s, which is not a real directory", e.Path, dir)
		}
	}
	if _, err := os.Lstat(e.HostPath); err != nil {
		t.Fatalf("entry %s: %v", e.Path, err)
	}
}
