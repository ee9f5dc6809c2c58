package engine

import (
	"bytes"
	"context"
	"crypto/md5"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/initproc"
	"github.com/arborsh/arbor/internal/layerfs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil"
)

var (
	initOnce sync.Once
	initPath string
	initErr  error
)

// staticInit builds cmd/arbor-init without cgo, and cmd/arbor-init-c
// beside it, as setup.sh does.
func staticInit(t testing.TB) string {
	t.Helper()
	initOnce.Do(func() {
		dir, err := testutil.BuildDir("init")
		if err != nil {
			initErr = err
			return
		}
		initPath = filepath.Join(dir, "arbor-init")
		cmd := exec.Command("go", "build", "-o", initPath, "github.com/arborsh/arbor/cmd/arbor-init")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			initErr = err
			t.Logf("%s", out)
			return
		}
		// Cold batch runs start the C init found beside it, as in
		// production (see coldInitBeside).
		initErr = coldInitBeside(initPath)
	})
	if initErr != nil {
		t.Fatal(initErr)
	}
	return initPath
}

func newWarmEngine(t testing.TB, rt string) (*Engine, string) {
	t.Helper()
	testutil.RequiresRoot(t)
	e, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: rt, InitBinary: staticInit(t), WarmPerImage: 2, Logger: logOnFailure(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, busybox(t, e)
}

// logOnFailure is an engine's logger, at debug level, whose lines a test
// prints if it fails: why a sandbox was not kept, continued or reused is
// only in the log, and a rare failure is not reproduced at will.
func logOnFailure(t testing.TB) *slog.Logger {
	w := &testutil.SyncBuffer{}
	t.Cleanup(func() { // after the engine's Close (cleanups run last first)
		if t.Failed() {
			t.Logf("the engine's log:\n%s", w.String())
		}
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitIdle waits until the pool holds n idle sandboxes on image.
func waitIdle(t testing.TB, e *Engine, image string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := e.warm.WaitIdle(ctx, func(k warmKey) bool { return k.image == image }, n); err != nil {
		t.Fatalf("pool has %+v, want %d idle on %s: %v", e.WarmStats(), n, image, err)
	}
}

// TestWarmMatchesCold runs the same work cold and warm and requires the
// same results: output, exit code, files, whiteouts, placed files.
func TestWarmMatchesCold(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newWarmEngine(t, rt)
			ctx := context.Background()
			cmd := "cat /opt/in.txt; echo $X; pwd; id -u; echo new > /root/new; rm /etc/hostname; mkdir -p /w/d; exit 7"
			opts := func(e *Engine) runOpts {
				f, err := e.PutFile(ctx, acct, strings.NewReader("placed\n"), 0)
				if err != nil {
					t.Fatal(err)
				}
				return func(r *SpawnRequest) {
					r.Env = map[string]string{"X": "y"}
					r.Cwd = ptr("/work/here")
					r.Files = map[string]oplog.FileSpec{"/opt/in.txt": {UUID: f.UUID, Mode: 0o640, UID: 3, GID: 4}}
				}
			}
			// Cold: an engine with the pool off (with it on, a run that
			// finds no sandbox boots one to continue in).
			cold, coldBase := newColdEngine(t, rt)
			coldOp, coldM := run(t, cold, coldBase, cmd, opts(cold))
			run(t, e, base, "true", disposable)
			waitIdle(t, e, base, 1) // the image just ran: warmed on demand
			warmOp, warmM := run(t, e, base, cmd, opts(e))
			if e.WarmStats().Hits != 1 {
				t.Fatalf("second run not served warm: %+v", e.WarmStats())
			}
			if a, b := stdout(t, coldM), stdout(t, warmM); a != b || a != "placed\ny\n/work/here\n0\n" {
				t.Errorf("stdout cold %q warm %q", a, b)
			}
			if coldM.Result.State.ExitCode != 7 || warmM.Result.State.ExitCode != 7 {
				t.Errorf("exit cold %d warm %d, want 7", coldM.Result.State.ExitCode, warmM.Result.State.ExitCode)
			}
			a, ra, _ := cold.ImageFS(ctx, acct, coldOp.ResultImageUUID)
			defer ra()
			b, rb, _ := e.ImageFS(ctx, acct, warmOp.ResultImageUUID)
			defer rb()
			changes, err := layerfs.Diff(ctx, a, b, layerfs.DiffOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(changes) != 0 {
				t.Errorf("warm result differs from cold: %+v", changes)
			}
			if _, err := readFile(t, e, warmOp.ResultImageUUID, "/etc/hostname"); err == nil {
				t.Error("warm run's deletion not in its image")
			}
			if s, _ := readFile(t, e, warmOp.ResultImageUUID, "/root/new"); s != "new\n" {
				t.Errorf("warm run's write: %q", s)
			}
		})
	}
}

func TestWarmTimeoutAndCap(t *testing.T) {
	e, base := newWarmEngine(t, "runsc")
	run(t, e, base, "true", disposable) // warms base
	waitIdle(t, e, base, 1)
	start := time.Now()
	_, m := run(t, e, base, "sleep 100", func(r *SpawnRequest) { r.Timeout = ptr(1.0) })
	if !m.Result.State.TimedOut || time.Since(start) > 20*time.Second {
		t.Errorf("warm timeout: timed_out=%v after %v", m.Result.State.TimedOut, time.Since(start))
	}
	waitIdle(t, e, base, 1)
	_, m = run(t, e, base, "yes | head -c 100000", func(r *SpawnRequest) { r.TruncateOutputAt = ptr(int64(100)) })
	if len(stdout(t, m)) != 100 || !m.Result.Stdout.Truncated {
		t.Errorf("warm output cap: %d bytes truncated=%v", len(stdout(t, m)), m.Result.Stdout.Truncated)
	}
	if e.WarmStats().Hits < 2 {
		t.Errorf("runs not served warm: %+v", e.WarmStats())
	}
}

// TestWarmIsolation: sandboxes of one pool never see each other's writes.
func TestWarmIsolation(t *testing.T) {
	e, base := newWarmEngine(t, "runsc")
	o, _ := run(t, e, base, "echo env > /root/env") // produces an image and warms 2 on it
	env := o.ResultImageUUID
	waitIdle(t, e, env, 2)
	var wg sync.WaitGroup
	outs := make([]string, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, m := run(t, e, env, "echo "+string(rune('a'+i))+" > /root/mine; sleep 0.5; ls /root")
			outs[i] = stdout(t, m)
		}()
	}
	wg.Wait()
	sort.Strings(outs)
	if outs[0] != "env\nmine\n" || outs[1] != "env\nmine\n" {
		t.Errorf("warm runs saw %q", outs)
	}
}

// TestWarmDrainedOnClose: closing the engine leaves no sandbox or mount,
// after warm runs (disposable and committed) and with idle sandboxes.
func TestWarmDrainedOnClose(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newWarmEngine(t, rt)
			run(t, e, base, "true", disposable)
			waitIdle(t, e, base, 1)
			o, _ := run(t, e, base, "echo x > /root/x")
			waitIdle(t, e, base, 1)
			run(t, e, base, "true", disposable)
			if e.WarmStats().Hits != 2 {
				t.Fatalf("runs not served warm: %+v", e.WarmStats())
			}
			if s, _ := readFile(t, e, o.ResultImageUUID, "/root/x"); s != "x\n" {
				t.Errorf("warm commit: /root/x = %q", s)
			}
			waitIdle(t, e, base, 1)
			home := e.Home()
			e.Close()
			if n := mountsUnder(home + "/run"); n != 0 {
				t.Errorf("%d mounts left under run/", n)
			}
			out, _ := exec.Command(rt, "--root="+filepath.Join(home, "runtime", rt), "list", "--quiet").Output()
			if strings.TrimSpace(string(out)) != "" {
				t.Errorf("sandboxes left: %s", out)
			}
		})
	}
}

