package cli

import (
	"slices"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
)

func TestTokenLifecycleAndWhoami(t *testing.T) {
	t.Parallel()
	d := fakeDaemon(t)
	me := okJSON[apitypes.WhoAmIResponse](t, d, "whoami")
	if me.Account != "default" || me.TokenUUID == "" || !me.Permissions["spawn"] {
		t.Errorf("whoami --json = %+v", me)
	}
	wantContains(t, "whoami", d.ok(t, "whoami"), "daemon:   "+d.url, "account:  default", me.TokenUUID)

	tok := okJSON[apitypes.TokenCreateResponse](t, d, "token", "create", "--account", "tok-alice", "--name", "laptop", "--ttl", "1h")
	if tok.Account != "tok-alice" || tok.Name != "laptop" || tok.ExpiresAt == nil || tok.Secret == "" || !apitypes.IsUUID(tok.UUID) {
		t.Fatalf("token create --json = %+v", tok)
	}
	// The new token works, for its own account.
	var out, errb strings.Builder
	if code := Main(t.Context(), []string{"--url", d.url, "--token", tok.Secret, "--json", "whoami"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("whoami with the new token: exit %d: %s", code, errb.String())
	}
	alice := decode[apitypes.WhoAmIResponse](t, out.String())
	if alice.Account != "tok-alice" || alice.TokenUUID != tok.UUID || alice.TokenExpiration == nil {
		t.Errorf("whoami as alice = %+v", alice)
	}
	// An account sees only its own images.
	out.Reset()
	if code := Main(t.Context(), []string{"--url", d.url, "--token", tok.Secret, "images", "-q"}, strings.NewReader(""), &out, &errb); code != 0 || out.String() != "" {
		t.Errorf("images as a new account: exit %d, %q", code, out.String())
	}

	// Human create prints the secret alone on stdout.
	secret := strings.TrimSpace(d.ok(t, "token", "create", "--account", "tok-alice", "--name", "second"))
	if !strings.HasPrefix(secret, "arb_") || strings.Contains(secret, " ") {
		t.Errorf("token create stdout = %q, want the secret alone", secret)
	}

	list := okJSON[[]apitypes.Token](t, d, "token", "list", "--account", "tok-alice")
	if len(list) != 2 || !slices.ContainsFunc(list, func(tk apitypes.Token) bool { return tk.UUID == tok.UUID && tk.Name == "laptop" }) {
		t.Errorf("token list --json = %+v", list)
	}
	wantContains(t, "token list", d.ok(t, "token", "list", "--account", "tok-alice"), "TOKEN", tok.UUID, "laptop", "second")

	d.ok(t, "token", "revoke", "--account", "tok-alice", tok.UUID)
	errb.Reset()
	code := Main(t.Context(), []string{"--url", d.url, "--token", tok.Secret, "whoami"}, strings.NewReader(""), &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "rejected the token") {
		t.Errorf("whoami with a revoked token: exit %d, %q", code, errb.String())
	}
	if r := d.arbor(t, "token", "revoke", "00000000-0000-4000-8000-000000000000"); r.code != 1 || !strings.Contains(r.stderr, "no token") {
		t.Errorf("revoke of an unknown token: %v", r)
	}
	if r := d.arbor(t, "token", "create", "--ttl", "forever"); r.code != 1 || !strings.Contains(r.stderr, "--ttl") {
		t.Errorf("token create --ttl forever: %v", r)
	}
}
