package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/testutil"
)

// importEngine starts an engine without a registry importer (uploads are
// imported by the engine itself) and uploads a small root filesystem.
func importEngine(t *testing.T, home string, log *slog.Logger) (*Engine, string) {
	t.Helper()
	testutil.RequiresRoot(t)
	e, err := New(context.Background(), Config{Home: home, Runtime: "runc", WarmPerImage: -1, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct{ name, body string }{{"etc/hostname", "imported\n"}, {"hello.txt", "hi\n"}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(f.body))
	}
	tw.Close()
	f, err := e.PutFile(context.Background(), acct, &buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	return e, f.UUID
}

func waitFinished(t *testing.T, e *Engine, op string) Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o, err := e.WaitOperation(ctx, acct, op)
	if err != nil {
		t.Fatalf("operation %s did not finish: %v", op, err)
	}
	return o
}

// TestImportFinishFailureEndsFailed makes the store refuse an import's
// SUCCESS (a trigger on the real database: a constraint violation). The
// image and the SUCCESS are one transaction, so neither lands: the import
// ends FAILED with the store's reason, no image is visible, its layer is
// gone, and the event log ends with the completion. (Before, the image was
// committed on its own and the final transaction's error discarded: the
// import stayed EXECUTING until a restart, its image visible.)
func TestImportFinishFailureEndsFailed(t *testing.T) {
	var logs bytes.Buffer
	e, file := importEngine(t, testutil.Home(t), slog.New(slog.NewTextHandler(&logs, nil)))
	ctx := context.Background()
	layersBefore := listDir(t, filepath.Join(e.Home(), "layers"))
	execSQL(t, filepath.Join(e.Home(), "arbor.db"), `CREATE TRIGGER refuse_import BEFORE UPDATE OF status ON operations
		WHEN NEW.status = 'SUCCESS' AND NEW.kind = 'image_import' BEGIN SELECT RAISE(ABORT, 'injected: no SUCCESS'); END`)
	tag := "refused"
	op, err := e.Import(ctx, acct, ImportRequest{Registry: oplog.ImportSource{URL: UploadScheme + file}, Tag: &tag})
	if err != nil {
		t.Fatal(err)
	}
	o := waitFinished(t, e, op)
	if o.Status != apitypes.StatusFailed || !strings.Contains(o.Error, "injected: no SUCCESS") || o.ResultImageUUID != "" || o.ResultTag != "" {
		t.Errorf("import: %s error %q result %q tag %q; want FAILED with the store's reason, no result", o.Status, o.Error, o.ResultImageUUID, o.ResultTag)
	}
	ims, err := e.ListImages(ctx, ImageFilter{Account: acct})
	if err != nil || len(ims) != 0 {
		t.Errorf("images visible after the refused import: %v %v", ims, err)
	}
	if _, err := e.st.ImageByTag(ctx, acct, tag); err == nil {
		t.Error("the tag of the refused import exists")
	}
	if got := listDir(t, filepath.Join(e.Home(), "layers")); strings.Join(got, ",") != strings.Join(layersBefore, ",") {
		t.Errorf("layers %v after the refused import, want %v", got, layersBefore)
	}
	evs, _ := e.st.Events(ctx, op, -1, 0)
	if len(evs) == 0 || evs[len(evs)-1].Type != apitypes.EventCompletion {
		t.Errorf("event log does not end with the completion: %+v", evs)
	}
	if !strings.Contains(logs.String(), "operation="+op) {
		t.Errorf("no log line names the operation:\n%s", logs.String())
	}

	// Without the injected failure the same import succeeds, image, tag
	// and SUCCESS together.
	execSQL(t, filepath.Join(e.Home(), "arbor.db"), `DROP TRIGGER refuse_import`)
	op, err = e.Import(ctx, acct, ImportRequest{Registry: oplog.ImportSource{URL: UploadScheme + file}, Tag: &tag})
	if err != nil {
		t.Fatal(err)
	}
	o = waitFinished(t, e, op)
	im, err := e.st.ImageByTag(ctx, acct, tag)
	if o.Status != apitypes.StatusSuccess || err != nil || im.UUID != o.ResultImageUUID || o.ResultTag != tag {
		t.Fatalf("import: %s %q result %q tag %q; tag on %q (%v)", o.Status, o.Error, o.ResultImageUUID, o.ResultTag, im.UUID, err)
	}
	if s, err := readFile(t, e, o.ResultImageUUID, "/hello.txt"); err != nil || s != "hi\n" {
		t.Errorf("imported image: %q %v", s, err)
	}
}

// TestImportStoreLostAtCommitRecovered closes the store under an import as
// it commits (the layer moved into place, the transaction not begun): the
// import cannot record anything, says so in the log, and stays in flight;
// the next start fails it with a reason, shows no image and collects the
// layer.
func TestImportStoreLostAtCommitRecovered(t *testing.T) {
	home := testutil.Home(t)
	var logs bytes.Buffer
	e, file := importEngine(t, home, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx := context.Background()
	layersBefore := listDir(t, filepath.Join(home, "layers"))
	reached, release := make(chan struct{}), make(chan struct{})
	testHookAfterRename = func() {
		close(reached)
		<-release
	}
	t.Cleanup(func() { testHookAfterRename = nil })
	op, err := e.Import(ctx, acct, ImportRequest{Registry: oplog.ImportSource{URL: UploadScheme + file}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the import never reached its commit")
	}
	e.st.Close()
	close(release)
	e.Close() // waits for the operation's goroutine
	if !strings.Contains(logs.String(), "operation left unfinished until restart") || !strings.Contains(logs.String(), "operation="+op) {
		t.Errorf("the lost outcome is not logged with the operation:\n%s", logs.String())
	}

	e2, err := New(ctx, Config{Home: home, Runtime: "runc", WarmPerImage: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	o, err := e2.Operation(ctx, acct, op)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != apitypes.StatusFailed || !strings.Contains(o.Error, "daemon restarted while the operation was executing") || o.ResultImageUUID != "" {
		t.Errorf("after restart: %s %q result %q, want FAILED/daemon restarted/none", o.Status, o.Error, o.ResultImageUUID)
	}
	evs, _ := e2.st.Events(ctx, op, -1, 0)
	if len(evs) == 0 || evs[len(evs)-1].Type != apitypes.EventCompletion {
		t.Errorf("event log does not end with the completion: %+v", evs)
	}
	if ims, _ := e2.ListImages(ctx, ImageFilter{Account: acct}); len(ims) != 0 {
		t.Errorf("%d images visible, want none", len(ims))
	}
	if got := listDir(t, filepath.Join(home, "layers")); strings.Join(got, ",") != strings.Join(layersBefore, ",") {
		t.Errorf("layers %v after recovery, want %v", got, layersBefore)
	}
}