// TestWarmBackgroundProcess: a process the command leaves in the background
// dies when the command exits, warm as cold, so it neither delays the result
// nor writes into the committed image.
func TestWarmBackgroundProcess(t *testing.T) {
	e, base := newWarmEngine(t, "runsc")
	cmd := "(sleep 2; echo late > /root/late) & echo hi > /root/x; echo out"
	coldOp, coldM := run(t, e, base, cmd)
	waitIdle(t, e, base, 1)
	start := time.Now()
	warmOp, warmM := run(t, e, base, cmd)
	took := time.Since(start)
	if e.WarmStats().Hits != 1 {
		t.Fatalf("second run not served warm: %+v", e.WarmStats())
	}
	if a, b := stdout(t, coldM), stdout(t, warmM); a != "out\n" || b != a {
		t.Errorf("stdout cold %q warm %q", a, b)
	}
	for _, op := range []Operation{coldOp, warmOp} {
		if _, err := readFile(t, e, op.ResultImageUUID, "/root/late"); err == nil {
			t.Errorf("%s: the background process outlived the command (took %v)", op.UUID, took)
		}
		if s, _ := readFile(t, e, op.ResultImageUUID, "/root/x"); s != "hi\n" {
			t.Errorf("%s: /root/x = %q", op.UUID, s)
		}
	}
	// Disposable: a sleeper holding stdout neither keeps the run going (it
	// would time out) nor loses the output written before the exit.
	waitIdle(t, e, base, 1)
	hits := e.WarmStats().Hits
	_, m := run(t, e, base, "sleep 60 & echo out", disposable, func(r *SpawnRequest) { r.Timeout = ptr(20.0) })
	if e.WarmStats().Hits != hits+1 {
		t.Fatalf("disposable run not served warm: %+v", e.WarmStats())
	}
	if m.Result.State.TimedOut || stdout(t, m) != "out\n" || m.Result.State.ExitCode != 0 {
		t.Errorf("disposable run with a background sleeper: timed_out=%v exit=%d stdout %q", m.Result.State.TimedOut, m.Result.State.ExitCode, stdout(t, m))
	}
}

