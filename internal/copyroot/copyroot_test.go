package copyroot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/layerfs"
	"github.com/arborsh/arbor/internal/overlay"
	"github.com/arborsh/arbor/internal/testutil"
)

func write(t *testing.T, p, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

// tree lists every entry of fsys as "path mode [content|->target]".
func tree(t *testing.T, fsys *layerfs.FS) []string {
	t.Helper()
	var out []string
	err := fsys.Walk(context.Background(), "/", func(e layerfs.Entry) error {
		line := fmt.Sprintf("%s %o", e.Path, e.RawMode)
		switch {
		case e.Linkname != "":
			line += " ->" + e.Linkname
		case e.Mode.IsRegular():
			b, err := os.ReadFile(e.HostPath)
			if err != nil {
				return err
			}
			line += " " + string(b)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// chain makes a chain of two layers in dir, top first: files to keep,
// change and delete, a whiteout in the top layer, a read-only directory.
func chain(t *testing.T, dir string) []string {
	base, mid := filepath.Join(dir, "base"), filepath.Join(dir, "mid")
	write(t, filepath.Join(base, "etc/keep"), "keep", 0o644)
	write(t, filepath.Join(base, "etc/change"), "old", 0o644)
	write(t, filepath.Join(base, "etc/gone"), "gone", 0o644)
	write(t, filepath.Join(base, "etc/hidden"), "hidden below", 0o644)
	write(t, filepath.Join(base, "olddir/a/b"), "deep", 0o644)
	write(t, filepath.Join(base, "chmod/x"), "x", 0o644)
	write(t, filepath.Join(base, "redo/old"), "old", 0o644)
	write(t, filepath.Join(base, "ro/file"), "ro", 0o644)
	if err := os.Symlink("keep", filepath.Join(base, "etc/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(base, "ro"), 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(filepath.Join(base, "ro"), 0o755) }) // for t.TempDir's removal without root
	write(t, filepath.Join(mid, "etc/mid"), "mid", 0o600)
	if err := unix.Mknod(filepath.Join(mid, "etc/hidden"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	return []string{mid, base}
}

// change does to merged what the tests' run does: new, changed, deleted and
// re-created entries, a directory become a file, a chmod'ed directory, a
// replaced symlink.
func change(t *testing.T, merged string) {
	m := func(p string) string { return filepath.Join(merged, p) }
	write(t, m("etc/change"), "new", 0o644)
	write(t, m("new/dir/file"), "fresh", 0o640)
	for _, p := range []string{"etc/gone", "redo"} {
		if err := os.RemoveAll(m(p)); err != nil {
			t.Fatal(err)
		}
	}
	write(t, m("redo/new"), "again", 0o644)
	if err := os.RemoveAll(m("olddir")); err != nil {
		t.Fatal(err)
	}
	write(t, m("olddir"), "now a file", 0o644)
	if err := os.Chmod(m("chmod"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m("etc/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("mid", m("etc/link")); err != nil {
		t.Fatal(err)
	}
}

// TestChangesAsOverlay: what a run does under merged, Unmount leaves in
// upper so that upper stacked on the chain shows exactly merged as the run
// left it (new, changed, deleted and re-created entries, a chmod'ed
// directory, a file hidden by a whiteout of the chain itself), while what
// the run did not touch stays out of upper. Runs without root.
func TestChangesAsOverlay(t *testing.T) {
	dir := t.TempDir()
	lowers := chain(t, dir)

	upper, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "merged")
	for _, d := range []string{upper, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := New()
	if err := r.Mount(lowers, upper, filepath.Join(dir, "work"), merged); err != nil {
		t.Fatal(err)
	}
	if got, want := tree(t, layerfs.New([]string{merged})), tree(t, layerfs.New(lowers)); !slices.Equal(got, want) {
		t.Fatalf("mounted:\n%q\nwant the chain:\n%q", got, want)
	}

	change(t, merged)
	want := tree(t, layerfs.New([]string{merged}))

	if err := r.Unmount(merged); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, layerfs.New(append([]string{upper}, lowers...))); !slices.Equal(got, want) {
		t.Errorf("upper on the chain:\n%q\nwant merged as the run left it:\n%q", got, want)
	}
	for _, p := range []string{"etc/keep", "etc/mid", "chmod/x", "ro", "etc/hidden"} {
		if _, err := os.Lstat(filepath.Join(upper, p)); err == nil {
			t.Errorf("upper holds %s, which the run did not touch", p)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(upper, "etc/gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("etc/gone in upper: %v, mode %o: want a whiteout", err, st.Mode)
	}
	if ents, err := os.ReadDir(merged); err != nil || len(ents) != 0 {
		t.Errorf("merged after Unmount: %d entries, %v; want it empty", len(ents), err)
	}
	if err := r.Unmount(merged); err != nil {
		t.Errorf("second Unmount: %v", err)
	}
}

// TestSameAsKernelOverlay: for the same run, the upper directory copyroot
// leaves and the one a kernel overlay leaves show the same image on the
// chain, so a commit stores the same layer either way.
func TestSameAsKernelOverlay(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	lowers := chain(t, dir)
	views := map[string]string{}
	for name, r := range map[string]engineRootFS{"copy": New(), "kernel": kernel{}} {
		d := filepath.Join(dir, name)
		upper, work, merged := filepath.Join(d, "upper"), filepath.Join(d, "work"), filepath.Join(d, "merged")
		for _, p := range []string{upper, work, merged} {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Mount(lowers, upper, work, merged); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		change(t, merged)
		if err := r.Unmount(merged); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		views[name] = strings.Join(tree(t, layerfs.New(append([]string{upper}, lowers...))), "\n")
	}
	if views["copy"] != views["kernel"] {
		t.Errorf("copyroot's upper on the chain:\n%s\nthe kernel overlay's:\n%s", views["copy"], views["kernel"])
	}
}

// engineRootFS is engine.RootFS (which this package may not import).
type engineRootFS interface {
	Mount(lowers []string, upper, work, merged string) error
	Unmount(merged string) error
}

type kernel struct{}

func (kernel) Mount(lowers []string, upper, work, merged string) error {
	return overlay.Mount(lowers, upper, work, merged)
}

func (kernel) Unmount(merged string) error { return overlay.Unmount(merged) }
