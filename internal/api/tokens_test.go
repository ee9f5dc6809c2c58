package api_test

import (
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
)

// TestDerivedTokenExpiry: a token never outlives the token that made it,
// whatever lifetime it asks for.
func TestDerivedTokenExpiry(t *testing.T) {
	d := sharedDaemon(t)
	ctx := ctxT(t)
	parent, err := d.c.CreateToken(ctx, apitypes.TokenCreateRequest{Name: ptr("short"), TTLSeconds: ptr(int64(3))})
	if err != nil {
		t.Fatal(err)
	}
	pc := newClient(t, d, parent.Secret)
	parentExp := parseTime(t, deref(parent.ExpiresAt))
	for _, tc := range []struct {
		name string
		ttl  *int64
		want func(time.Time) bool
	}{
		{"no ttl", nil, func(e time.Time) bool { return e.Equal(parentExp) }},
		{"ttl 0", ptr(int64(0)), func(e time.Time) bool { return e.Equal(parentExp) }},
		{"longer ttl", ptr(int64(3600)), func(e time.Time) bool { return e.Equal(parentExp) }},
		{"shorter ttl", ptr(int64(1)), func(e time.Time) bool { return e.Before(parentExp) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			child, err := pc.CreateToken(ctx, apitypes.TokenCreateRequest{TTLSeconds: tc.ttl})
			if err != nil {
				t.Fatal(err)
			}
			if child.ExpiresAt == nil || !tc.want(parseTime(t, *child.ExpiresAt)) {
				t.Errorf("child expires_at = %v, parent's %s", deref(child.ExpiresAt), deref(parent.ExpiresAt))
			}
			if deref(child.ParentUUID) != parent.UUID {
				t.Errorf("child parent_uuid = %q, want %s", deref(child.ParentUUID), parent.UUID)
			}
		})
	}
	child, err := pc.CreateToken(ctx, apitypes.TokenCreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cc := newClient(t, d, child.Secret)
	// Wait for the parent to expire (a deadline, not a synchronisation).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := pc.WhoAmI(ctx); client.IsUnauthorized(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the 3 s parent token still works after 10 s")
		}
	}
	if _, err := cc.WhoAmI(ctx); !client.IsUnauthorized(err) {
		t.Errorf("child of an expired token = %v, want 401", err)
	}
}

// TestRevokingATokenRevokesWhatItMade: revocation reaches every token made
// below the revoked one, across accounts, and nothing else.
func TestRevokingATokenRevokesWhatItMade(t *testing.T) {
	d := sharedDaemon(t)
	ctx := ctxT(t)
	a, err := d.c.CreateToken(ctx, apitypes.TokenCreateRequest{Name: ptr("a")})
	if err != nil {
		t.Fatal(err)
	}
	ac := newClient(t, d, a.Secret)
	b, err := ac.CreateToken(ctx, apitypes.TokenCreateRequest{Name: ptr("b"), Account: ptr("derived-team")})
	if err != nil {
		t.Fatal(err)
	}
	bc := newClient(t, d, b.Secret)
	c, err := bc.CreateToken(ctx, apitypes.TokenCreateRequest{Name: ptr("c")})
	if err != nil {
		t.Fatal(err)
	}
	cc := newClient(t, d, c.Secret)
	sibling, err := d.c.CreateToken(ctx, apitypes.TokenCreateRequest{Name: ptr("sibling")})
	if err != nil {
		t.Fatal(err)
	}
	sc := newClient(t, d, sibling.Secret)
	// An account-scoped token cannot make a token that outranks it.
	if _, err := bc.CreateToken(ctx, apitypes.TokenCreateRequest{Account: ptr(engine.DefaultAccount)}); !client.IsForbidden(err) {
		t.Errorf("derived-team token making a default-account token = %v, want 403", err)
	}

	if err := d.c.RevokeToken(ctx, a.UUID, ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		c       *client.Client
		revoked bool
	}{{"a (revoked)", ac, true}, {"b (made by a)", bc, true}, {"c (made by b)", cc, true}, {"sibling", sc, false}, {"caller", d.c, false}} {
		_, err := tc.c.WhoAmI(ctx)
		if tc.revoked && !client.IsUnauthorized(err) {
			t.Errorf("%s: WhoAmI = %v, want 401", tc.name, err)
		}
		if !tc.revoked && err != nil {
			t.Errorf("%s: WhoAmI = %v, want it to work", tc.name, err)
		}
	}
	list, err := d.c.ListTokens(ctx, "derived-team")
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range list {
		if (tk.UUID == b.UUID || tk.UUID == c.UUID) && tk.RevokedAt == nil {
			t.Errorf("listed token %s (%s) has no revoked_at", tk.UUID, tk.Name)
		}
	}
}

func newClient(t *testing.T, d *daemon, secret string) *client.Client {
	t.Helper()
	c, err := client.New(d.srv.URL, secret)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("timestamp %q: %v", s, err)
	}
	return tm
}