// TestWarmBootsWaitForQuiet: replacements asked for while the machine is
// busy with runs boot only once it is quiet, so a burst of runs does not
// pay for its own pool refills.
func TestWarmBootsWaitForQuiet(t *testing.T) {
	e, base := newWarmEngine(t, "runsc")
	ctx := context.Background()
	budget := max(1, goruntime.NumCPU()/2)
	sh := true
	var ops []string
	for range budget {
		op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "sleep 3", Image: base, Shell: &sh})
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, op)
	}
	busy := func() int { return e.WarmStats().Active }
	for _, op := range ops {
		if _, err := e.runningOp(ctx, acct, op); err != nil { // a run counts as active before its process starts
			t.Fatal(err)
		}
	}
	if busy() < budget {
		t.Fatalf("%d runs active, want %d", busy(), budget)
	}
	run(t, e, base, "true", disposable) // ends while the sleepers run: asks for a replacement
	if e.WarmStats().Wanted == 0 {      // asked for as the run began (warmUp), before it reported
		t.Fatal("the finished run asked for no warm sandbox")
	}
	if s := e.WarmStats(); s.Booting != 0 || s.Idle != 0 {
		t.Errorf("pool booted while %d runs were active: %+v", busy(), s)
	}
	for _, op := range ops {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		if _, err := e.WaitOperation(wctx, acct, op); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	waitIdle(t, e, base, 1) // quiet again: the demand is met
}

// TestWarmPlacesLargeFiles: files bigger than one protocol frame reach a
// warm sandbox whole.
func TestWarmPlacesLargeFiles(t *testing.T) {
	e, base := newWarmEngine(t, "runsc")
	ctx := context.Background()
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB
	f, err := e.PutFile(ctx, acct, bytes.NewReader(big), 0)
	if err != nil {
		t.Fatal(err)
	}
	run(t, e, base, "true", disposable)
	waitIdle(t, e, base, 1)
	_, m := run(t, e, base, "wc -c < /data/big.bin; md5sum /data/big.bin | cut -d' ' -f1", disposable, func(r *SpawnRequest) {
		r.Files = map[string]oplog.FileSpec{"/data/big.bin": {UUID: f.UUID, Mode: 0o644}}
	})
	if e.WarmStats().Hits != 1 {
		t.Fatalf("not served warm: %+v", e.WarmStats())
	}
	want := fmt.Sprintf("%d\n%x\n", len(big), md5.Sum(big))
	if got := stdout(t, m); got != want {
		t.Errorf("placed file in the sandbox: %q, want %q", got, want)
	}
}

