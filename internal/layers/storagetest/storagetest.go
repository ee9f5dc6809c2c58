// Package storagetest is the conformance suite of layers.Storage: every
// implementation (the local directories today, an object store later) runs
// it from its own tests.
package storagetest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layers"
)

// Factory returns a fresh, empty storage and a directory in which the suite
// builds layers to put (on the filesystem Put expects them on).
type Factory func(t *testing.T) (st layers.Storage, staging string)

// Reopen returns a second storage over the same layers as st with nothing
// of them at hand locally: another node's view of a shared store.
type Reopen func(t *testing.T, st layers.Storage) layers.Storage

// RunShared runs the suite, and then checks that a layer put into one
// storage reads back the same from the one reopen returns.
func RunShared(t *testing.T, factory Factory, reopen Reopen) {
	Run(t, factory)
	t.Run("ContentsElsewhere", func(t *testing.T) {
		st, staging := factory(t)
		testContentsElsewhere(t, st, reopen(t, st), staging)
	})
}

// Run runs the suite against the storages factory returns.
func Run(t *testing.T, factory Factory) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, st layers.Storage, staging string)
	}{
		{"PutGet", testPutGet},
		{"PutConflict", testPutConflict},
		{"RemoveList", testRemoveList},
		{"InvalidIDs", testInvalidIDs},
		{"Contents", testContents},
		{"ConcurrentGets", testConcurrentGets},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, staging := factory(t)
			tc.fn(t, st, staging)
		})
	}
}

func build(t *testing.T, staging string, files map[string]string) string {
	t.Helper()
	dir, err := os.MkdirTemp(staging, "layer-*")
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func list(t *testing.T, st layers.Storage) []string {
	t.Helper()
	ids, err := st.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

func cleanup(t *testing.T, st layers.Storage) {
	t.Helper()
	if c, ok := st.(layers.Cleaner); ok {
		if err := c.Cleanup(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func testPutGet(t *testing.T, st layers.Storage, staging string) {
	ctx := context.Background()
	if err := st.Put(ctx, "a", build(t, staging, map[string]string{"f": "a"})); err != nil {
		t.Fatal(err)
	}
	p, err := st.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(p, "f")); err != nil || string(b) != "a" {
		t.Errorf("Get(a)/f = %q, %v; want a", b, err)
	}
	if _, err := st.Get(ctx, "missing"); !errdefs.IsNotFound(err) {
		t.Errorf("Get(missing) = %v, want not found", err)
	}
	if got := list(t, st); !slices.Equal(got, []string{"a"}) {
		t.Errorf("List = %q, want [a]", got)
	}
}

func testPutConflict(t *testing.T, st layers.Storage, staging string) {
	ctx := context.Background()
	// An empty layer too: a second Put must not replace it.
	for _, files := range []map[string]string{{"f": "x"}, {}} {
		id := "x" + string(rune('0'+len(files)))
		if err := st.Put(ctx, id, build(t, staging, files)); err != nil {
			t.Fatal(err)
		}
		dir := build(t, staging, map[string]string{"g": "other"})
		if err := st.Put(ctx, id, dir); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("second Put(%s) = %v, want a conflict", id, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "g")); err != nil {
			t.Errorf("a refused Put consumed its directory: %v", err)
		}
		p, err := st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(p, "g")); err == nil {
			t.Errorf("a refused Put replaced layer %s", id)
		}
	}
}

func testRemoveList(t *testing.T, st layers.Storage, staging string) {
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if err := st.Put(ctx, id, build(t, staging, map[string]string{"f": id})); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Remove(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := st.Remove(ctx, "never"); err != nil {
		t.Errorf("Remove of a layer not stored = %v, want nil", err)
	}
	if got := list(t, st); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("List after Remove(b) = %q, want [a c]", got)
	}
	if _, err := st.Get(ctx, "b"); !errdefs.IsNotFound(err) {
		t.Errorf("Get(b) after Remove = %v, want not found", err)
	}
	cleanup(t, st)
	// A removed id can be stored again.
	if err := st.Put(ctx, "b", build(t, staging, map[string]string{"f": "b2"})); err != nil {
		t.Fatal(err)
	}
	p, _ := st.Get(ctx, "b")
	if b, err := os.ReadFile(filepath.Join(p, "f")); err != nil || string(b) != "b2" {
		t.Errorf("b stored again reads %q, %v; want b2", b, err)
	}
}

func testInvalidIDs(t *testing.T, st layers.Storage, staging string) {
	ctx := context.Background()
	dir := build(t, staging, nil)
	for _, id := range []string{"", ".", "..", "a/b", "../x", "a\x00b"} {
		if err := st.Put(ctx, id, dir); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Put(%q) = %v, want invalid argument", id, err)
		}
		if _, err := st.Get(ctx, id); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Get(%q) = %v, want invalid argument", id, err)
		}
	}
}
