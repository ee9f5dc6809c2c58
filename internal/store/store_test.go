package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestMigrationsIdempotentAndVersioned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "arbor.db")
	s := open(t, path)
	s.Close()
	s2 := open(t, path) // re-opening applies nothing twice
	var v int
	s2.w.QueryRow(`PRAGMA user_version`).Scan(&v)
	if v != len(migrations) {
		t.Fatalf("user_version = %d, want %d", v, len(migrations))
	}
	s2.w.Exec(`PRAGMA user_version = 99`)
	s2.Close()
	if _, err := Open(context.Background(), path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("opening a newer schema: %v, want a clear error", err)
	}
}

func TestTagsUniquePerAccount(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "arbor.db"))
	ctx := context.Background()
	for _, im := range []Image{{UUID: "a", Account: "x"}, {UUID: "b", Account: "x"}, {UUID: "c", Account: "y"}} {
		im.Layer, im.Depth, im.CreatedAt = "l"+im.UUID, 1, time.Now()
		if err := s.Tx(ctx, func(tx *sql.Tx) error { return InsertImage(ctx, tx, im) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetTag(ctx, "x", "a", "base"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTag(ctx, "y", "c", "base"); err != nil {
		t.Fatalf("same tag in another account: %v", err)
	}
	if err := s.SetTag(ctx, "x", "b", "base"); err != nil {
		t.Fatal(err)
	}
	if im, _ := s.ImageByTag(ctx, "x", "base"); im.UUID != "b" {
		t.Fatalf("tag points at %q, want it moved to b", im.UUID)
	}
	if im, _ := s.Image(ctx, "x", "a"); im.Tag != "" {
		t.Fatalf("old image kept tag %q", im.Tag)
	}
	if _, err := s.Image(ctx, "y", "a"); !errdefs.IsNotFound(err) {
		t.Fatalf("account y sees x's image: %v", err)
	}
}

func TestFilesDedupAndEventsOrder(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "arbor.db"))
	ctx := context.Background()
	f1, err := s.PutFile(ctx, File{UUID: "u1", Account: "x", SHA256: "ab", Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	f2, _ := s.PutFile(ctx, File{UUID: "u2", Account: "x", SHA256: "ab", Size: 1})
	if f1.UUID != f2.UUID {
		t.Fatalf("same content got uuids %s and %s", f1.UUID, f2.UUID)
	}
	for i := range 5 {
		if err := s.AppendEvent(ctx, "op", Event{ID: int64(i), TS: time.Now(), Type: "stdout", Data: "{}"}); err != nil {
			t.Fatal(err)
		}
	}
	evs, _ := s.Events(ctx, "op", 1, 0)
	if len(evs) != 3 || evs[0].ID != 2 {
		t.Fatalf("events after 1: %d starting at %v, want 3 from 2", len(evs), evs)
	}
	if err := s.AppendEvent(ctx, "op", Event{ID: 2, TS: time.Now(), Type: "x", Data: "{}"}); err == nil {
		t.Fatal("duplicate event id accepted")
	}
}