// TestWarmWaitsForBootInFlight: a run on an image whose sandbox is well
// into its boot takes that sandbox when it is ready instead of booting its
// own.
func TestWarmWaitsForBootInFlight(t *testing.T) {
	e, base := newWarmEngine(t, "runsc")
	o, _ := run(t, e, base, "echo 1 > /root/step")
	// Wait until a boot for the new image has run long enough to be worth
	// waiting for (see ripeLocked); a fresher one would be left to finish.
	ripe := func() int { return e.warm.Ripe(func(k warmKey) bool { return k.image == o.ResultImageUUID }) }
	// The boots start once the pool's hold after the kept sandbox is over
	// (continueHold).
	for deadline := time.Now().Add(continueHold + 30*time.Second); ripe() == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no boot in flight for the new image: %+v", e.WarmStats())
		}
		time.Sleep(2 * time.Millisecond) // ripeness is a time, not an event: poll it
	}
	hits := e.WarmStats().Hits
	_, m := run(t, e, o.ResultImageUUID, "cat /root/step")
	if e.WarmStats().Hits != hits+1 {
		t.Errorf("the run did not wait for the boot in flight: %+v", e.WarmStats())
	}
	if stdout(t, m) != "1\n" {
		t.Errorf("stdout %q", stdout(t, m))
	}
}

// TestWarmDeadSandboxSkipped: a pooled sandbox that died while idle is not
// handed to a run (which would see its command killed); the run goes cold.
func TestWarmDeadSandboxSkipped(t *testing.T) {
	e, base := newWarmEngine(t, "runsc")
	run(t, e, base, "true", disposable)
	waitIdle(t, e, base, 1)
	victim := e.warm.Idle(func(k warmKey) bool { return k.image == base })[0]
	if err := e.runtimes["runsc"].Destroy(context.Background(), victim.cid); err != nil { // dies behind the pool's back
		t.Fatal(err)
	}
	hits := e.WarmStats().Hits
	_, m := run(t, e, base, "echo alive", disposable)
	if got := stdout(t, m); got != "alive\n" || m.Result.State.ExitCode != 0 {
		t.Errorf("run after a pooled sandbox died: exit %d stdout %q", m.Result.State.ExitCode, got)
	}
	if e.WarmStats().Hits != hits {
		t.Errorf("the dead sandbox was counted as a hit: %+v", e.WarmStats())
	}
}

// TestWarmNoBootForStraightBack: a run that follows the previous one within
// the quiet grace has the cores to itself: the pool boots nothing meanwhile.
// An attempt where the machine stalled the test past the grace proves
// nothing (the pool was right to boot), so it is tried again; if every
// attempt stalls, the test fails rather than pass unchecked.
func TestWarmNoBootForStraightBack(t *testing.T) {
	ctx := context.Background()
	const attempts = 5
	for i := range attempts {
		// A fresh engine each time, so the pool starts empty.
		e, base := newWarmEngine(t, "runc")
		o, _ := run(t, e, base, "echo 1 > /root/step")
		back := time.Now()
		boots := e.WarmStats().Boots      // the first run's own, to continue in
		time.Sleep(20 * time.Millisecond) // a client's round trip, well inside quietGrace
		op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "sleep 1", Image: o.ResultImageUUID, Shell: ptr(true), Disposable: ptr(true)})
		if err != nil {
			t.Fatal(err)
		}
		d := time.Since(back)
		timely := d <= quietGrace*3/4
		if timely {
			booted := 0
			for i := 0; i < 20; i++ { // through the second run
				// Booted ones only: the sandbox the first run continues
				// in is idle until the second run takes it.
				if s := e.WarmStats(); s.Booting > 0 || s.Boots > boots {
					booted++
				}
				time.Sleep(25 * time.Millisecond) // deliberate: sample that nothing boots for a while
			}
			if booted > 0 {
				t.Errorf("the pool booted while the straight-back run ran: %+v", e.WarmStats())
			}
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err = e.WaitOperation(wctx, acct, op)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		waitIdle(t, e, o.ResultImageUUID, 1) // and once it is quiet, the demand is met
		if timely {
			return
		}
		t.Logf("attempt %d: spawned %v after the result, too late to tell; trying again", i+1, d)
		e.Close()
	}
	t.Fatalf("in all %d attempts the machine stalled the test past the quiet grace (%v): the behaviour went unchecked", attempts, quietGrace)
}

