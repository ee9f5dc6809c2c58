package registry

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/jonboulle/clockwork"
)

// TestExportBlobsGoWithExpiredImage: an image that retention expires
// loses its exports and the blobs no other export uses, as with a delete.
func TestExportBlobsGoWithExpiredImage(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	fc := clockwork.NewFakeClock()
	e, err := engine.New(ctx, engine.Config{Home: testutil.Home(t), Runtime: "runc", Clock: fc, GCInterval: -1,
		Retention: engine.Retention{ImageTTL: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	im, err := Install(e, loopback(Options{}))
	if err != nil {
		t.Fatal(err)
	}
	base, err := im.ImportArchive(ctx, e, acct, bytes.NewReader(busyboxTar(t)), int64(len(busyboxTar(t))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetTag(ctx, acct, base, "base"); err != nil {
		t.Fatal(err)
	}
	child, err := e.NewImage(ctx, acct, base, func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "child"), []byte("only in the child"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	x := ExportHandler(e, nil)
	img, err := e.Image(ctx, acct, child)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := x.export(ctx, acct, img, "")
	if err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(e.Home(), "registry", "blobs", "sha256", rec.Layer[len("sha256:"):])
	if _, err := os.Stat(blob); err != nil {
		t.Fatalf("the child's flattened layer blob: %v", err)
	}
	fc.Advance(2 * time.Hour)
	rep, err := e.GC(ctx, engine.GCOptions{})
	if err != nil || len(rep.Images) != 1 || rep.Images[0].UUID != child {
		t.Fatalf("GC = %+v, %v; want the child expired", rep, err)
	}
	if _, err := os.Stat(blob); !os.IsNotExist(err) {
		t.Errorf("blob of the expired image: %v, want it gone", err)
	}
	if _, err := os.Stat(filepath.Join(e.Home(), "registry", "exports", recKey(child, "")+".json")); !os.IsNotExist(err) {
		t.Errorf("export record of the expired image: %v, want it gone", err)
	}
}
