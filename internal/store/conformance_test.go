package store_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/store/storetest"
)

// TestConformance runs the Metadata conformance suite against SQLite.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Metadata {
		s, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "arbor.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