// TestProcessTreeMatchesCold: arbor's init is PID 1 cold and warm, so
// signals, PID 1 semantics and orphan reaping are the same in both paths,
// and a death by signal is reported as the signal (exit code -1) while an
// exit code above 128 stays an exit code.
func TestProcessTreeMatchesCold(t *testing.T) {
	type outcome struct {
		stdout       string
		code, signal int
	}
	cases := []struct {
		name, cmd string
		want      outcome
	}{
		{"kill -9 self", "echo up; kill -9 $$; echo survived", outcome{"up\n", -1, 9}},
		{"kill -TERM self is not ignored", "kill -TERM $$; echo survived", outcome{"", -1, 15}},
		{"exit 137 is an exit", "exit 137", outcome{"", 137, -1}},
		{"command is not pid 1", `[ $$ != 1 ] && echo not-pid-1`, outcome{"not-pid-1\n", 0, -1}},
		{"pid 1 ignores signals from inside", "kill -TERM 1; kill -INT 1; sleep 0.2; echo alive", outcome{"alive\n", 0, -1}},
		{"orphans are reaped", `sh -c 'sleep 0.1 & exit 0'; sleep 0.5; grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l`, outcome{"0\n", 0, -1}},
		{"trap runs", "trap 'echo trapped; exit 3' TERM; kill -TERM $$; sleep 1", outcome{"trapped\n", 3, -1}},
	}
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			cold, cbase := newEngine(t, rt)
			warm, wbase := newWarmEngine(t, rt)
			run(t, warm, wbase, "true", disposable)
			for _, tc := range cases {
				waitIdle(t, warm, wbase, 1)
				hits := warm.WarmStats().Hits
				got := map[string]outcome{}
				for path, e := range map[string]*Engine{"cold": cold, "warm": warm} {
					base := cbase
					if e == warm {
						base = wbase
					}
					_, m := run(t, e, base, tc.cmd, disposable)
					got[path] = outcome{stdout(t, m), m.Result.State.ExitCode, m.Result.State.Signal}
				}
				if warm.WarmStats().Hits != hits+1 {
					t.Fatalf("%s: not served warm: %+v", tc.name, warm.WarmStats())
				}
				if got["cold"] != tc.want || got["warm"] != tc.want {
					t.Errorf("%s: cold %+v warm %+v, want %+v", tc.name, got["cold"], got["warm"], tc.want)
				}
			}
		})
	}
}

// TestCloseCancelsWarmBoot: Close cancels a warm boot in progress (it runs
// under the engine's lifetime context) instead of waiting for it. The boot
// goes through a runc wrapper that announces itself on a FIFO and then
// blocks for a minute: without the cancellation Close would wait that
// minute.
func TestCloseCancelsWarmBoot(t *testing.T) {
	testutil.RequiresRoot(t)
	real, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fifo := filepath.Join(dir, "booting")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "runc")
	// Cold sandboxes boot detached too: a warm boot is the detached one
	// whose init does not exit after its run (no initproc.ExitAfterRun).
	script := fmt.Sprintf(`#!/bin/sh
prev= bundle= detach=
for a in "$@"; do
	[ "$a" = --detach ] && detach=1
	[ "$prev" = --bundle ] && bundle=$a
	prev=$a
done
if [ -n "$detach" ] && ! grep -q -- '"%s"' "$bundle/config.json"; then
	echo booting > %s
	exec sleep 60
fi
exec %s "$@"
`, initproc.ExitAfterRun, fifo, real)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	e, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: "runc", RuntimePaths: map[string]string{"runc": wrapper},
		InitBinary: staticInit(t), WarmPerImage: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	base := busybox(t, e)
	run(t, e, base, "true", disposable) // cold; asks for a warm sandbox on base
	announced := make(chan error, 1)
	go func() {
		f, err := os.Open(fifo) // blocks until the wrapper opens it to write
		if err == nil {
			_, err = io.ReadAll(f)
			f.Close()
		}
		announced <- err
	}()
	select {
	case err := <-announced:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("no warm boot started: %+v", e.WarmStats())
	}
	if s := e.WarmStats(); s.Booting != 1 {
		t.Fatalf("pool %+v, want the one boot in flight", s)
	}
	home := e.Home()
	start := time.Now()
	e.Close()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Close took %v with a warm boot in flight: it waited for the boot instead of cancelling it", d)
	}
	if n := mountsUnder(home + "/run"); n != 0 {
		t.Errorf("%d mounts left under run/ by the cancelled boot", n)
	}
}

