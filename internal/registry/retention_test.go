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
	ctx := context.Background()
	e, fc, x, _, child := expiringChild(t)
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

// TestGCCountsExportBlobs: a GC pass counts the export blobs that only
// its expired images used in what comes back, dry or not, and not the
// blobs an image that stays shares with them.
func TestGCCountsExportBlobs(t *testing.T) {
	ctx := context.Background()
	e, fc, x, base, child := expiringChild(t)
	// Both forms of both images: the child's layered export shares the
	// base's layer blob, which must not count.
	kept := map[string]bool{}
	var recs []*exportRecord
	for _, id := range []string{base, child} {
		img, err := e.Image(ctx, acct, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, variant := range []string{"", variantLayers} {
			rec, err := x.export(ctx, acct, img, variant)
			if err != nil {
				t.Fatal(err)
			}
			if id == base {
				for _, d := range rec.blobs() {
					kept[d] = true
				}
			} else {
				recs = append(recs, rec)
			}
		}
	}
	var wantBlobs []string
	var wantBytes int64
	seen := map[string]bool{}
	for _, rec := range recs {
		for _, d := range rec.blobs() {
			if kept[d] || seen[d] {
				continue
			}
			seen[d] = true
			fi, err := os.Stat(x.blobPath(d))
			if err != nil {
				t.Fatal(err)
			}
			wantBlobs = append(wantBlobs, d)
			wantBytes += fi.Size()
		}
	}
	if len(wantBlobs) < 4 {
		t.Fatalf("the child's own blobs: %d, want its two manifests, configs and its own layers", len(wantBlobs))
	}
	fc.Advance(2 * time.Hour)
	dry, err := e.GC(ctx, engine.GCOptions{DryRun: true})
	if err != nil || len(dry.Images) != 1 || dry.Images[0].UUID != child {
		t.Fatalf("dry GC = %+v, %v; want the child to go", dry, err)
	}
	if dry.ExportBlobs != len(wantBlobs) || dry.ExportBytes != wantBytes {
		t.Errorf("dry GC: export blobs %d of %d bytes, want %d of %d bytes", dry.ExportBlobs, dry.ExportBytes, len(wantBlobs), wantBytes)
	}
	rep, err := e.GC(ctx, engine.GCOptions{})
	if err != nil || len(rep.Images) != 1 {
		t.Fatalf("GC = %+v, %v", rep, err)
	}
	if rep.ExportBlobs != dry.ExportBlobs || rep.ExportBytes != dry.ExportBytes {
		t.Errorf("GC: export blobs %d of %d bytes, want what the dry run said: %d of %d", rep.ExportBlobs, rep.ExportBytes, dry.ExportBlobs, dry.ExportBytes)
	}
	for _, d := range wantBlobs {
		if _, err := os.Stat(x.blobPath(d)); !os.IsNotExist(err) {
			t.Errorf("blob %s of the expired child: %v, want it gone", d, err)
		}
	}
	for d := range kept {
		if _, err := os.Stat(x.blobPath(d)); err != nil {
			t.Errorf("blob %s of the kept base: %v", d, err)
		}
	}
}

// expiringChild starts an engine on a fake clock with a one-hour image
// TTL, the export registry, a tagged busybox base and an untagged child
// of it.
func expiringChild(t *testing.T) (e *engine.Engine, fc *clockwork.FakeClock, x *Exporter, base, child string) {
	t.Helper()
	testutil.RequiresRoot(t)
	ctx := context.Background()
	fc = clockwork.NewFakeClock()
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
	base, err = im.ImportArchive(ctx, e, acct, bytes.NewReader(busyboxTar(t)), int64(len(busyboxTar(t))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetTag(ctx, acct, base, "base"); err != nil {
		t.Fatal(err)
	}
	child, err = e.NewImage(ctx, acct, base, func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "child"), []byte("only in the child"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return e, fc, ExportHandler(e, nil), base, child
}
