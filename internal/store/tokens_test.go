package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
)

// TestTokenParents: a token is stored only while its parent is live, and
// revoking a token revokes its whole subtree in one transaction.
func TestTokenParents(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "arbor.db"))
	ctx := context.Background()
	if _, err := s.EnsureAccount(ctx, "a", "a"); err != nil {
		t.Fatal(err)
	}
	mk := func(id, parent string, exp time.Time) error {
		return s.CreateToken(ctx, Token{UUID: id, Account: "a", Parent: parent, ExpiresAt: exp}, "secret-of-"+id)
	}
	for _, tk := range []struct{ id, parent string }{{"root", ""}, {"a", "root"}, {"a1", "a"}, {"a11", "a1"}, {"b", "root"}} {
		if err := mk(tk.id, tk.parent, time.Time{}); err != nil {
			t.Fatalf("create %s: %v", tk.id, err)
		}
	}
	if err := mk("expired", "", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ id, parent string }{{"orphan", "missing"}, {"late", "expired"}} {
		if err := mk(tc.id, tc.parent, time.Time{}); !errors.Is(err, errdefs.ErrUnauthorized) {
			t.Errorf("token under %s = %v, want unauthorized", tc.parent, err)
		}
	}
	if err := s.RevokeToken(ctx, "a", "a"); err != nil {
		t.Fatal(err)
	}
	if err := mk("after", "a1", time.Time{}); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Errorf("token under a revoked token's child = %v, want unauthorized", err)
	}
	for _, tc := range []struct {
		id      string
		revoked bool
	}{{"root", false}, {"a", true}, {"a1", true}, {"a11", true}, {"b", false}} {
		_, err := s.TokenBySecret(ctx, "secret-of-"+tc.id)
		if got := errors.Is(err, errdefs.ErrUnauthorized); got != tc.revoked {
			t.Errorf("TokenBySecret(%s) = %v, want revoked=%v", tc.id, err, tc.revoked)
		}
	}
}