// movesStore records the status moves an engine writes.
type movesStore struct {
	store.Metadata
	mu    sync.Mutex
	moves map[string][]string // operation: "FROM>TO", in order
}

func (m *movesStore) MoveOperation(ctx context.Context, uuid, from, to string) error {
	m.mu.Lock()
	m.moves[uuid] = append(m.moves[uuid], from+">"+to)
	m.mu.Unlock()
	return m.Metadata.MoveOperation(ctx, uuid, from, to)
}

// TestWarmRunSkipsAssigned: a run that takes a ready sandbox goes from
// PENDING to EXECUTING in one write (ASSIGNED is the time a sandbox is
// made, and it needs none); a run that makes its sandbox is ASSIGNED first.
func TestWarmRunSkipsAssigned(t *testing.T) {
	testutil.RequiresRoot(t)
	home := testutil.Home(t)
	st, err := store.Open(context.Background(), filepath.Join(home, "arbor.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m := &movesStore{Metadata: st, moves: map[string][]string{}}
	e, err := New(context.Background(), Config{Home: home, Runtime: "runc", InitBinary: staticInit(t), WarmPerImage: 2, Metadata: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	base := busybox(t, e)

	cold, _ := run(t, e, base, "true", disposable) // no sandbox waits yet
	waitIdle(t, e, base, 1)
	warm, _ := run(t, e, base, "true", disposable)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, tc := range []struct {
		name, op, want string
	}{
		{"cold", cold.UUID, "PENDING>ASSIGNED,ASSIGNED>EXECUTING"},
		{"warm", warm.UUID, "PENDING>EXECUTING"},
	} {
		if got := strings.Join(m.moves[tc.op], ","); got != tc.want {
			t.Errorf("%s run's moves = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestWarmBootNeverReady: a warm boot whose init never says it serves
// (silent, or dead at once) fails, and leaves no sandbox, process, mount,
// directory or cgroup behind.
func TestWarmBootNeverReady(t *testing.T) {
	defer func(d time.Duration) { initReadyTimeout = d }(initReadyTimeout)
	initReadyTimeout = 2 * time.Second
	for _, tc := range []struct{ name, init string }{
		{"silent", "#!/bin/sh\nexec sleep 7319\n"},
		{"dead", "#!/bin/sh\nexit 3\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, base := newEngine(t, "runc")
			ctx := context.Background()
			p, err := e.plan(ctx, acct, SpawnRequest{Command: "true", Image: base})
			if err != nil {
				t.Fatal(err)
			}
			bad := filepath.Join(t.TempDir(), "init")
			if err := os.WriteFile(bad, []byte(tc.init), 0o755); err != nil {
				t.Fatal(err)
			}
			e.initBin = bad
			b, err := e.newWarm(ctx, keyOf(p, base))
			if err == nil || b != nil {
				t.Fatalf("newWarm with an init that never serves = %v, %v; want an error", b, err)
			}
			cid := regexp.MustCompile(`arbor-warm-[0-9a-f]+`).FindString(err.Error())
			if cid == "" {
				t.Fatalf("the error names no sandbox: %v", err)
			}
			if ents, _ := os.ReadDir(filepath.Join(e.cfg.Home, "run")); len(ents) != 0 {
				t.Errorf("run/ holds %v after the failed boot", ents)
			}
			mi, _ := os.ReadFile("/proc/self/mountinfo")
			if strings.Contains(string(mi), e.cfg.Home) {
				t.Errorf("a mount under %s is left", e.cfg.Home)
			}
			// The runtime removes a destroyed sandbox's state and cgroups in
			// the background: what a leak leaves never goes.
			leftovers := func() []string {
				var left []string
				for _, pat := range []string{filepath.Join(e.cfg.Home, "runtime", "*", cid+"*"), "/sys/fs/cgroup/*/arbor/*" + cid, "/sys/fs/cgroup/arbor/*" + cid} {
					m, _ := filepath.Glob(pat)
					left = append(left, m...)
				}
				procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
				for _, c := range procs {
					if b, _ := os.ReadFile(c); strings.Contains(string(b), "7319") {
						left = append(left, fmt.Sprintf("the silent init's process: %s %q", c, b))
					}
				}
				return left
			}
			deadline := time.Now().Add(10 * time.Second)
			left := leftovers()
			for len(left) != 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond) // the background delete has no event
				left = leftovers()
			}
			if len(left) != 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}
