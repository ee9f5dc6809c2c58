package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/runtime"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/jonboulle/clockwork"
)

// startCat starts a long-running disposable instance (cat, stdin open)
// on base and returns once it runs.
func startCat(t *testing.T, e *Engine, base string) string {
	t.Helper()
	op, _, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: "echo up; cat", Shell: ptr(true), Image: base, Disposable: ptr(true),
		Stdin: &Stdin{Value: "", Close: ptr(false)}})
	if err != nil {
		t.Fatal(err)
	}
	waitStdout(t, e, op, "up\n")
	return op
}

// diskOf is account acct's line of arbor df.
func diskOf(t *testing.T, e *Engine) AccountDisk {
	t.Helper()
	rep, err := e.DiskUsage(context.Background(), acct)
	if err != nil || len(rep.Accounts) != 1 {
		t.Fatalf("DiskUsage: %+v %v", rep, err)
	}
	return rep.Accounts[0]
}

// TestCheckpointImage keeps a shell's memory checkpoint with an image,
// lets the shell end, then restores the checkpoint twice: each copy goes
// on from the shell's state (its counter in memory, its file) and they
// diverge. The checkpoint's size shows on the image and in df, counts in
// the quota's usage, and is freed when the image is deleted.
func TestCheckpointImage(t *testing.T) {
	e, base := newEngine(t, "runsc")
	ctx := context.Background()
	parent := startCounter(t, e, base)
	before := diskOf(t, e)
	begin := time.Now()
	res, err := e.CheckpointImage(ctx, acct, parent)
	if err != nil {
		t.Fatalf("CheckpointImage: %v", err)
	}
	if res.Image == "" || res.Image == base || res.CheckpointBytes <= 0 {
		t.Fatalf("CheckpointImage = %+v, want a new image and the checkpoint's size", res)
	}
	t.Logf("checkpoint of the shell: %d bytes in %v", res.CheckpointBytes, time.Since(begin))
	im, err := e.Image(ctx, acct, res.Image)
	if err != nil || im.CheckpointBytes != res.CheckpointBytes || im.Parent != base {
		t.Fatalf("image %+v (%v), want checkpoint_bytes %d and parent %s", im, err, res.CheckpointBytes, base)
	}
	after := diskOf(t, e)
	if after.CheckpointBytes != res.CheckpointBytes || after.QuotaBytes < before.QuotaBytes+res.CheckpointBytes {
		t.Fatalf("df after the checkpoint %+v, before %+v: want checkpoint_bytes %d counted in quota_bytes", after, before, res.CheckpointBytes)
	}

	// The shell goes on and ends; the checkpoint stays.
	say(t, e, parent, "b", true)
	waitStdout(t, e, parent, "log:\na 1\nb 2\n")
	if o := waitOp(t, e, parent); o.Status != apitypes.StatusSuccess {
		t.Fatalf("parent: %s %s", o.Status, o.Error)
	}

	// A checkpoint from another runsc build or platform is refused.
	cj := filepath.Join(e.checkpointDir(res.Image), "checkpoint.json")
	orig, err := os.ReadFile(cj)
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := readCheckpoint(e.checkpointDir(res.Image))
	if err := os.WriteFile(cj, []byte(strings.Replace(string(orig), sc.Format, "runsc version release-20250101.0, --platform=kvm", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = e.RestoreImage(ctx, acct, res.Image, 1)
	if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "--platform=kvm") || !strings.Contains(err.Error(), "same runsc build") {
		t.Fatalf("restore of a checkpoint from another runsc: %v, want a conflict naming both", err)
	}
	if err := os.WriteFile(cj, orig, 0o600); err != nil {
		t.Fatal(err)
	}

	// Restored twice, one after the other: both go on from "a 1".
	want := map[string][]string{"x": {"log:\na 1\nx 2\n"}, "y": {"y", "log:\na 1\ny 2\ny 3\n"}}
	for _, word := range []string{"x", "y"} {
		begin := time.Now()
		ops, err := e.RestoreImage(ctx, acct, res.Image, 0)
		if err != nil || len(ops) != 1 {
			t.Fatalf("RestoreImage: %v %v", ops, err)
		}
		op := ops[0]
		if word == "y" {
			say(t, e, op, word, false)
		}
		say(t, e, op, word, true)
		waitStdout(t, e, op, want[word][len(want[word])-1])
		t.Logf("restore %s: answered after %v", word, time.Since(begin))
		o := waitOp(t, e, op)
		if o.Status != apitypes.StatusSuccess {
			t.Fatalf("restored copy %s: %s %s", op, o.Status, o.Error)
		}
		l, err := e.Lineage(ctx, acct, o.ResultImageUUID)
		if err != nil || len(l.Ancestors) == 0 || l.Ancestors[0].UUID != res.Image {
			t.Errorf("restored copy's result lineage %+v (%v), want the checkpoint's image as parent", l, err)
		}
	}

	// Deleting the image frees the checkpoint.
	if err := e.DeleteImage(ctx, acct, res.Image); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.checkpointDir(res.Image)); !os.IsNotExist(err) {
		t.Errorf("checkpoint directory after the image's deletion: %v", err)
	}
	gone := diskOf(t, e)
	if gone.CheckpointBytes != 0 || gone.QuotaBytes > after.QuotaBytes-res.CheckpointBytes+2*after.QuotaBytes/100 {
		t.Errorf("df after deleting the image %+v, with the checkpoint %+v: want its %d bytes freed", gone, after, res.CheckpointBytes)
	}
	if _, err := e.RestoreImage(ctx, acct, res.Image, 1); !errdefs.IsNotFound(err) {
		t.Errorf("restore of the deleted image: %v, want not found", err)
	}
}

// TestRestoreNeedsCheckpoint: an image without a checkpoint, and an
// instance of a runtime other than runsc, answer a clear 4xx.
func TestRestoreNeedsCheckpoint(t *testing.T) {
	e, base := newEngine(t, "runc")
	ctx := context.Background()
	_, err := e.RestoreImage(ctx, acct, base, 1)
	if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "no memory checkpoint") {
		t.Errorf("restore of a plain image: %v, want a conflict saying it has no checkpoint", err)
	}
	if _, err := e.RestoreImage(ctx, acct, base, MaxForks+1); !errdefs.IsInvalidArgument(err) {
		t.Errorf("restore into %d copies: %v, want invalid argument", MaxForks+1, err)
	}
	op := startCat(t, e, base)
	_, err = e.CheckpointImage(ctx, acct, op)
	if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "runsc") {
		t.Errorf("checkpoint of a runc instance: %v, want a conflict naming runsc", err)
	}
	say(t, e, op, "", true)
	waitOp(t, e, op)
}

