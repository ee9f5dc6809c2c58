package engine

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/testutil"
)

// spawnWait spawns req (shell on) and waits for it, whatever its status.
func spawnWait(t *testing.T, e *Engine, req SpawnRequest) Operation {
	t.Helper()
	req.Shell = ptr(true)
	op, _, err := e.Spawn(context.Background(), acct, req)
	if err != nil {
		t.Fatalf("Spawn(%q): %v", req.Command, err)
	}
	return waitOp(t, e, op)
}

func waitOp(t *testing.T, e *Engine, op string) Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o, err := e.WaitOperation(ctx, acct, op)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// sizeCapEvent returns op's size_cap event, failing when there is none.
func sizeCapEvent(t *testing.T, e *Engine, op string) apitypes.EventDataSizeCap {
	t.Helper()
	evs, err := e.st.Events(context.Background(), op, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
		if ev.Type == apitypes.EventSizeCap {
			var d apitypes.EventDataSizeCap
			if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
				t.Fatal(err)
			}
			return d
		}
	}
	t.Fatalf("no size_cap event in %v", types)
	return apitypes.EventDataSizeCap{}
}

func TestScanTreeCountsDisk(t *testing.T) {
	dir := t.TempDir()
	if u := scanTree(dir); u.bytes != 0 {
		t.Fatalf("empty dir uses %d bytes, want 0", u.bytes)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte{1}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := os.Link(big, filepath.Join(dir, "link"+string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	one := scanTree(dir).bytes
	if one < 1<<20 || one > 1<<20+64<<10 {
		t.Errorf("1 MiB file with 10 extra hard links counts %d bytes, want about 1 MiB (links once)", one)
	}
	// A sparse file costs its blocks, not its length.
	f, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	u := scanTree(dir)
	if u.bytes-one > 64<<10 {
		t.Errorf("1 GiB sparse file counts %d bytes, want its blocks only", u.bytes-one)
	}
	if u.biggest != 1<<30 {
		t.Errorf("biggest = %d, want the sparse file's length %d", u.biggest, 1<<30)
	}
	// Empty directories and symlinks are inodes: they count.
	for i := range 100 {
		n := filepath.Join(dir, "d", string(rune('a'+i%26))+strings.Repeat("x", i))
		if err := os.MkdirAll(n, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/nowhere", n+".lnk"); err != nil {
			t.Fatal(err)
		}
	}
	if got := scanTree(dir).bytes - u.bytes; got < 200*inodeCharge {
		t.Errorf("100 directories and 100 symlinks count %d bytes, want at least %d", got, 200*inodeCharge)
	}
}

// TestGrowthCapCountsInodes: directories and symlinks are not free. 5,000
// of them under a 1 MiB cap used to be committed with layer_bytes 0.
func TestGrowthCapCountsInodes(t *testing.T) {
	e, base := newEngine(t, "runc")
	o := spawnWait(t, e, SpawnRequest{Image: base,
		Command:         "cd /root && for i in $(seq 1 2500); do mkdir d$i; ln -s /x l$i; done",
		ResourcesLimits: &oplog.ResourcesLimits{MaxLayerBytes: ptr(int64(1 << 20))}})
	if o.Status != apitypes.StatusFailed || o.ResultImageUUID != "" || !strings.Contains(o.Error, "growth cap") {
		t.Fatalf("status %s result %q error %q, want FAILED with nothing saved", o.Status, o.ResultImageUUID, o.Error)
	}
	if d := sizeCapEvent(t, e, o.UUID); d.LimitBytes != 1<<20 || d.FileSize <= 1<<20 {
		t.Errorf("size_cap %+v, want limit 1 MiB and a larger size", d)
	}
	// Under the cap, the layer's recorded size is its disk use, not 0.
	o2 := spawnWait(t, e, SpawnRequest{Image: base, Command: "mkdir -p /root/a/b/c && ln -s /x /root/l"})
	im, err := e.Image(context.Background(), acct, o2.ResultImageUUID)
	if err != nil {
		t.Fatal(err)
	}
	if im.LayerBytes < 4*inodeCharge {
		t.Errorf("layer_bytes of 3 directories and a symlink = %d, want at least %d", im.LayerBytes, 4*inodeCharge)
	}
}

// TestSizeCapOneBigFile: one file that reaches the cap is cut by
// RLIMIT_FSIZE; the run must end as one that writes many files does
// (size_cap with file_size, FAILED, nothing saved), not commit the cut file.
func TestSizeCapOneBigFile(t *testing.T) {
	const limit = 2 << 20
	check := func(t *testing.T, e *Engine, o Operation) {
		t.Helper()
		if o.Status != apitypes.StatusFailed || o.ResultImageUUID != "" || !strings.Contains(o.Error, "growth cap") {
			t.Fatalf("status %s result %q error %q, want FAILED with nothing saved", o.Status, o.ResultImageUUID, o.Error)
		}
		if d := sizeCapEvent(t, e, o.UUID); d.LimitBytes != limit || d.FileSize <= limit {
			t.Errorf("size_cap %+v, want limit_bytes %d and file_size over it", d, limit)
		}
	}
	req := func(base string) SpawnRequest {
		return SpawnRequest{Image: base, Command: "head -c 3000000 /dev/zero > /root/big; echo done",
			ResourcesLimits: &oplog.ResourcesLimits{MaxLayerBytes: ptr(int64(limit))}}
	}
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newEngine(t, rt)
			check(t, e, spawnWait(t, e, req(base)))
			// A file that fits is kept.
			o := spawnWait(t, e, SpawnRequest{Image: base, Command: "head -c 1000000 /dev/zero > /root/ok",
				ResourcesLimits: &oplog.ResourcesLimits{MaxLayerBytes: ptr(int64(limit))}})
			if o.Status != apitypes.StatusSuccess || o.ResultImageUUID == "" {
				t.Fatalf("1 MB under a 2 MiB cap: status %s error %q", o.Status, o.Error)
			}
		})
	}
	t.Run("warm", func(t *testing.T) {
		t.Parallel()
		e, base := newWarmEngine(t, "runsc")
		run(t, e, base, "true", func(r *SpawnRequest) {
			r.ResourcesLimits = &oplog.ResourcesLimits{MaxLayerBytes: ptr(int64(limit))}
		})
		waitIdle(t, e, base, 1)
		check(t, e, spawnWait(t, e, req(base)))
		if e.WarmStats().Hits != 1 {
			t.Fatalf("run not served warm: %+v", e.WarmStats())
		}
	})
}

