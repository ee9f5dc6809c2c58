package layerfs

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// diffImages returns an image of one layer and its child with one more.
func diffImages(t *testing.T) (parent, child *FS) {
	t.Helper()
	requireRoot(t)
	layers := buildLayers(t, tempDir(t),
		[]ent{
			file("/same.txt", "same\n"),
			file("/mod.txt", "line1\nline2 changed\nline3\n"),
			{path: "/mode.txt", kind: 'f', body: "m\n", perm: 0o755},
			file("/big.bin", strings.Repeat("\x00", 99999)+"\x01"),
			file("/bigsame.bin", strings.Repeat("a", 100000)),
			file("/bigsize.bin", strings.Repeat("b", 100001)),
			whiteout("/del.txt"),
			whiteout("/deldir"),
			file("/newdir/x", "x\n"),
			file("/newdir/y", "y\n"),
			symlink("/link", "b"),
			dir("/typechange"),
			file("/typechange/f", "f\n"),
			{path: "/own.txt", kind: 'f', body: "o\n", uid: 1000},
			file("/bin.dat", "a\x00c"),
			file("/unchanged/new.txt", "n\n"),
		},
		[]ent{
			file("/same.txt", "same\n"),
			file("/mod.txt", "line1\nline2\nline3\n"),
			file("/mode.txt", "m\n"),
			file("/big.bin", strings.Repeat("\x00", 100000)),
			file("/bigsame.bin", strings.Repeat("a", 100000)),
			file("/bigsize.bin", strings.Repeat("b", 100000)),
			file("/del.txt", "gone\n"),
			file("/deldir/a", "a\n"),
			file("/deldir/sub/b", "b\n"),
			symlink("/link", "a"),
			file("/typechange", "file\n"),
			file("/own.txt", "o\n"),
			file("/bin.dat", "a\x00b"),
			{path: "/dev/null", kind: 'c'},
			file("/unchanged/dir/deep.txt", "deep\n"),
		},
	)
	return New(layers[1:]), New(layers)
}

