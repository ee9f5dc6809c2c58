package archive

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOverlayMount stacks an OCI layer with whiteouts on a lower layer and
// lets the kernel judge the result: deleted files and the lower contents of
// opaque directories must be gone from the mounted view.
func TestOverlayMount(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	base := t.TempDir()
	lower, upper, mnt := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "mnt")
	for _, d := range []string{lower, upper, mnt} {
		must(t, os.Mkdir(d, 0o755))
	}

	lowerTar := tarball(t,
		file("keep", "lower"),
		file("gone", "lower"),
		file("changed", "lower"),
		dir("tree"),
		file("tree/a", "lower"),
		dir("opq"),
		file("opq/old", "lower"),
		dir("opq/olddir"),
		file("opq/olddir/deep", "lower"),
		dir("merged"),
		file("merged/lower", "lower"),
		file("merged/gone", "lower"),
	)
	if _, err := ApplyTar(ctx, bytes.NewReader(lowerTar), lower, Options{}); err != nil {
		t.Fatalf("ApplyTar(lower) = %v", err)
	}
	upperTar := gzipped(t, tarball(t,
		file(".wh.gone", ""),
		file(".wh.tree", ""),
		file("changed", "upper"),
		dir("opq"),
		file("opq/.wh..wh..opq", ""),
		file("opq/new", "upper"),
		dir("merged"),
		file("merged/.wh.gone", ""),
		file("merged/upper", "upper"),
	))
	st, err := ApplyTar(ctx, bytes.NewReader(upperTar), upper, Options{ConvertWhiteouts: true})
	if err != nil {
		t.Fatalf("ApplyTar(upper) = %v", err)
	}
	if st.Whiteouts != 4 {
		t.Errorf("ApplyTar(upper) whiteouts = %d, want 4", st.Whiteouts)
	}

	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+upper+":"+lower); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})

	for p, want := range map[string]string{
		"keep":         "lower",
		"changed":      "upper",
		"opq/new":      "upper",
		"merged/lower": "lower",
		"merged/upper": "upper",
	} {
		if got := readFile(t, filepath.Join(mnt, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	for _, p := range []string{"gone", "tree", "tree/a", "opq/old", "opq/olddir", "merged/gone"} {
		assertMissing(t, filepath.Join(mnt, p))
	}
	for d, want := range map[string][]string{
		".":      {"changed", "keep", "merged", "opq"},
		"opq":    {"new"},
		"merged": {"lower", "upper"},
	} {
		ents, err := os.ReadDir(filepath.Join(mnt, d))
		must(t, err)
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if !slices.Equal(got, want) {
			t.Errorf("ReadDir(%s) = %v, want %v", d, got, want)
		}
	}
}
