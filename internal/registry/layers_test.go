package registry

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil"
)

// layerDirs counts the layer directories of e's store and their bytes.
func layerDirs(t *testing.T, e *engine.Engine) (int, int64) {
	t.Helper()
	n, b, err := e.LayerStats()
	if err != nil {
		t.Fatal(err)
	}
	return n, b
}

// hiddenRows returns the hidden import rows of account.
func hiddenRows(t *testing.T, e *engine.Engine, account string) []store.Image {
	t.Helper()
	all, err := e.Store().AllImages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Image
	for _, im := range all {
		if im.Hidden && im.Account == account {
			out = append(out, im)
		}
	}
	return out
}

func importAs(t *testing.T, im *Importer, e *engine.Engine, account, url string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return im.ImportRegistry(ctx, e, account, engine.ImportRequest{Registry: oplog.ImportSource{URL: url}})
}

// TestImportSharedLayers: two images with the same two base layers store
// those layers once, for one account and across accounts; deleting one
// image keeps the other whole; deleting both lets the collector remove
// every layer.
func TestImportSharedLayers(t *testing.T) {
	// No warm sandboxes: they would pin b's layers after its run.
	e, im := newEngineAt(t, testutil.Home(t), engine.Config{WarmPerImage: -1})
	reg := newRegistry(t)
	base := layer(t, busyboxTar(t))
	libs := layerOf(t, dir("lib"), file("lib/shared.txt", "shared by both\n"), dir("opq"), file("opq/old", "old"))
	imgA := image(t, "amd64", base, libs, layerOf(t, file("app-a.txt", "a\n")))
	imgB := image(t, "amd64", base, libs, layerOf(t, file("app-b.txt", "b\n"), file("etc/.wh.hostname", ""), file("opq/.wh..wh..opq", ""), file("opq/new", "new")))
	reg.push(t, "test/a:v1", imgA)
	reg.push(t, "test/b:v1", imgB)

	oa := importOp(t, e, reg.host+"/test/a:v1", nil, "")
	if oa.Status != apitypes.StatusSuccess {
		t.Fatalf("import a: %s %s", oa.Status, oa.Error)
	}
	a := oa.ResultImageUUID
	nA, bytesA := layerDirs(t, e)
	if nA != 3 {
		t.Fatalf("%d layer directories after importing a three-layer image, want 3", nA)
	}

	ob := importOp(t, e, reg.host+"/test/b:v1", nil, "")
	if ob.Status != apitypes.StatusSuccess {
		t.Fatalf("import b: %s %s", ob.Status, ob.Error)
	}
	b := ob.ResultImageUUID
	nB, bytesB := layerDirs(t, e)
	if nB != 4 {
		t.Errorf("%d layer directories after importing b, want 4: its two base layers are a's", nB)
	}
	// Layer sizes are disk use (blocks plus 4 KiB per inode): b's top layer
	// of a few small files is tens of KiB, its shared base layers megabytes.
	if grew := bytesB - bytesA; grew <= 0 || grew > 64<<10 {
		t.Errorf("importing b added %d bytes to the layer store, want only its small top layer", grew)
	}
	// The operation says what it shared.
	var shared int
	var summary string
	for _, p := range progressEvents(t, e, ob.UUID) {
		if p.Phase == "shared" {
			shared++
		}
		if p.Phase == "stored" {
			summary = p.Message
		}
	}
	if shared != 2 || !strings.HasPrefix(summary, "1 of 3 layers extracted, 2 shared") {
		t.Errorf("import b: %d shared-layer events, summary %q; want 2 and \"1 of 3 layers extracted, 2 shared…\"", shared, summary)
	}

	// Both images are whole; b's whiteout and opaque directory apply.
	for id, want := range map[string]map[string]string{
		a: {"/lib/shared.txt": "shared by both\n", "/app-a.txt": "a\n", "/opq/old": "old", "/etc/hostname": "?"},
		b: {"/lib/shared.txt": "shared by both\n", "/app-b.txt": "b\n", "/opq/new": "new", "/opq/old": "", "/etc/hostname": "", "/app-a.txt": ""},
	} {
		for p, w := range want {
			got, err := readImageFile(t, e, id, p)
			switch {
			case w == "" && err == nil:
				t.Errorf("image %s: %s exists, want it hidden", id, p)
			case w == "?" && err != nil:
				t.Errorf("image %s: %s: %v", id, p, err)
			case w != "" && w != "?" && (err != nil || got != w):
				t.Errorf("image %s: %s = %q, %v, want %q", id, p, got, err, w)
			}
		}
	}

	// The base layers are two hidden rows, shared by a and b, which no
	// API path lists, resolves, tags or deletes.
	hidden := hiddenRows(t, e, acct)
	if len(hidden) != 2 {
		t.Fatalf("%d hidden rows, want 2 (one per shared base layer)", len(hidden))
	}
	if n := imageCount(t, e); n != 2 {
		t.Errorf("%d images listed, want 2", n)
	}
	ctx := context.Background()
	for _, h := range hidden {
		if _, err := e.Image(ctx, acct, h.UUID); !errdefs.IsNotFound(err) {
			t.Errorf("Image(hidden %s) = %v, want not found", h.UUID, err)
		}
		if err := e.DeleteImage(ctx, acct, h.UUID); !errdefs.IsNotFound(err) {
			t.Errorf("DeleteImage(hidden %s) = %v, want not found", h.UUID, err)
		}
		if _, err := e.SetTag(ctx, acct, h.UUID, "x"); !errdefs.IsNotFound(err) {
			t.Errorf("SetTag(hidden %s) = %v, want not found", h.UUID, err)
		}
	}
	for _, id := range []string{a, b} {
		got, err := e.Image(ctx, acct, id)
		if err != nil || got.Parent != "" || got.Depth != 3 {
			t.Errorf("image %s: parent %q depth %d (%v), want a base image of depth 3", id, got.Parent, got.Depth, err)
		}
	}

	// Another account importing b shares every layer once it proves it
	// has the content (the blobs are read, not extracted).
	ob2, err := importAs(t, im, e, "other", reg.host+"/test/b:v1")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := layerDirs(t, e); n != 4 {
		t.Errorf("%d layer directories after another account imported b, want still 4", n)
	}

	// Deleting a keeps b whole and runnable; a's own layer goes.
	if err := e.DeleteImage(ctx, acct, a); err != nil {
		t.Fatal(err)
	}
	if n, _ := layerDirs(t, e); n != 3 {
		t.Errorf("%d layer directories after deleting a, want 3", n)
	}
	if got, err := readImageFile(t, e, b, "/lib/shared.txt"); err != nil || got != "shared by both\n" {
		t.Errorf("b after deleting a: %q, %v", got, err)
	}
	if out := runShell(t, e, b, "cat /app-b.txt /lib/shared.txt; ls /opq"); out != "b\nshared by both\nnew\n" {
		t.Errorf("run on b after deleting a = %q", out)
	}

	// Deleting b leaves the other account's copy; then nothing is left.
	if err := e.DeleteImage(ctx, acct, b); err != nil {
		t.Fatal(err)
	}
	if n, _ := layerDirs(t, e); n != 3 {
		t.Errorf("%d layer directories while another account still has b, want 3", n)
	}
	if got, err := readImageFileAs(t, e, "other", ob2, "/app-b.txt"); err != nil || got != "b\n" {
		t.Errorf("the other account's b: %q, %v", got, err)
	}
	if err := e.DeleteImage(ctx, "other", ob2); err != nil {
		t.Fatal(err)
	}
	// The run on b releases its lease on b (its rows and layers) just
	// after it reports.
	for i := 0; i < 50; i++ {
		// Layers go first, then the rows: wait for both.
		if n, _ := layerDirs(t, e); n == 0 && len(hiddenRows(t, e, acct)) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond) // no event says the pin has ended: poll
		if _, err := e.CollectGarbage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if h := hiddenRows(t, e, acct); len(h) != 0 {
		t.Errorf("%d hidden rows left after deleting every image of the account", len(h))
	}
	if n, bytes := layerDirs(t, e); n != 0 || bytes != 0 {
		t.Errorf("%d layer directories (%d bytes) after deleting every image, want none", n, bytes)
	}
	all, _ := e.Store().AllImages(ctx)
	if len(all) != 0 {
		t.Errorf("%d image rows left after deleting every image, want 0", len(all))
	}
}

