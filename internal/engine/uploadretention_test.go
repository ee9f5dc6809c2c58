package engine

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/jonboulle/clockwork"
)

// TestUploadRetention: an upload goes UploadTTL after its last use, where
// a run naming it is a use; its content goes with the last record naming
// it, another account's included; a dry run reports exactly what the pass
// removes; an expired file is uploaded again as ConTree's clients do.
func TestUploadRetention(t *testing.T) {
	ctx := context.Background()
	fc := clockwork.NewFakeClock()
	e := retentionEngine(t, fc, Retention{UploadTTL: 24 * time.Hour}, -1)
	base := busybox(t, e)
	put := func(account, content string) File {
		t.Helper()
		f, err := e.PutFile(ctx, account, strings.NewReader(content), 0)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	idle := put(acct, "never used again")
	used := put(acct, "named by a run")
	shared := put(acct, "uploaded by two accounts")
	fc.Advance(12 * time.Hour)
	o, m := run(t, e, base, "cat /in", func(r *SpawnRequest) {
		r.Files = map[string]oplog.FileSpec{"/in": {UUID: used.UUID}}
	})
	if o.Status != apitypes.StatusSuccess || stdout(t, m) != "named by a run" {
		t.Fatalf("run naming the upload: %s %s %q", o.Status, o.Error, stdout(t, m))
	}
	fc.Advance(8 * time.Hour)
	put("other", "uploaded by two accounts") // the other account's record of the shared content: 4 h old at the pass
	fc.Advance(5 * time.Hour)                // 25 h after the uploads, 13 h after the run

	dry, err := e.GC(ctx, GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	// idle and our record of shared go; only idle's content leaves the disk.
	if dry.Uploads != 2 || dry.UploadBytes != idle.Size {
		t.Fatalf("dry GC: %d uploads, %d bytes; want 2 uploads and the %d bytes of the one whose content nobody else names", dry.Uploads, dry.UploadBytes, idle.Size)
	}
	if _, err := os.Stat(e.blobPath(idle.SHA256)); err != nil {
		t.Fatalf("the dry run removed content: %v", err)
	}
	rep, err := e.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Uploads != dry.Uploads || rep.UploadBytes != dry.UploadBytes {
		t.Fatalf("GC: %d uploads, %d bytes; the dry run said %d, %d", rep.Uploads, rep.UploadBytes, dry.Uploads, dry.UploadBytes)
	}
	for _, f := range []File{idle, shared} {
		if _, err := e.File(ctx, acct, f.UUID); !errdefs.IsNotFound(err) {
			t.Errorf("expired upload %s: %v, want not found", f.UUID, err)
		}
	}
	if _, err := os.Stat(e.blobPath(idle.SHA256)); !os.IsNotExist(err) {
		t.Errorf("content of the expired upload: %v, want it gone", err)
	}
	if _, err := os.Stat(e.blobPath(shared.SHA256)); err != nil {
		t.Errorf("shared content another account still names: %v", err)
	}
	if _, err := e.File(ctx, "other", shared.SHA256); err != nil {
		t.Errorf("the other account's record: %v", err)
	}
	if _, err := e.File(ctx, acct, used.UUID); err != nil {
		t.Errorf("the upload a run named 13 h ago: %v", err)
	}
	// A run naming the expired file is refused; the client uploads it
	// again (its lookup by sha256 said 404) and runs.
	_, _, err = e.Spawn(ctx, acct, SpawnRequest{Image: base, Command: "cat /in", Shell: ptr(true),
		Files: map[string]oplog.FileSpec{"/in": {UUID: idle.UUID}}})
	if !errdefs.IsNotFound(err) {
		t.Fatalf("run naming an expired upload: %v, want not found", err)
	}
	again := put(acct, "never used again")
	o, m = run(t, e, base, "cat /in", func(r *SpawnRequest) {
		r.Files = map[string]oplog.FileSpec{"/in": {UUID: again.UUID}}
	})
	if o.Status != apitypes.StatusSuccess || stdout(t, m) != "never used again" {
		t.Fatalf("run on the re-uploaded file: %s %s %q", o.Status, o.Error, stdout(t, m))
	}
}

// TestUploadDefaultOutlivesClientCache: by default an upload the ConTree
// CLI used 89 days ago (it reuses a file's uuid for 90 days without asking
// the server) is still there, and a run naming it finds it.
func TestUploadDefaultOutlivesClientCache(t *testing.T) {
	ctx := context.Background()
	fc := clockwork.NewFakeClock()
	e := retentionEngine(t, fc, Retention{}, -1)
	f, err := e.PutFile(ctx, acct, strings.NewReader("cached by the CLI"), 0)
	if err != nil {
		t.Fatal(err)
	}
	fc.Advance(89 * 24 * time.Hour)
	if _, err := e.GC(ctx, GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.touchFiles(ctx, acct, []string{f.UUID}); err != nil {
		t.Fatalf("an upload used 89 days ago is gone by default: %v", err)
	}
}
