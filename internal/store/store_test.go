package store

import (
	"context"
	"database/sql"
	"errors"
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
		if err := s.InsertImage(ctx, im); err != nil {
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

// TestMigrationFromV1 opens a database written by the first schema: its
// images survive the upgrade, are not hidden, and hidden rows are kept out
// of every user-facing query.
func TestMigrationFromV1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "arbor.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(migrations[0] + `; PRAGMA user_version = 1;
		INSERT INTO images(uuid, account, layer, depth, tag, layer_bytes, created_at) VALUES('old', 'x', 'l1', 1, 'kept', 10, 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := open(t, path)
	var v int
	s.w.QueryRow(`PRAGMA user_version`).Scan(&v)
	if v != len(migrations) {
		t.Fatalf("user_version = %d after upgrade, want %d", v, len(migrations))
	}
	im, err := s.ImageByTag(ctx, "x", "kept")
	if err != nil || im.UUID != "old" || im.Hidden || im.Base != "" {
		t.Fatalf("image written by schema 1: %+v, %v", im, err)
	}
	hidden := Image{UUID: "h", Account: "x", Layer: "l1", Depth: 1, LayerBytes: 10, CreatedAt: time.Now(), Hidden: true, Chain: "sha256:c"}
	top := Image{UUID: "top", Account: "x", Base: "h", Layer: "l2", Depth: 2, LayerBytes: 5, CreatedAt: time.Now()}
	if err := s.Update(ctx, func(tx Tx) error {
		return errors.Join(tx.InsertImage(ctx, hidden), tx.InsertImage(ctx, top))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertImage(ctx, Image{UUID: "h2", Account: "x", Layer: "l1", Depth: 1, CreatedAt: time.Now(), Hidden: true, Chain: "sha256:c"}); err == nil {
		t.Error("a second hidden row with the same chain ID in one account was accepted")
	}
	ims, _ := s.ListImages(ctx, ImageFilter{Account: "x"})
	if len(ims) != 2 {
		t.Errorf("ListImages = %d images, want 2 (the hidden row is not listed)", len(ims))
	}
	if _, err := s.Image(ctx, "x", "h"); !errdefs.IsNotFound(err) {
		t.Errorf("Image(hidden) = %v, want not found", err)
	}
	if err := s.DeleteImage(ctx, "x", "h"); !errdefs.IsNotFound(err) {
		t.Errorf("DeleteImage(hidden) = %v, want not found", err)
	}
	if got, _ := s.Image(ctx, "x", "top"); got.MountParent() != "h" || got.Parent != "" {
		t.Errorf("top: parent %q, mount parent %q; want none and h", got.Parent, got.MountParent())
	}
	if n, _ := s.AccountBytes(ctx, "x"); n != 15 {
		t.Errorf("AccountBytes = %d, want 15 (layer l1 counted once)", n)
	}
}