// usedBytes is what account stores now.
func usedBytes(t *testing.T, e *Engine) int64 {
	t.Helper()
	n, err := e.st.AccountBytes(context.Background(), acct)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestQuotaWhileRunning: the storage quota holds while a run writes, not
// only at admission.
func TestQuotaWhileRunning(t *testing.T) {
	e, base := newEngine(t, "runc")
	e.cfg.MaxStorageBytes = usedBytes(t, e) + 8<<20
	o := spawnWait(t, e, SpawnRequest{Image: base,
		Command: "for i in $(seq 1 30); do head -c 1000000 /dev/zero > /root/f$i; done; sleep 2"})
	if o.Status != apitypes.StatusFailed || o.ResultImageUUID != "" || !strings.Contains(o.Error, "quota") {
		t.Fatalf("status %s result %q error %q, want FAILED naming the quota", o.Status, o.ResultImageUUID, o.Error)
	}
	if d := sizeCapEvent(t, e, o.UUID); d.LimitBytes > 8<<20 {
		t.Errorf("size_cap %+v, want the quota's 8 MiB left as the limit", d)
	}
	// A disposable run stores nothing: only its cap bounds it.
	o = spawnWait(t, e, SpawnRequest{Image: base, Disposable: ptr(true),
		Command: "for i in $(seq 1 30); do head -c 1000000 /dev/zero > /root/f$i; done"})
	if o.Status != apitypes.StatusSuccess {
		t.Fatalf("disposable 30 MB: status %s error %q, want SUCCESS", o.Status, o.Error)
	}
	// What fits is committed.
	o = spawnWait(t, e, SpawnRequest{Image: base, Command: "head -c 1000000 /dev/zero > /root/f"})
	if o.Status != apitypes.StatusSuccess || o.ResultImageUUID == "" {
		t.Fatalf("1 MB under the quota: status %s error %q", o.Status, o.Error)
	}
}

// TestQuotaWhileImporting: a small gzip that expands past the quota is
// stopped while it is extracted, and nothing is saved.
func TestQuotaWhileImporting(t *testing.T) {
	e, _ := newEngine(t, "runc")
	e.cfg.MaxStorageBytes = usedBytes(t, e) + 16<<20
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	// Not zeros: extraction turns blocks of zeros into holes, which use
	// no disk, so a bomb of zeros may never reach the quota while it is
	// written (the test then failed now and then).
	fill := bytes.Repeat([]byte("x"), 1<<20)
	for i := range 256 {
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%03d", i), Mode: 0o644, Size: int64(len(fill)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(fill); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	zw.Close()
	if buf.Len() > 1<<20 {
		t.Fatalf("archive is %d bytes, want a small bomb", buf.Len())
	}
	f, err := e.PutFile(context.Background(), acct, &buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := len(imagesOf(t, e))
	op, err := e.Import(context.Background(), acct, ImportRequest{Registry: oplog.ImportSource{URL: UploadScheme + f.UUID}})
	if err != nil {
		t.Fatal(err)
	}
	o := waitOp(t, e, op)
	if o.Status != apitypes.StatusFailed || o.ResultImageUUID != "" || !strings.Contains(o.Error, "quota") {
		t.Fatalf("status %s result %q error %q, want FAILED naming the quota", o.Status, o.ResultImageUUID, o.Error)
	}
	// Stopped while extracting (the watcher's size_cap), not after writing
	// all 256 MiB.
	if d := sizeCapEvent(t, e, op); d.FileSize > 200<<20 {
		t.Errorf("size_cap %+v: the import was not stopped while it wrote", d)
	}
	if n := len(imagesOf(t, e)); n != before {
		t.Errorf("%d images after the failed import, want %d", n, before)
	}
	if used := usedBytes(t, e); used > e.cfg.MaxStorageBytes {
		t.Errorf("account uses %d bytes, over its %d-byte quota", used, e.cfg.MaxStorageBytes)
	}
}

func imagesOf(t *testing.T, e *Engine) []Image {
	t.Helper()
	ims, err := e.ListImages(context.Background(), ImageFilter{Account: acct})
	if err != nil {
		t.Fatal(err)
	}
	return ims
}

// TestMemoryBudget: memory_bytes is bounded by the host's budget, the
// default fits slots × default within it, and runs whose limits do not fit
// together wait for each other instead of over-committing the host.
func TestMemoryBudget(t *testing.T) {
	testutil.RequiresRoot(t)
	e, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: "runc", MemoryBudget: 256 << 20, Slots: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	base := busybox(t, e)
	ctx := context.Background()
	_, _, err = e.Spawn(ctx, acct, SpawnRequest{Image: base, Command: "true",
		ResourcesLimits: &oplog.ResourcesLimits{MemoryBytes: ptr(int64(1 << 40))}})
	if err == nil || !strings.Contains(err.Error(), "max_memory_bytes") {
		t.Fatalf("1 TiB memory_bytes: err %v, want an invalid argument naming the limit", err)
	}
	for name, rl := range map[string]*oplog.ResourcesLimits{
		"cpus":             {CPUs: ptr(float64(goruntime.NumCPU() + 1))},
		"pids must be bet": {Pids: ptr(int64(1 << 20))},
	} {
		if _, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: base, Command: "true", ResourcesLimits: rl}); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), name) {
			t.Errorf("%+v: err %v, want an invalid argument naming %s", rl, err, name)
		}
	}
	if got := e.cfg.DefaultMemoryBytes; got != 64<<20 && got*8 > 256<<20 {
		t.Errorf("default memory %d × 8 slots over-commits a 256 MiB budget", got)
	}
	// A holds 200 MiB of the 256 until its stdin closes; B (100 MiB) must wait.
	a, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: base, Command: "cat", Disposable: ptr(true),
		Stdin: &Stdin{Close: ptr(false)}, ResourcesLimits: &oplog.ResourcesLimits{MemoryBytes: ptr(int64(200 << 20))}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.runningOp(ctx, acct, a); err != nil {
		t.Fatal(err)
	}
	b, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: base, Command: "true", Disposable: ptr(true),
		ResourcesLimits: &oplog.ResourcesLimits{MemoryBytes: ptr(int64(100 << 20))}})
	if err != nil {
		t.Fatal(err)
	}
	// Bounded check that B does not start while A runs.
	for range 20 {
		if o, _ := e.Operation(ctx, acct, b); o.Status != apitypes.StatusPending {
			t.Fatalf("B is %s while A holds the memory budget, want PENDING", o.Status)
		}
		time.Sleep(100 * time.Millisecond) // deliberate: nothing must happen for 2 s
	}
	if err := e.WriteStdin(ctx, acct, a, 1, Stdin{Close: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if o := waitOp(t, e, a); o.Status != apitypes.StatusSuccess {
		t.Fatalf("A: %s %s", o.Status, o.Error)
	}
	if o := waitOp(t, e, b); o.Status != apitypes.StatusSuccess {
		t.Fatalf("B: %s %s", o.Status, o.Error)
	}
}

// TestSubprocessLimits: subprocesses running at once are capped per run
// and per account with a 429 naming the limit; one that exits frees its
// place.
func TestSubprocessLimits(t *testing.T) {
	testutil.RequiresRoot(t)
	e, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: "runc", MaxSubprocesses: 2, MaxAccountSubprocesses: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	base := busybox(t, e)
	ctx := context.Background()
	open := &Stdin{Close: ptr(false)}
	start := func() string {
		op, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: base, Command: "cat", Disposable: ptr(true), Stdin: open})
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	sub := func(op string) (int, error) {
		return e.Exec(ctx, acct, op, ExecRequest{Command: "cat", Stdin: open})
	}
	a, b := start(), start()
	var aSubs []int
	for range 2 {
		spid, err := sub(a)
		if err != nil {
			t.Fatal(err)
		}
		aSubs = append(aSubs, spid)
	}
	if _, err := sub(a); !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "max_subprocesses") {
		t.Fatalf("third subprocess of a run: %v, want 429 naming max_subprocesses", err)
	}
	if _, err := sub(b); err != nil {
		t.Fatal(err)
	}
	if _, err := sub(b); !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "max_account_subprocesses") {
		t.Fatalf("fourth subprocess of the account: %v, want 429 naming max_account_subprocesses", err)
	}
	// One exits: its place is free again.
	if err := e.WriteStdin(ctx, acct, a, aSubs[0], Stdin{Close: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	waitSub(t, e, a, aSubs[0])
	if _, err := sub(a); err != nil {
		t.Fatalf("subprocess after one exited: %v", err)
	}
	for _, op := range []string{a, b} {
		if err := e.WriteStdin(ctx, acct, op, 1, Stdin{Close: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		if o := waitOp(t, e, op); o.Status != apitypes.StatusSuccess {
			t.Fatalf("%s: %s", o.Status, o.Error)
		}
	}
}

// TestSquashCounted: a squashed chain's flat layer is real disk: it counts
// in the account's usage, and it keeps a sparse file's holes.
func TestSquashCounted(t *testing.T) {
	e, base := newEngine(t, "runc")
	ctx := context.Background()
	img := base
	for _, cmd := range []string{"head -c 1000000 /dev/urandom > /root/a", "dd if=/dev/zero of=/root/sparse bs=1 count=1 seek=2147483647", "mkdir /root/d"} {
		o, _ := run(t, e, img, cmd)
		img = o.ResultImageUUID
	}
	before := usedBytes(t, e)
	if err := e.squash(ctx, img); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	flat := e.images[img].flat
	e.mu.Unlock()
	if flat == "" {
		t.Fatal("image not squashed")
	}
	flatBytes := dirBytes(e.layerPath(flat))
	if flatBytes < 1000000 || flatBytes > 64<<20 {
		t.Fatalf("flat layer uses %d bytes: want the busybox base plus 1 MB, the 2 GiB sparse file's holes kept", flatBytes)
	}
	if got := usedBytes(t, e) - before; got != flatBytes {
		t.Errorf("usage grew by %d bytes when the chain was squashed, want the flat layer's %d", got, flatBytes)
	}
}
