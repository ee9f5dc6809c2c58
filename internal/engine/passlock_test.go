package engine

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil"
)

// sharedStore is a metadata store whose pass lock another node may hold.
type sharedStore struct {
	store.Metadata
	elsewhere bool // another node holds the lock
	taken     int  // passes this node ran under it
	released  int
}

func (s *sharedStore) TryPassLock(context.Context) (func(), bool, error) {
	if s.elsewhere {
		return nil, false, nil
	}
	s.taken++
	return func() { s.released++ }, true, nil
}

// TestGCTakesTurnsAcrossNodes: on a store several nodes share, a GC pass
// runs under the store's pass lock and, while another node holds it, does
// nothing and says so (a dry run needs no lock).
func TestGCTakesTurnsAcrossNodes(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	md, err := store.Open(ctx, filepath.Join(t.TempDir(), "shared.db"))
	if err != nil {
		t.Fatal(err)
	}
	sh := &sharedStore{Metadata: md}
	e, err := New(ctx, Config{Home: testutil.Home(t), Metadata: sh, WarmPerImage: -1, GCInterval: -1})
	if err != nil {
		md.Close()
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.GC(ctx, GCOptions{}); err != nil || sh.taken != 1 || sh.released != 1 {
		t.Fatalf("GC: %v; lock taken %d, released %d; want once each", err, sh.taken, sh.released)
	}
	sh.elsewhere = true
	if _, err := e.GC(ctx, GCOptions{}); !errors.Is(err, errdefs.ErrConflict) || !errors.Is(err, errGCElsewhere) {
		t.Errorf("GC while another node runs one: %v, want a conflict saying so", err)
	}
	if _, err := e.GC(ctx, GCOptions{DryRun: true}); err != nil {
		t.Errorf("dry run while another node runs a pass: %v", err)
	}
}