// TestCheckpointQuota: a checkpoint that would take the account past its
// storage quota is refused and leaves nothing behind.
func TestCheckpointQuota(t *testing.T) {
	e, base := newEngine(t, "runsc")
	ctx := context.Background()
	op := startCat(t, e, base)
	stored, err := e.storedBytes(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg.MaxStorageBytes = stored + 64<<10 // less than any runsc checkpoint
	_, err = e.CheckpointImage(ctx, acct, op)
	if !errors.Is(err, errdefs.ErrForbidden) || !strings.Contains(err.Error(), "quota") {
		t.Fatalf("checkpoint past the quota: %v, want resource exhausted naming the quota", err)
	}
	if ims, _ := e.ListImages(ctx, ImageFilter{Account: acct}); len(ims) != 1 {
		t.Errorf("%d images after a refused checkpoint, want only the base", len(ims))
	}
	if ents, _ := os.ReadDir(e.checkpointsDir()); len(ents) != 0 {
		t.Errorf("checkpoints left: %v", ents)
	}
	say(t, e, op, "", true)
	waitOp(t, e, op)
}

// crashInCheckpoint (TestKill9Recovery's "checkpoint" modes) dies while
// keeping a checkpoint: once written (mode "checkpoint"), or once renamed
// into place with its image's layer but not its row ("checkpoint-commit").
func crashInCheckpoint(ctx context.Context, e *Engine, mode string) {
	op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "echo data > /root/kept; cat", Image: os.Getenv("ARBOR_CRASH_IMAGE"), Shell: ptr(true),
		Stdin: &Stdin{Value: "", Close: ptr(false)}})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("op", op)
	hang := func() {
		fmt.Println("checkpointing")
		select {}
	}
	if mode == "checkpoint" {
		testHookCheckpointSaved = hang
	} else {
		testHookAfterRename = hang
	}
	if _, err := e.CheckpointImage(ctx, acct, op); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	select {}
}

