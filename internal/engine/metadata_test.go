package engine

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil"
)

// TestConfigMetadata: an engine given a metadata store keeps everything in
// it (no arbor.db of its own under Home) and closes it on Close.
func TestConfigMetadata(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	md, err := store.Open(ctx, filepath.Join(t.TempDir(), "elsewhere.db"))
	if err != nil {
		t.Fatal(err)
	}
	home := testutil.Home(t)
	e, err := New(ctx, Config{Home: home, Metadata: md, WarmPerImage: -1})
	if err != nil {
		md.Close()
		t.Fatal(err)
	}
	if e.Store() != md {
		t.Errorf("Store() = %v, want the store in Config.Metadata", e.Store())
	}
	tok, secret, err := e.CreateToken(ctx, "acct", "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := md.TokenBySecret(ctx, secret); err != nil || got.UUID != tok.UUID {
		t.Errorf("the given store's TokenBySecret = %+v, %v; want token %s", got, err, tok.UUID)
	}
	if _, err := os.Stat(filepath.Join(home, "arbor.db")); !os.IsNotExist(err) {
		t.Errorf("the engine opened a database of its own under Home: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := md.AccountByName(ctx, "acct"); err == nil {
		t.Error("the store still answers after the engine's Close: it was not closed")
	}
}
