package layers

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
)

func newTestSnapshotter(t *testing.T) (*Snapshotter, *Dir) {
	t.Helper()
	home := t.TempDir()
	d, err := NewDir(filepath.Join(home, "layers"), filepath.Join(home, "trash"))
	if err != nil {
		t.Fatal(err)
	}
	staging := filepath.Join(home, "tmp")
	if err := os.Mkdir(staging, 0o700); err != nil {
		t.Fatal(err)
	}
	return New(d, staging, nil), d
}

// layerDir makes a directory holding one file, ready to be put.
func layerDir(t *testing.T, s *Snapshotter, content string) string {
	t.Helper()
	dir, err := os.MkdirTemp(s.staging, "layer-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func put(t *testing.T, s *Snapshotter, id string) {
	t.Helper()
	if err := s.Put(context.Background(), id, layerDir(t, s, id)); err != nil {
		t.Fatal(err)
	}
}

func stored(t *testing.T, s *Snapshotter) []string {
	t.Helper()
	ids, err := s.Storage().List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

func none() map[string]bool { return nil }

func TestCollectKeepsRootsAndLeases(t *testing.T) {
	s, d := newTestSnapshotter(t)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		put(t, s, id)
	}
	l := s.Lease("b")
	n, err := s.Collect(ctx, func() map[string]bool { return map[string]bool{"a": true} })
	if err != nil || n != 1 {
		t.Fatalf("Collect = %d, %v; want 1 removed", n, err)
	}
	if got := stored(t, s); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("stored after collect = %q, want a (root) and b (leased)", got)
	}
	l.Release()
	l.Release() // twice is harmless
	if n, err := s.Collect(ctx, none); err != nil || n != 2 {
		t.Fatalf("Collect = %d, %v; want 2 removed", n, err)
	}
	if ents, _ := os.ReadDir(d.trash); len(ents) != 0 {
		t.Errorf("trash holds %d entries after a collection, want none", len(ents))
	}
	if ents, _ := os.ReadDir(d.root); len(ents) != 0 {
		t.Errorf("layer store holds %d entries, want none", len(ents))
	}
}

// TestCollectDeletesOutsideTheLock: while a collection deletes a removed
// layer's contents (blocked here), a commit goes through.
func TestCollectDeletesOutsideTheLock(t *testing.T) {
	s, d := newTestSnapshotter(t)
	ctx := context.Background()
	put(t, s, "big")
	deleting, unblock := make(chan string, 1), make(chan struct{})
	d.removeAll = func(p string) error {
		deleting <- p
		<-unblock
		return os.RemoveAll(p)
	}
	collected := make(chan error, 1)
	go func() {
		_, err := s.Collect(ctx, none)
		collected <- err
	}()
	p := <-deleting // the collection is deleting "big" now
	committed := make(chan error, 1)
	go func() {
		committed <- s.Commit(ctx, layerDir(t, s, "new"), "new", func() error { return nil })
	}()
	select {
	case err := <-committed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(unblock)
		t.Fatal("a commit waited for a collection's deletion")
	}
	close(unblock)
	if err := <-collected; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after the collection: %v", p, err)
	}
	if got := stored(t, s); !slices.Equal(got, []string{"new"}) {
		t.Errorf("stored = %q, want [new]", got)
	}
}

func TestCommitRecordFails(t *testing.T) {
	s, _ := newTestSnapshotter(t)
	boom := errors.New("boom")
	err := s.Commit(context.Background(), layerDir(t, s, "x"), "x", func() error {
		if _, err := s.Get(context.Background(), "x"); err != nil {
			t.Errorf("layer not stored while record runs: %v", err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Commit = %v, want the record's error", err)
	}
	if got := stored(t, s); len(got) != 0 {
		t.Fatalf("stored = %q after a failed record, want nothing", got)
	}
}

func TestPutConflict(t *testing.T) {
	s, _ := newTestSnapshotter(t)
	put(t, s, "x")
	dir := layerDir(t, s, "again")
	if err := s.Put(context.Background(), "x", dir); !errdefs.IsConflict(err) {
		t.Fatalf("Put of a stored id = %v, want a conflict", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("a refused Put consumed its directory: %v", err)
	}
	if _, err := s.Get(context.Background(), "y"); !errdefs.IsNotFound(err) {
		t.Errorf("Get of a missing layer = %v, want not found", err)
	}
	for _, id := range []string{"", "..", "a/b", "x.tmp-1"} {
		if err := s.Put(context.Background(), id, dir); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Put(%q) = %v, want invalid argument", id, err)
		}
	}
}

func TestPrepareViewRemove(t *testing.T) {
	s, d := newTestSnapshotter(t)
	ctx := context.Background()
	put(t, s, "top")
	put(t, s, "base")
	dir := filepath.Join(t.TempDir(), "run")
	a, err := s.Prepare(ctx, dir, []string{"top", "base"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{d.Path("top"), d.Path("base")}; !slices.Equal(a.Lowers, want) {
		t.Errorf("Lowers = %q, want %q", a.Lowers, want)
	}
	for _, p := range []string{a.Upper, a.Work, a.Merged} {
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() || filepath.Dir(p) != dir {
			t.Errorf("%s: %v, want a directory in %s", p, err, dir)
		}
	}
	paths, release, err := s.View(ctx, []string{"base"})
	if err != nil || !slices.Equal(paths, []string{d.Path("base")}) {
		t.Fatalf("View = %q, %v", paths, err)
	}
	if n, _ := s.Collect(ctx, none); n != 0 {
		t.Fatalf("collected %d layers of a prepared view", n)
	}
	if err := s.Remove(a); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("view's directory left behind: %v", err)
	}
	if n, _ := s.Collect(ctx, none); n != 1 {
		t.Fatalf("collected %d layers, want top (base is still viewed)", n)
	}
	release()
	if n, _ := s.Collect(ctx, none); n != 1 {
		t.Fatalf("collected %d layers, want base", n)
	}
	if _, err := s.Prepare(ctx, dir, []string{"gone"}); !errdefs.IsNotFound(err) {
		t.Errorf("Prepare on a missing layer = %v, want not found", err)
	}
	if len(s.pinned) != 0 {
		t.Errorf("pins left: %v", s.pinned)
	}
}

// TestNewDirRecovers: what a crash left in the trash or staged in the
// store goes when the store is opened again; layers stay.
func TestNewDirRecovers(t *testing.T) {
	home := t.TempDir()
	root, trash := filepath.Join(home, "layers"), filepath.Join(home, "trash")
	for _, p := range []string{filepath.Join(root, "keep"), filepath.Join(root, "x.tmp-1"), filepath.Join(trash, "old-1", "sub")} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	d, err := NewDir(root, trash)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := d.List(context.Background())
	if !slices.Equal(ids, []string{"keep"}) {
		t.Errorf("List = %q, want [keep]", ids)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 1 {
		t.Errorf("store holds %d entries, want the layer only", len(ents))
	}
	if ents, _ := os.ReadDir(trash); len(ents) != 0 {
		t.Errorf("trash holds %d entries, want none", len(ents))
	}
}