func readImageFileAs(t *testing.T, e *engine.Engine, account, image, path string) (string, error) {
	t.Helper()
	fsys, release, err := e.ImageFS(context.Background(), account, image)
	if err != nil {
		return "", err
	}
	defer release()
	f, _, err := fsys.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b := make([]byte, 1<<16)
	n, _ := f.Read(b)
	return string(b[:n]), nil
}

// TestImportSharedLayersFailureAndRecovery: a failed import that shares
// layers stores nothing and shows nothing; after a crash, recovery removes
// a stored layer and hidden rows no image uses and keeps the shared ones.
func TestImportSharedLayersFailureAndRecovery(t *testing.T) {
	home := testutil.Home(t)
	e, im := newEngineAt(t, home, engine.Config{})
	reg := newRegistry(t)
	base := layer(t, busyboxTar(t))
	good := image(t, "amd64", base, layerOf(t, file("good.txt", "good\n")))
	bad := layerOf(t, file("bad.txt", strings.Repeat("corrupt me ", 1000)))
	badDigest, err := bad.Digest()
	if err != nil {
		t.Fatal(err)
	}
	reg.push(t, "test/good:v1", good)
	reg.push(t, "test/bad:v1", image(t, "amd64", base, layerOf(t, file("new.txt", "a new layer before the bad one\n")), bad))
	corruptHost := reg.serve(t, corrupting(badDigest))

	id, err := importAs(t, im, e, acct, reg.host+"/test/good:v1")
	if err != nil {
		t.Fatal(err)
	}
	n0, b0 := layerDirs(t, e)
	if _, err := importAs(t, im, e, acct, corruptHost+"/test/bad:v1"); err == nil || !strings.Contains(err.Error(), "does not match its digest") {
		t.Fatalf("import with a corrupt third layer: %v, want a digest error", err)
	}
	if n, b := layerDirs(t, e); n != n0 || b != b0 {
		t.Errorf("after a failed import: %d layer directories (%d bytes), want %d (%d): its new layer must go", n, b, n0, b0)
	}
	if n := imageCount(t, e); n != 1 {
		t.Errorf("%d images after a failed import, want 1", n)
	}
	if h := hiddenRows(t, e, acct); len(h) != 1 {
		t.Errorf("%d hidden rows after a failed import, want the good image's 1", len(h))
	}
	assertNoStaging(t, e)

	// A crash between storing a layer and committing the image, and a
	// hidden row that lost its image, then a restart.
	orphanLayer := filepath.Join(home, "layers", "sha256-"+strings.Repeat("ab", 32))
	if err := os.MkdirAll(filepath.Join(orphanLayer, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	shared := hiddenRows(t, e, acct)[0]
	orphanRow := store.Image{UUID: "00000000-0000-4000-8000-000000000001", Account: acct, Base: shared.UUID, Layer: shared.Layer,
		Depth: 2, CreatedAt: time.Now(), Hidden: true, Chain: "sha256:" + strings.Repeat("cd", 32)}
	if err := e.Store().InsertImage(context.Background(), orphanRow); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e, _ = newEngineAt(t, home, engine.Config{})
	if _, err := os.Stat(orphanLayer); !os.IsNotExist(err) {
		t.Errorf("recovery kept the orphan layer: %v", err)
	}
	if h := hiddenRows(t, e, acct); len(h) != 1 || h[0].UUID != shared.UUID {
		t.Errorf("hidden rows after recovery: %+v, want only %s", h, shared.UUID)
	}
	if n, _ := layerDirs(t, e); n != n0 {
		t.Errorf("%d layer directories after recovery, want %d", n, n0)
	}
	if got, err := readImageFile(t, e, id, "/good.txt"); err != nil || got != "good\n" {
		t.Errorf("image after recovery: %q, %v", got, err)
	}
	if _, err := readImageFile(t, e, id, "/bin/sh"); err != nil {
		t.Errorf("shared base layer after recovery: %v", err)
	}
}

// newEngineAt is newEngine on a given home, so a test can restart it.
func newEngineAt(t *testing.T, home string, cfg engine.Config) (*engine.Engine, *Importer) {
	t.Helper()
	testutil.RequiresRoot(t)
	cfg.Home, cfg.Runtime = home, "runc"
	e, err := engine.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	im, err := Install(e, loopback(Options{}))
	if err != nil {
		t.Fatal(err)
	}
	return e, im
}
