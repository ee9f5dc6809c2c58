package postgres_test

import (
	"context"
	"testing"

	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/store/postgres"
	"github.com/arborsh/arbor/internal/store/storetest"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
)

// open returns a store on a fresh database, closed when t ends.
func open(t *testing.T) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance runs the Metadata conformance suite against PostgreSQL.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Metadata { return open(t) })
}
