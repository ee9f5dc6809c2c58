package engine

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/testutil"
)

// inSmallFS runs the calling test again in a child process of its own
// mount namespace, where a tmpfs of size bytes is mounted on a fresh
// directory; body runs in the child with that directory. The mount dies
// with the child: the host's filesystems are never touched.
func inSmallFS(t *testing.T, size string, body func(t *testing.T, dir string)) {
	t.Helper()
	testutil.RequiresRoot(t)
	if dir := os.Getenv("ARBOR_TEST_SMALLFS"); dir != "" {
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0711"); err != nil {
			t.Fatalf("mount a tmpfs of %s on %s: %v", size, dir, err)
		}
		body(t, dir)
		return
	}
	dir := testutil.Home(t)
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "ARBOR_TEST_SMALLFS="+dir)
	// Go makes / private in the new namespace before exec: no mount
	// propagates back to the host.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	t.Logf("child in its own mount namespace:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatal("the child ran no test")
	}
}

// TestDiskReserve: on a nearly full layer store, runs that would save an
// image and imports are refused with a 507-class error naming the reserve
// and the fix, disposable runs still run; a run that fills the disk fails
// with a reason, saves nothing, and the images made before read back and
// run.
func TestDiskReserve(t *testing.T) {
	inSmallFS(t, "48m", func(t *testing.T, home string) {
		ctx := context.Background()
		e, err := New(ctx, Config{Home: home, Runtime: "runc", DiskReserveBytes: 16 << 20, WarmPerImage: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		base := busybox(t, e)
		o, _ := run(t, e, base, "echo kept > /kept")
		if o.Status != apitypes.StatusSuccess {
			t.Fatalf("first run: %s %s", o.Status, o.Error)
		}
		kept := o.ResultImageUUID

		// A run that writes until the disk is full.
		o = spawnWait(t, e, SpawnRequest{Image: kept, Command: "dd if=/dev/zero of=/big bs=1M count=100; sync; echo done"})
		if o.Status != apitypes.StatusFailed || !strings.Contains(o.Error, "filled up") || !strings.Contains(o.Error, "nothing was saved") {
			t.Fatalf("disk-filling run: %s %q, want FAILED saying the filesystem filled up and nothing was saved", o.Status, o.Error)
		}
		if o.ResultImageUUID != "" {
			t.Fatalf("disk-filling run saved image %s", o.ResultImageUUID)
		}
		if o, m := run(t, e, kept, "cat /kept", disposable); o.Status != apitypes.StatusSuccess || string(stdout(t, m)) != "kept\n" {
			t.Fatalf("earlier image after the disk filled: %s %s, read %q", o.Status, o.Error, stdout(t, m))
		}
		if o, _ := run(t, e, kept, "cat /kept > /again"); o.Status != apitypes.StatusSuccess {
			t.Fatalf("run after the disk filled and was freed: %s %s", o.Status, o.Error)
		}

		// Uploaded before the disk fills: uploads are refused under the
		// reserve too (TestUploadDiskReserve).
		f, err := e.PutFile(ctx, acct, strings.NewReader("x"), 1<<10)
		if err != nil {
			t.Fatal(err)
		}
		// Fill the disk from outside to under the reserve: admission refuses.
		avail, _, err := e.diskSpace()
		if err != nil {
			t.Fatal(err)
		}
		filler := filepath.Join(home, "filler")
		if err := os.WriteFile(filler, make([]byte, avail-8<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		sh := true
		_, _, err = e.Spawn(ctx, acct, SpawnRequest{Image: kept, Command: "true", Shell: &sh})
		if !errors.Is(err, errdefs.ErrInsufficientStorage) || !strings.Contains(err.Error(), "--disk-reserve") || !strings.Contains(err.Error(), "arbor gc") {
			t.Fatalf("run on a nearly full disk: %v, want an insufficient-storage error naming --disk-reserve and the fix", err)
		}
		if _, err := e.Import(ctx, acct, ImportRequest{Registry: oplog.ImportSource{URL: UploadScheme + f.UUID}}); !errors.Is(err, errdefs.ErrInsufficientStorage) {
			t.Fatalf("import on a nearly full disk: %v, want insufficient storage", err)
		}
		if o, _ := run(t, e, kept, "cat /kept", disposable); o.Status != apitypes.StatusSuccess {
			t.Fatalf("disposable run on a nearly full disk: %s %s", o.Status, o.Error)
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		if o, _ := run(t, e, kept, "echo more > /more"); o.Status != apitypes.StatusSuccess {
			t.Fatalf("run once space is back: %s %s", o.Status, o.Error)
		}
	})
}
