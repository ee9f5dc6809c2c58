package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/testutil"
)

// TestImportUploadDropsDeviceNodes: an uploaded root filesystem with
// device nodes imports (without a registry importer installed) with the
// nodes left out and an event that says so.
func TestImportUploadDropsDeviceNodes(t *testing.T) {
	testutil.RequiresRoot(t)
	e, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: "runc"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	ctx := context.Background()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []tar.Header{
		{Typeflag: tar.TypeDir, Name: "dev/", Mode: 0o755},
		{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Typeflag: tar.TypeChar, Name: "dev/console", Mode: 0o600, Devmajor: 5, Devminor: 1},
		{Typeflag: tar.TypeFifo, Name: "dev/initctl", Mode: 0o600},
	} {
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	f, err := e.PutFile(ctx, acct, &buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	op, err := e.Import(ctx, acct, ImportRequest{Registry: oplog.ImportSource{URL: UploadScheme + f.UUID}})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	o, err := e.WaitOperation(wctx, acct, op)
	if err != nil || o.Status != apitypes.StatusSuccess {
		t.Fatalf("import: %v %s %s", err, o.Status, o.Error)
	}
	fsys, release, err := e.ImageFS(ctx, acct, o.ResultImageUUID)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for _, p := range []string{"/dev/null", "/dev/console"} {
		if _, err := fsys.Stat(p); err == nil {
			t.Errorf("%s exists in the image", p)
		}
	}
	if _, err := fsys.Stat("/dev/initctl"); err != nil {
		t.Errorf("fifo: %v", err)
	}
	var said string
	err = e.FollowEvents(ctx, acct, op, FollowOptions{After: -1}, func(ev Event) error {
		var p apitypes.EventDataProgress
		if ev.Type == apitypes.EventProgress && json.Unmarshal(ev.Data, &p) == nil && p.Phase == "devices" {
			said = p.Message
		}
		return nil
	})
	if err != nil || !strings.Contains(said, "dropped 2 device node(s)") {
		t.Errorf("devices event %q, %v", said, err)
	}
}