// TestCheckpointRetention: with a checkpoint TTL, a pass after it removes
// the checkpoint and keeps the image; an image that retention expires
// takes its checkpoint with it.
func TestCheckpointRetention(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, mode := range []string{"checkpoint-ttl", "image-ttl"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			fc := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC))
			cfg := Config{Home: testutil.Home(t), Runtime: "runsc", InitBinary: staticInit(t), WarmPerImage: -1, Clock: fc, GCInterval: -1}
			if mode == "checkpoint-ttl" {
				cfg.CheckpointTTL = time.Hour
			} else {
				cfg.Retention.ImageTTL = time.Hour
			}
			e, err := New(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			base := busybox(t, e)
			op := startCat(t, e, base)
			res, err := e.CheckpointImage(ctx, acct, op)
			if err != nil {
				t.Fatal(err)
			}
			say(t, e, op, "", true)
			waitOp(t, e, op)
			if rep, err := e.GC(ctx, GCOptions{}); err != nil || rep.Checkpoints != 0 || len(rep.Images) != 0 {
				t.Fatalf("GC before the TTL: %+v %v, want nothing removed", rep, err)
			}
			fc.Advance(2 * time.Hour)
			if dry, err := e.GC(ctx, GCOptions{DryRun: true}); err != nil || dry.Checkpoints != 1 || dry.CheckpointBytes != res.CheckpointBytes {
				t.Errorf("dry run after the TTL: %+v %v, want the checkpoint's %d bytes once", dry, err, res.CheckpointBytes)
			}
			rep, err := e.GC(ctx, GCOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(e.checkpointDir(res.Image)); !os.IsNotExist(err) {
				t.Errorf("checkpoint directory after the pass: %v", err)
			}
			if d := diskOf(t, e); d.CheckpointBytes != 0 {
				t.Errorf("df after the pass: %+v, want no checkpoint bytes", d)
			}
			if rep.Checkpoints != 1 || rep.CheckpointBytes != res.CheckpointBytes {
				t.Errorf("GC after the TTL: %+v, want the checkpoint's %d bytes", rep, res.CheckpointBytes)
			}
			im, err := e.Image(ctx, acct, res.Image)
			if mode == "checkpoint-ttl" {
				if err != nil || im.CheckpointBytes != 0 {
					t.Errorf("image after its checkpoint expired: %+v %v, want it kept without a checkpoint", im, err)
				}
				if _, err := e.RestoreImage(ctx, acct, res.Image, 1); !errdefs.IsConflict(err) {
					t.Errorf("restore after the checkpoint expired: %v, want a conflict", err)
				}
			} else if !errdefs.IsNotFound(err) {
				t.Errorf("image after the image TTL: %+v %v, want it expired", im, err)
			}
		})
	}
}

// TestParseCheckpointTTL: --checkpoint-ttl takes the retention TTLs (days,
// weeks, Go durations, off) and refuses anything else naming the flag.
func TestParseCheckpointTTL(t *testing.T) {
	for in, want := range map[string]time.Duration{"3d": 72 * time.Hour, "2w": 14 * 24 * time.Hour, "90m": 90 * time.Minute, "off": 0} {
		if d, err := ParseCheckpointTTL(in); err != nil || d != want {
			t.Errorf("--checkpoint-ttl %s: %v %v, want %v", in, d, err, want)
		}
	}
	if _, err := ParseCheckpointTTL("soon"); err == nil || !strings.Contains(err.Error(), "--checkpoint-ttl") {
		t.Errorf("--checkpoint-ttl soon: %v, want an error naming the flag", err)
	}
}

// TestRestoreNeedsRunsc: a server without runsc, here one with runc alone
// on the home where a checkpoint was kept, refuses to restore it with a
// clear 4xx (409) naming runsc.
func TestRestoreNeedsRunsc(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	home := testutil.Home(t)
	e, err := New(ctx, Config{Home: home, Runtime: "runsc", InitBinary: staticInit(t), WarmPerImage: -1})
	if err != nil {
		t.Fatal(err)
	}
	base := busybox(t, e)
	op := startCat(t, e, base)
	res, err := e.CheckpointImage(ctx, acct, op)
	say(t, e, op, "", true)
	waitOp(t, e, op)
	e.Close()
	if err != nil {
		t.Fatal(err)
	}
	runc, err := runtime.NewOCI("runc", "", filepath.Join(home, "runtime", "runc"))
	if err != nil {
		t.Fatal(err)
	}
	e2, err := New(ctx, Config{Home: home, Runtime: "runc", Runtimes: map[string]runtime.Runtime{"runc": runc}, WarmPerImage: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if im, err := e2.Image(ctx, acct, res.Image); err != nil || im.CheckpointBytes != res.CheckpointBytes {
		t.Fatalf("the checkpoint's image on the runc-only server: %+v %v, want it with its checkpoint", im, err)
	}
	_, err = e2.RestoreImage(ctx, acct, res.Image, 1)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "no runsc runtime") {
		t.Errorf("restore on a server without runsc: %v, want a failed precondition (409) naming runsc", err)
	}
}
