package engine

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
)

// TestPreviewLinks: a signed link admits to its operation's port until it
// expires, and not to another port or operation, with another expiry, after
// the port is exposed anew, or once the exposure has lapsed; the bearer
// way admits only the owning account; the key survives a restart.
func TestPreviewLinks(t *testing.T) {
	home := t.TempDir()
	e := &Engine{cfg: Config{Home: home}}
	const op, other = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
	x := &exposure{expires: time.Now().Add(time.Hour)}
	x.nonce[0] = 1
	e.previews.ops = map[string]*opPreviews{op: {account: "alice", ports: map[int]*exposure{8080: x}}}
	secret, err := e.previewSecret()
	if err != nil {
		t.Fatal(err)
	}
	link := func(exp time.Time) string {
		return strconv.FormatInt(exp.Unix(), 10) + "." + sign(secret, op, 8080, x, exp.Unix())
	}
	good := link(time.Now().Add(time.Minute))
	if err := e.AuthorizePreview(op, 8080, good, ""); err != nil {
		t.Fatalf("valid link: %v", err)
	}
	expS, mac, _ := strings.Cut(good, ".")
	later, _ := strconv.ParseInt(expS, 10, 64)
	refused := map[string]func() error{
		"expired":           func() error { return e.AuthorizePreview(op, 8080, link(time.Now().Add(-time.Second)), "") },
		"another expiry":    func() error { return e.AuthorizePreview(op, 8080, strconv.FormatInt(later+3600, 10)+"."+mac, "") },
		"another port":      func() error { return e.AuthorizePreview(op, 8081, good, "") },
		"another operation": func() error { return e.AuthorizePreview(other, 8080, good, "") },
		"garbage":           func() error { return e.AuthorizePreview(op, 8080, "x", "") },
		"another account":   func() error { return e.AuthorizePreview(op, 8080, "", "bob") },
	}
	for name, f := range refused {
		if err := f(); !errors.Is(err, errdefs.ErrForbidden) {
			t.Errorf("%s: %v, want Forbidden", name, err)
		}
	}
	if err := e.AuthorizePreview(op, 8080, "", "alice"); err != nil {
		t.Errorf("owner's bearer: %v", err)
	}
	// A restarted daemon reads the same key.
	e2 := &Engine{cfg: Config{Home: home}}
	e2.previews.ops = e.previews.ops
	if err := e2.AuthorizePreview(op, 8080, good, ""); err != nil {
		t.Errorf("valid link after a restart: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(home, previewKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v, want mode 0600", fi, err)
	}
	// Exposed anew (a new nonce): the old link is dead.
	x.nonce[0] = 2
	if err := e.AuthorizePreview(op, 8080, good, ""); !errors.Is(err, errdefs.ErrForbidden) {
		t.Errorf("link of an earlier exposure: %v, want Forbidden", err)
	}
	// The exposure lapsed.
	x.nonce[0] = 1
	x.expires = time.Now().Add(-time.Second)
	if err := e.AuthorizePreview(op, 8080, good, ""); !errors.Is(err, errdefs.ErrForbidden) {
		t.Errorf("lapsed exposure: %v, want Forbidden", err)
	}
}
