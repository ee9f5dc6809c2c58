package storetest

import (
	"slices"
	"strings"
	"testing"

	"github.com/arborsh/arbor/internal/store"
)

func testExpireFiles(t *testing.T, m store.Metadata) {
	shared, own := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
	put := func(uuid, account, sha string, i int) {
		t.Helper()
		if f, err := m.PutFile(ctx, store.File{UUID: uuid, Account: account, SHA256: sha, Size: 10, UpdatedAt: at(i)}); err != nil || !f.UpdatedAt.Equal(at(i)) {
			t.Fatalf("PutFile(%s at %v) = %+v, %v; want it recorded at that time", uuid, at(i), f, err)
		}
	}
	put("x-old", "x", shared, 0)
	put("x-own", "x", own, 0)
	put("y-new", "y", shared, 100)
	put("z-old", "z", own, 0)
	// A run names x-own at 200: it is used, so it stays.
	if n, err := m.TouchFiles(ctx, "x", []string{"x-own", "y-new"}, at(200)); err != nil || n != 1 {
		t.Fatalf("TouchFiles = %d, %v; want 1 (y-new is another account's)", n, err)
	}
	if n, err := m.TouchFiles(ctx, "x", []string{"x-own"}, at(150)); err != nil || n != 1 {
		t.Fatalf("TouchFiles(earlier) = %d, %v", n, err)
	}
	if f, _ := m.FileByUUID(ctx, "x", "x-own"); !f.UpdatedAt.Equal(at(200)) {
		t.Fatalf("x-own used at %v after touches at 200 and 150, want 200", f.UpdatedAt)
	}
	names := func(fs []store.File) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.UUID)
		}
		slices.Sort(out)
		return out
	}
	sel := store.FileExpiry{UsedBefore: at(150), Except: []string{"z"}, DryRun: true}
	gone, orphans, err := m.ExpireFiles(ctx, sel)
	if err != nil || !slices.Equal(names(gone), []string{"x-old", "y-new"}) || !slices.Equal(orphans, []string{shared}) {
		t.Fatalf("ExpireFiles(dry, before 150, not z) = %v, %v, %v; want x-old and y-new, and their shared content orphaned", names(gone), orphans, err)
	}
	if _, err := m.FileByUUID(ctx, "x", "x-old"); err != nil {
		t.Fatalf("the dry run deleted x-old: %v", err)
	}
	// Before 50: only x-old goes; y-new still names the shared content.
	gone, orphans, err = m.ExpireFiles(ctx, store.FileExpiry{UsedBefore: at(50), Account: "x"})
	if err != nil || !slices.Equal(names(gone), []string{"x-old"}) || len(orphans) != 0 {
		t.Fatalf("ExpireFiles(x, before 50) = %v, %v, %v; want x-old, no orphan (y-new names its content)", names(gone), orphans, err)
	}
	if _, err := m.FileByUUID(ctx, "x", "x-old"); err == nil {
		t.Fatal("x-old is still there")
	}
	gone, orphans, err = m.ExpireFiles(ctx, store.FileExpiry{UsedBefore: at(150), Except: []string{"z"}})
	if err != nil || !slices.Equal(names(gone), []string{"y-new"}) || !slices.Equal(orphans, []string{shared}) {
		t.Fatalf("ExpireFiles(before 150, not z) = %v, %v, %v; want y-new, its content orphaned", names(gone), orphans, err)
	}
}

// testNamedContents: the contents any account's records name, of those
// asked about.
func testNamedContents(t *testing.T, m store.Metadata) {
	a, b, none := strings.Repeat("a1", 32), strings.Repeat("b2", 32), strings.Repeat("c3", 32)
	for i, f := range []store.File{{UUID: "n1", Account: "x", SHA256: a}, {UUID: "n2", Account: "y", SHA256: a}, {UUID: "n3", Account: "y", SHA256: b}} {
		f.Size, f.UpdatedAt = 1, at(i)
		if _, err := m.PutFile(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	got, err := m.NamedContents(ctx, []string{a, none, b})
	if err != nil || len(got) != 2 || !got[a] || !got[b] {
		t.Errorf("NamedContents = %v, %v; want %s and %s", got, err, a[:4], b[:4])
	}
	if got, err := m.NamedContents(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("NamedContents(none) = %v, %v", got, err)
	}
}