func TestDiff(t *testing.T) {
	parent, child := diffImages(t)
	modDiff := "--- a/mod.txt\n+++ b/mod.txt\n@@ -1,3 +1,3 @@\n line1\n-line2\n+line2 changed\n line3\n"
	tests := []struct {
		name     string
		old, new *FS
		opts     DiffOptions
		want     []Change
	}{
		{
			name: "child", old: parent, new: child,
			want: []Change{
				{Path: "/big.bin", Kind: "modified", Type: "file", OldSize: 100000, NewSize: 100000},
				{Path: "/bigsize.bin", Kind: "modified", Type: "file", OldSize: 100000, NewSize: 100001},
				{Path: "/bin.dat", Kind: "modified", Type: "file", OldSize: 3, NewSize: 3},
				{Path: "/del.txt", Kind: "deleted", Type: "file", OldSize: 5},
				{Path: "/deldir", Kind: "deleted", Type: "dir"},
				{Path: "/link", Kind: "modified", Type: "symlink", OldSize: 1, NewSize: 1},
				{Path: "/mod.txt", Kind: "modified", Type: "file", OldSize: 18, NewSize: 26, Diff: modDiff},
				{Path: "/mode.txt", Kind: "modified", Type: "file", OldSize: 2, NewSize: 2},
				{Path: "/newdir", Kind: "added", Type: "dir"},
				{Path: "/own.txt", Kind: "modified", Type: "file", OldSize: 2, NewSize: 2},
				{Path: "/typechange", Kind: "modified", Type: "dir", OldSize: 5},
				{Path: "/unchanged/new.txt", Kind: "added", Type: "file", NewSize: 2},
			},
		},
		{
			name: "reverse", old: child, new: parent,
			want: []Change{
				{Path: "/big.bin", Kind: "modified", Type: "file", OldSize: 100000, NewSize: 100000},
				{Path: "/bigsize.bin", Kind: "modified", Type: "file", OldSize: 100001, NewSize: 100000},
				{Path: "/bin.dat", Kind: "modified", Type: "file", OldSize: 3, NewSize: 3},
				{Path: "/del.txt", Kind: "added", Type: "file", NewSize: 5},
				{Path: "/deldir", Kind: "added", Type: "dir"},
				{Path: "/link", Kind: "modified", Type: "symlink", OldSize: 1, NewSize: 1},
				{Path: "/mod.txt", Kind: "modified", Type: "file", OldSize: 26, NewSize: 18,
					Diff: "--- a/mod.txt\n+++ b/mod.txt\n@@ -1,3 +1,3 @@\n line1\n-line2 changed\n+line2\n line3\n"},
				{Path: "/mode.txt", Kind: "modified", Type: "file", OldSize: 2, NewSize: 2},
				{Path: "/newdir", Kind: "deleted", Type: "dir"},
				{Path: "/own.txt", Kind: "modified", Type: "file", OldSize: 2, NewSize: 2},
				{Path: "/typechange", Kind: "modified", Type: "file", NewSize: 5},
				{Path: "/unchanged/new.txt", Kind: "deleted", Type: "file", OldSize: 2},
			},
		},
		{
			name: "content limit", old: parent, new: child, opts: DiffOptions{ContentLimit: 20, Path: "/mod.txt"},
			want: []Change{{Path: "/mod.txt", Kind: "modified", Type: "file", OldSize: 18, NewSize: 26}},
		},
		{
			name: "subtree", old: parent, new: child, opts: DiffOptions{Path: "deldir/sub/"},
			want: []Change{{Path: "/deldir/sub", Kind: "deleted", Type: "dir"}},
		},
		{
			name: "added subtree", old: parent, new: child, opts: DiffOptions{Path: "/newdir"},
			want: []Change{{Path: "/newdir", Kind: "added", Type: "dir"}},
		},
		{
			name: "unchanged subtree", old: parent, new: child, opts: DiffOptions{Path: "/unchanged/dir"},
			want: []Change{},
		},
		{
			name: "same image", old: child, new: child,
			want: []Change{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Diff(context.Background(), tc.old, tc.new, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Diff =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestDiffErrors(t *testing.T) {
	parent, child := diffImages(t)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Diff(context.Background(), parent, child, DiffOptions{Path: "/nope"}); !isNotFound(err) {
		t.Errorf("Diff of a missing path = %v, want not found", err)
	}
	if _, err := Diff(context.Background(), parent, child, DiffOptions{ContentLimit: -1}); !isInvalidArgument(err) {
		t.Errorf("Diff with a negative limit = %v, want invalid argument", err)
	}
	if _, err := Diff(canceled, parent, child, DiffOptions{}); !isCanceled(err) {
		t.Errorf("Diff with a canceled context = %v, want context.Canceled", err)
	}
}

// TestDiffMatchesKernel diffs two images against a brute-force diff of the
// same images mounted with overlayfs.
func TestDiffMatchesKernel(t *testing.T) {
	img := newImage(t)
	parent, child := img.layers[1:], img.layers
	got, err := Diff(context.Background(), New(parent), New(child), DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var texts int
	for i := range got {
		if got[i].Diff != "" {
			texts++
		}
		got[i].Diff = ""
	}
	want := bruteDiff(t, mountOverlay(t, parent, ""), mountOverlay(t, child, ""))
	if len(want) < 10 {
		t.Fatalf("the fixture yields only %d changes", len(want))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Diff =\n%+v\nwant\n%+v", got, want)
	}
	if texts != 0 {
		t.Errorf("%d changes have text diffs; the fixture modifies no text file", texts)
	}
}

type hostEnt struct {
	st   syscall.Stat_t
	link string
	data string
}

func hostTree(t *testing.T, root string) map[string]hostEnt {
	t.Helper()
	tree := map[string]hostEnt{}
	err := filepath.Walk(root, func(p string, info fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		e := hostEnt{st: *info.Sys().(*syscall.Stat_t)}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			e.link, err = os.Readlink(p)
		case info.Mode().IsRegular():
			var data []byte
			data, err = os.ReadFile(p)
			e.data = string(data)
		}
		tree[filepath.Join("/", rel)] = e
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func bruteDiff(t *testing.T, oldRoot, newRoot string) []Change {
	old, new := hostTree(t, oldRoot), hostTree(t, newRoot)
	var paths []string
	for p := range old {
		paths = append(paths, p)
	}
	for p := range new {
		if _, ok := old[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.SortFunc(paths, comparePaths)
	typ := func(e hostEnt) string {
		switch e.st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			return "file"
		case unix.S_IFDIR:
			return "dir"
		case unix.S_IFLNK:
			return "symlink"
		}
		return "other"
	}
	size := func(e hostEnt) int64 {
		if typ(e) == "dir" {
			return 0
		}
		return e.st.Size
	}
	changes := []Change{}
	skip := "\x00" // a reported directory whose contents are not reported
	for _, p := range paths {
		if p != skip && isWithin(p, skip) {
			continue
		}
		o, inOld := old[p]
		n, inNew := new[p]
		switch {
		case !inOld:
			changes = append(changes, Change{Path: p, Kind: "added", Type: typ(n), NewSize: size(n)})
			skip = p
		case !inNew:
			changes = append(changes, Change{Path: p, Kind: "deleted", Type: typ(o), OldSize: size(o)})
			skip = p
		default:
			changed := o.st.Mode != n.st.Mode || o.st.Uid != n.st.Uid || o.st.Gid != n.st.Gid ||
				o.link != n.link || o.data != n.data || o.st.Rdev != n.st.Rdev ||
				(typ(o) != "dir" && o.st.Size != n.st.Size)
			if changed {
				changes = append(changes, Change{Path: p, Kind: "modified", Type: typ(n), OldSize: size(o), NewSize: size(n)})
			}
			if typ(o) != typ(n) {
				skip = p
			}
		}
	}
	return changes
}
