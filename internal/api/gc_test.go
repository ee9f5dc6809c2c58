package api_test

import (
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/jonboulle/clockwork"
)

// TestGCAndDiskUsage: POST /v1/gc?dry_run=1 reports the untagged image
// past its TTL and the bytes that would come back, the real POST removes
// exactly that; GET /v1/df counts the account's images and disk; other
// accounts cannot collect or see the default account's.
func TestGCAndDiskUsage(t *testing.T) {
	fc := clockwork.NewFakeClock()
	d := startDaemon(t, engine.Config{Clock: fc, Retention: engine.Retention{ImageTTL: time.Hour}, GCInterval: -1}, api.Options{})
	ctx := ctxT(t)
	op := d.run(t, d.c, d.base, "echo x > /x")
	child := deref(op.ResultImageUUID)
	if child == "" {
		t.Fatal("the run made no image")
	}
	df, err := d.c.DiskUsage(ctx, false)
	if err != nil || len(df.Accounts) != 1 || df.Accounts[0].Images != 2 || df.Accounts[0].TaggedImages != 1 || df.Accounts[0].DiskBytes == 0 ||
		df.Accounts[0].ImageTTLSeconds != 3600 {
		t.Fatalf("df = %+v, %v; want 2 images (1 tagged) with their bytes and the 1 h TTL", df, err)
	}
	singleNode(t, "a cluster's layers are in the shared bucket, collected under its rules (database holds, a grace period on the wall clock, which the fake clock does not move): a deleted image's layer stays while its row names it, so the first pass removes none (the dry run the same, TestClusterGCDryRunMatches)")
	fc.Advance(2 * time.Hour)
	dry, err := d.c.GC(ctx, true, "")
	if err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || len(dry.Images) != 1 || dry.Images[0].UUID != child || dry.Layers != 1 || dry.LayerBytes <= 0 || dry.Bytes != dry.LayerBytes+dry.ExportBytes {
		t.Fatalf("dry run = %+v, want the run's untagged image %s, its layer and bytes", dry, child)
	}
	if _, err := d.c.Image(ctx, child); err != nil {
		t.Fatalf("the dry run removed the image: %v", err)
	}
	got, err := d.c.GC(ctx, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if got.DryRun || len(got.Images) != 1 || got.Images[0] != dry.Images[0] || got.Layers != dry.Layers || got.Bytes != dry.Bytes {
		t.Fatalf("GC = %+v, want what the dry run reported: %+v", got, dry)
	}
	if _, err := d.c.Image(ctx, child); !client.IsNotFound(err) {
		t.Errorf("collected image: %v, want not found", err)
	}
	if _, err := d.c.Image(ctx, d.base); err != nil {
		t.Errorf("the tagged base after GC: %v", err)
	}
	other := d.otherClient(t, "gc")
	if _, err := other.GC(ctx, true, "default"); !client.IsForbidden(err) {
		t.Errorf("another account's GC of the default account: %v, want 403", err)
	}
	if _, err := other.DiskUsage(ctx, true); !client.IsForbidden(err) {
		t.Errorf("another account's df of every account: %v, want 403", err)
	}
	if mine, err := other.DiskUsage(ctx, false); err != nil || len(mine.Accounts) != 1 || mine.Accounts[0].Images != 0 {
		t.Errorf("another account's own df = %+v, %v", mine, err)
	}
}
