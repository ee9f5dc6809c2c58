package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil"
)

const acct = "test"

// newEngine starts an engine on a fresh home with a busybox base image.
func newEngine(t testing.TB, rt string) (*Engine, string) {
	t.Helper()
	testutil.RequiresRoot(t)
	// Cold runs only (the pool is off), through the static init as in production.
	e, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: rt, InitBinary: staticInit(t), WarmPerImage: -1, Logger: logOnFailure(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, busybox(t, e)
}

func busybox(t testing.TB, e *Engine) string {
	t.Helper()
	var buf bytes.Buffer
	if err := baseimage.WriteBusyboxTar(&buf); err != nil {
		t.Fatal(err)
	}
	return tarImage(t, e, &buf)
}

// tarImage imports the root filesystem tarball r as a base image.
func tarImage(t testing.TB, e *Engine, r io.Reader) string {
	t.Helper()
	id, err := e.NewBaseImage(context.Background(), acct, func(dir string) error {
		cmd := exec.Command("tar", "-x", "-C", dir)
		cmd.Stdin = r
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("tar: %v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type runOpts func(*SpawnRequest)

func disposable(r *SpawnRequest) { t := true; r.Disposable = &t }

// run spawns a shell command and waits for it.
func run(t testing.TB, e *Engine, image, cmd string, opts ...runOpts) (Operation, apitypes.InstanceMetadata) {
	t.Helper()
	sh := true
	req := SpawnRequest{Command: cmd, Image: image, Shell: &sh}
	for _, o := range opts {
		o(&req)
	}
	op, _, err := e.Spawn(context.Background(), acct, req)
	if err != nil {
		t.Fatalf("Spawn(%q): %v", cmd, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o, err := e.WaitOperation(ctx, acct, op)
	if err != nil {
		t.Fatalf("wait %q: %v", cmd, err)
	}
	var m apitypes.InstanceMetadata
	if err := json.Unmarshal([]byte(o.Metadata), &m); err != nil {
		t.Fatal(err)
	}
	if o.Status != apitypes.StatusSuccess {
		t.Fatalf("run %q: status %s (%s)", cmd, o.Status, o.Error)
	}
	return o, m
}

// stderr is a run's standard error, for failure messages.
func stderr(t testing.TB, m apitypes.InstanceMetadata) string {
	t.Helper()
	if m.Result == nil {
		return ""
	}
	b, _ := m.Result.Stderr.Bytes()
	return string(b)
}

func stdout(t testing.TB, m apitypes.InstanceMetadata) string {
	t.Helper()
	if m.Result == nil {
		t.Fatal("no result")
	}
	b, err := m.Result.Stdout.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readFile(t testing.TB, e *Engine, image, path string) (string, error) {
	t.Helper()
	fs, release, err := e.ImageFS(context.Background(), acct, image)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	f, _, err := fs.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	return string(b), err
}

// runtimes lists the runtimes every behaviour test runs under.
var runtimes = []string{"runsc", "runc"}

func TestRunBasics(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newEngine(t, rt)
			tests := []struct {
				name, cmd string
				opts      []runOpts
				wantOut   string
				wantCode  int
				wantSame  bool // result image equals input
				wantNone  bool // no result image
			}{
				{name: "echo", cmd: "echo hello", wantOut: "hello\n", wantSame: true},
				{name: "exit code", cmd: "exit 3", wantCode: 3, wantSame: true},
				{name: "env and cwd", cmd: "echo $FOO $(pwd)", opts: []runOpts{func(r *SpawnRequest) {
					r.Env = map[string]string{"FOO": "bar"}
					c := "/tmp"
					r.Cwd = &c
				}}, wantOut: "bar /tmp\n", wantSame: true},
				{name: "stdin", cmd: "cat", opts: []runOpts{func(r *SpawnRequest) {
					r.Stdin = &Stdin{Value: "aGkK", Encoding: "base64"}
				}}, wantOut: "hi\n", wantSame: true},
				{name: "uid gid", cmd: "id -u; id -g", opts: []runOpts{func(r *SpawnRequest) {
					u, g := 1000, 1001
					r.UID, r.GID = &u, &g
					c := "/"
					r.Cwd = &c
				}}, wantOut: "1000\n1001\n", wantSame: true},
				{name: "hostname", cmd: "hostname", wantOut: "linuxkit\n", wantSame: true},
				{name: "disposable write", cmd: "echo x > /root/f", opts: []runOpts{disposable}, wantNone: true},
				{name: "missing command", cmd: "no-such-tool", wantCode: 127, wantSame: true},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					o, m := run(t, e, base, tc.cmd, tc.opts...)
					if tc.wantOut != "" && stdout(t, m) != tc.wantOut {
						t.Errorf("stdout = %q, want %q", stdout(t, m), tc.wantOut)
					}
					if m.Result.State.ExitCode != tc.wantCode {
						t.Errorf("exit code = %d, want %d", m.Result.State.ExitCode, tc.wantCode)
					}
					switch {
					case tc.wantSame && o.ResultImageUUID != base:
						t.Errorf("result image = %q, want input %s", o.ResultImageUUID, base)
					case tc.wantNone && o.ResultImageUUID != "":
						t.Errorf("disposable run produced image %s", o.ResultImageUUID)
					}
				})
			}
		})
	}
}

func TestNonShellMissingExecutable(t *testing.T) {
	e, base := newEngine(t, "runc")
	sh := false
	op, _, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: "/usr/bin/python3", Image: base, Shell: &sh})
	if err != nil {
		t.Fatal(err)
	}
	o, _ := e.WaitOperation(context.Background(), acct, op)
	var m apitypes.InstanceMetadata
	json.Unmarshal([]byte(o.Metadata), &m)
	b, _ := m.Result.Stderr.Bytes()
	if m.Result.State.ExitCode != 127 || !strings.Contains(string(b), "not found in the image") {
		t.Fatalf("exit %d stderr %q, want 127 and a not-found message", m.Result.State.ExitCode, b)
	}
}

// TestBranchIsolationAndRollback: three branches from one image each see
// only their own change; an older image stays usable after newer ones exist.
func TestBranchIsolationAndRollback(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newEngine(t, rt)
			o, _ := run(t, e, base, "mkdir -p /work && echo base > /work/state")
			env := o.ResultImageUUID
			if env == "" || env == base {
				t.Fatalf("install step produced %q, want a new image", env)
			}
			names := []string{"retry", "pool", "async"}
			results := make([]string, len(names))
			var wg sync.WaitGroup
			for i, n := range names {
				wg.Add(1)
				go func() {
					defer wg.Done()
					o, _ := run(t, e, env, fmt.Sprintf("echo %s > /work/%s && ls /work", n, n))
					results[i] = o.ResultImageUUID
				}()
			}
			wg.Wait()
			for i, n := range names {
				for j, other := range names {
					_, err := readFile(t, e, results[i], "/work/"+other)
					if (i == j) != (err == nil) {
						t.Errorf("branch %s: /work/%s present=%v", n, other, err == nil)
					}
				}
				if s, _ := readFile(t, e, results[i], "/work/state"); s != "base\n" {
					t.Errorf("branch %s lost the base state: %q", n, s)
				}
			}
			// Rollback: run on the older image after newer ones exist.
			_, m := run(t, e, env, "ls /work")
			if got := stdout(t, m); got != "state\n" {
				t.Errorf("rollback run sees %q, want only state", got)
			}
		})
	}
}

func TestWhiteoutDeletesBaseFile(t *testing.T) {
	e, base := newEngine(t, "runsc")
	o, _ := run(t, e, base, "rm /etc/hostname && rm -r /home")
	if _, err := readFile(t, e, o.ResultImageUUID, "/etc/hostname"); err == nil {
		t.Error("deleted file still present in result")
	}
	if s, err := readFile(t, e, base, "/etc/hostname"); err != nil || s != "linuxkit\n" {
		t.Errorf("parent lost its file: %q %v", s, err)
	}
	_, m := run(t, e, o.ResultImageUUID, "ls /etc/hostname /home 2>&1; echo done")
	if out := stdout(t, m); !strings.Contains(out, "No such file") {
		t.Errorf("child run still sees deleted files: %q", out)
	}
}

func TestTimeoutKillsSandbox(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newEngine(t, rt)
			start := time.Now()
			_, m := run(t, e, base, "sleep 1000 & sleep 1000", func(r *SpawnRequest) { to := 1.0; r.Timeout = &to })
			if !m.Result.State.TimedOut {
				t.Error("timed_out = false, want true")
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("timeout took %v", d)
			}
		})
	}
}

// TestTimeoutCountsFromCommand: a run's timeout is its command's, so a
// sandbox slow to boot (a loaded host) does not eat it. Before the clock
// started with the command, the run below ended timed out with no output.
func TestTimeoutCountsFromCommand(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newEngine(t, rt)
			e.beforeBoot = func(string) { time.Sleep(1500 * time.Millisecond) }
			o, m := run(t, e, base, "echo up; sleep 100", func(r *SpawnRequest) { to := 1.0; r.Timeout = &to })
			if !m.Result.State.TimedOut || stdout(t, m) != "up\n" {
				t.Errorf("timed_out=%v stdout %q, want true and the command's output", m.Result.State.TimedOut, stdout(t, m))
			}
			if d := m.Result.Resources.ElapsedTime; d < 0.9 {
				t.Errorf("the command ran %.2f s of its 1 s timeout", d)
			}
			if !slices.Contains(eventTypes(t, e, o.UUID), "spawn") {
				t.Errorf("no spawn event: %v", eventTypes(t, e, o.UUID))
			}

			// A boot longer than the timeout and the allowance fails the run,
			// saying nothing ran.
			e.bootAllowance = 100 * time.Millisecond
			o, _ = runAny(t, e, base, "echo up", func(r *SpawnRequest) { to := 1.0; r.Timeout = &to })
			if o.Status != apitypes.StatusFailed || !strings.Contains(o.Error, "did not start within 1.1s") {
				t.Errorf("boot past the allowance: %s %q", o.Status, o.Error)
			}
		})
	}
}

// TestTimeoutCapped: a timeout over the server's limit is capped to it, as
// ConTree does (its SDK only warns), and the metadata says so; one that is
// not positive is refused.
func TestTimeoutCapped(t *testing.T) {
	e, base := newEngine(t, "runc")
	o, m := run(t, e, base, "true", func(r *SpawnRequest) { to := 7200.0; r.Timeout = &to })
	if o.Status != apitypes.StatusSuccess || m.Timeout != e.cfg.MaxTimeout {
		t.Errorf("timeout 7200 s: %s %q, metadata timeout %d; want SUCCESS and %d", o.Status, o.Error, m.Timeout, e.cfg.MaxTimeout)
	}
	to := -1.0
	if _, _, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: "true", Image: base, Timeout: &to}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("timeout -1: %v, want invalid argument", err)
	}
}

func TestOutputCap(t *testing.T) {
	e, base := newEngine(t, "runc")
	_, m := run(t, e, base, "yes | head -c 10000000", func(r *SpawnRequest) { n := int64(1000); r.TruncateOutputAt = &n })
	if got := len(stdout(t, m)); got != 1000 || !m.Result.Stdout.Truncated {
		t.Fatalf("captured %d bytes truncated=%v, want 1000 true", got, m.Result.Stdout.Truncated)
	}
}

func TestParallelRuns(t *testing.T) {
	e, base := newEngine(t, "runc")
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, m := run(t, e, base, fmt.Sprintf("echo %d > /root/me; cat /root/me; ls /root | wc -l", i))
			if got := stdout(t, m); got != fmt.Sprintf("%d\n1\n", i) {
				errs <- fmt.Sprintf("run %d saw %q (status %s %s, stderr %q, state %+v)", i, got, o.Status, o.Error, m.Result.Stderr.Value, m.Result.State)
			}
			if o.ResultImageUUID == base {
				errs <- fmt.Sprintf("run %d made no image", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestFilesPlaced(t *testing.T) {
	e, base := newEngine(t, "runsc")
	f, err := e.PutFile(context.Background(), acct, strings.NewReader("#!/bin/sh\necho from-file\n"), 0)
	if err != nil {
		t.Fatal(err)
	}
	f2, _ := e.PutFile(context.Background(), acct, strings.NewReader("#!/bin/sh\necho from-file\n"), 0)
	if f2.UUID != f.UUID {
		t.Errorf("identical upload got uuid %s, want %s", f2.UUID, f.UUID)
	}
	o, m := run(t, e, base, "/opt/tool/run.sh && stat -c '%a %u %g' /opt/tool/run.sh", func(r *SpawnRequest) {
		r.Files = map[string]oplog.FileSpec{"/opt/tool/run.sh": {UUID: f.UUID, Mode: 0o750, UID: 5, GID: 6}}
	})
	if got := stdout(t, m); got != "from-file\n750 5 6\n" {
		t.Fatalf("stdout = %q", got)
	}
	if s, _ := readFile(t, e, o.ResultImageUUID, "/opt/tool/run.sh"); !strings.Contains(s, "from-file") {
		t.Error("placed file not in result image")
	}
}

func TestSizeCap(t *testing.T) {
	e, base := newEngine(t, "runc")
	op, _, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: "for i in $(seq 1 100); do head -c 1000000 /dev/zero > /root/f$i; done; sleep 5", Image: base,
		Shell: ptr(true), ResourcesLimits: &oplog.ResourcesLimits{MaxLayerBytes: ptr(int64(5 << 20))}})
	if err != nil {
		t.Fatal(err)
	}
	o, _ := e.WaitOperation(context.Background(), acct, op)
	if o.Status != apitypes.StatusFailed || o.ResultImageUUID != "" || !strings.Contains(o.Error, "growth cap") {
		t.Fatalf("status %s result %q error %q, want FAILED without image", o.Status, o.ResultImageUUID, o.Error)
	}
	evs, _ := e.st.Events(context.Background(), op, -1, 0)
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	if !strings.Contains(strings.Join(types, ","), "size_cap") || types[len(types)-1] != "completion" {
		t.Fatalf("events %v, want size_cap and completion last", types)
	}
}

func ptr[T any](v T) *T { return &v }

func TestCancelRunning(t *testing.T) {
	e, base := newEngine(t, "runc")
	op, _, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: "echo ready; sleep 100", Image: base, Shell: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the command runs (its first output), so the cancel hits a
	// running sandbox rather than a queued operation.
	errReady := fmt.Errorf("ready") // stops the follow
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = e.FollowEvents(ctx, acct, op, FollowOptions{After: -1, Follow: true}, func(ev Event) error {
		if ev.Type == apitypes.EventStdout {
			return errReady
		}
		return nil
	})
	if err != errReady {
		t.Fatalf("waiting for the command's output: %v (the command never ran)", err)
	}
	if o, err := e.Operation(context.Background(), acct, op); err != nil || o.Status != apitypes.StatusExecuting {
		t.Fatalf("after its output the operation is %q (%v), want EXECUTING", o.Status, err)
	}
	if err := e.Cancel(context.Background(), acct, op); err != nil {
		t.Fatal(err)
	}
	o, err := e.WaitOperation(ctx, acct, op)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != apitypes.StatusCancelled {
		t.Fatalf("status %s, want CANCELLED", o.Status)
	}
	if err := e.Cancel(context.Background(), acct, op); err == nil {
		t.Fatal("cancel of finished op succeeded, want conflict")
	}
}

func TestEventLogOrder(t *testing.T) {
	e, base := newEngine(t, "runc")
	o, _ := run(t, e, base, "echo out; echo err >&2")
	var types []string
	err := e.FollowEvents(context.Background(), acct, o.UUID, FollowOptions{After: -1}, func(ev Event) error {
		types = append(types, fmt.Sprintf("%s/%d", ev.Type, ev.Spid))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(types, " ")
	for _, want := range []string{"init/0", "spawn/1", "stdout/1", "stderr/1", "exit/1", "shutdown/0", "completion/0"} {
		if !strings.Contains(got, want) {
			t.Errorf("events %q lack %s", got, want)
		}
	}
	if !strings.HasSuffix(got, "completion/0") || !strings.HasPrefix(got, "init/0") {
		t.Errorf("events %q must start with init and end with completion", got)
	}
	// Resume is exclusive.
	var ids []int64
	e.FollowEvents(context.Background(), acct, o.UUID, FollowOptions{After: 2}, func(ev Event) error { ids = append(ids, ev.ID); return nil })
	if len(ids) == 0 || ids[0] != 3 {
		t.Errorf("resume after 2 starts at %v, want 3", ids)
	}
}

func TestInvalidSpawns(t *testing.T) {
	e, base := newEngine(t, "runc")
	tests := []struct {
		name string
		req  SpawnRequest
		want string
	}{
		{"no command", SpawnRequest{Image: base}, "command is required"},
		{"unknown image", SpawnRequest{Command: "true", Image: "tag:nope"}, "not found"},
		{"unknown uuid", SpawnRequest{Command: "true", Image: "00000000-0000-0000-0000-000000000000"}, "not found"},
		{"zero timeout", SpawnRequest{Command: "true", Image: base, Timeout: ptr(0.0)}, "positive"},
		{"negative timeout", SpawnRequest{Command: "true", Image: base, Timeout: ptr(-5.0)}, "positive"},
		{"relative file", SpawnRequest{Command: "true", Image: base, Files: map[string]oplog.FileSpec{"x/y": {UUID: "00000000-0000-0000-0000-000000000000"}}}, "absolute"},
		{"unknown file", SpawnRequest{Command: "true", Image: base, Files: map[string]oplog.FileSpec{"/x": {UUID: "00000000-0000-0000-0000-000000000000"}}}, "not found"},
		{"relative cwd", SpawnRequest{Command: "true", Image: base, Cwd: ptr("tmp")}, "absolute"},
		{"unknown runtime", SpawnRequest{Command: "true", Image: base, Runtime: ptr("kvm")}, "not available"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := e.Spawn(context.Background(), acct, tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Spawn error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestResourceBombs(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newEngine(t, rt)
			tests := []struct {
				name, cmd string
				opts      []runOpts
			}{
				// 160 MB, 2.4 times the limit: through gVisor's pipes a
				// bigger bomb only takes longer to be killed.
				{"memory", "x=$(head -c 160000000 /dev/zero | tr '\\0' a); echo survived", []runOpts{func(r *SpawnRequest) {
					r.ResourcesLimits = &oplog.ResourcesLimits{MemoryBytes: ptr(int64(64 << 20))}
				}}},
				{"fork", "bomb() { bomb | bomb & }; bomb; sleep 3", []runOpts{func(r *SpawnRequest) {
					r.ResourcesLimits = &oplog.ResourcesLimits{Pids: ptr(int64(64))}
					r.Timeout = ptr(10.0)
				}}},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					_, m := run(t, e, base, tc.cmd, append(tc.opts, disposable)...)
					if tc.name == "memory" && strings.Contains(stdout(t, m), "survived") {
						t.Errorf("memory bomb survived a 64 MiB limit")
					}
					// The engine is still healthy afterwards.
					_, m2 := run(t, e, base, "echo ok", disposable)
					if stdout(t, m2) != "ok\n" {
						t.Errorf("engine unhealthy after %s bomb", tc.name)
					}
				})
			}
		})
	}
}

func TestTagsAndResolve(t *testing.T) {
	e, base := newEngine(t, "runc")
	ctx := context.Background()
	if _, err := e.SetTag(ctx, acct, base, "busybox:latest"); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"busybox:latest", "tag:busybox:latest", base, strings.ToUpper(base)} {
		im, err := e.ResolveImage(ctx, acct, ref)
		if err != nil || im.UUID != base {
			t.Errorf("ResolveImage(%q) = %s, %v", ref, im.UUID, err)
		}
	}
	if _, err := e.ResolveImage(ctx, "other", "busybox:latest"); err == nil {
		t.Error("another account resolved our tag")
	}
	o, _ := run(t, e, base, "touch /x")
	if _, err := e.SetTag(ctx, acct, o.ResultImageUUID, "busybox:latest"); err != nil {
		t.Fatal(err)
	}
	if im, _ := e.ResolveImage(ctx, acct, "busybox:latest"); im.UUID != o.ResultImageUUID {
		t.Error("tag did not move")
	}
	if _, err := e.SetTag(ctx, acct, base, "bad tag"); err == nil {
		t.Error("invalid tag accepted")
	}
}

func TestDeleteImageKeepsDescendants(t *testing.T) {
	e, base := newEngine(t, "runc")
	ctx := context.Background()
	a, _ := run(t, e, base, "echo a > /a")
	b, _ := run(t, e, a.ResultImageUUID, "echo b > /b")
	if err := e.DeleteImage(ctx, acct, a.ResultImageUUID); err != nil {
		t.Fatal(err)
	}
	if s, err := readFile(t, e, b.ResultImageUUID, "/a"); err != nil || s != "a\n" {
		t.Fatalf("descendant lost deleted parent's layer: %q %v", s, err)
	}
	layers := func() int { ents, _ := os.ReadDir(filepath.Join(e.Home(), "layers")); return len(ents) }
	before := layers()
	if err := e.DeleteImage(ctx, acct, b.ResultImageUUID); err != nil {
		t.Fatal(err)
	}
	// A run's own pin on its layers ends just after its result is visible;
	// layers still pinned then are collected by the next collection.
	for i := 0; i < 50 && layers() != before-2; i++ {
		time.Sleep(100 * time.Millisecond) // no event says the pin has ended: poll
		e.CollectGarbage(ctx)
	}
	if after := layers(); after != before-2 {
		t.Fatalf("layers %d → %d, want both layers collected", before, after)
	}
	if _, err := readFile(t, e, base, "/etc/hostname"); err != nil {
		t.Fatal("base damaged by GC")
	}
}

func TestSecretsRedactedInEcho(t *testing.T) {
	e, base := newEngine(t, "runc")
	op, meta, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: "echo $API_TOKEN", Image: base, Shell: ptr(true),
		Env: map[string]string{"API_TOKEN": "s3cret", "PLAIN": "visible"}})
	if err != nil {
		t.Fatal(err)
	}
	if meta.Env["API_TOKEN"] != "<MASKED>" || meta.Env["PLAIN"] != "visible" {
		t.Fatalf("spawn echo env = %v", meta.Env)
	}
	o, _ := e.WaitOperation(context.Background(), acct, op)
	var m apitypes.InstanceMetadata
	json.Unmarshal([]byte(o.Metadata), &m)
	if m.Env["API_TOKEN"] != "<MASKED>" {
		t.Fatalf("stored metadata env = %v", m.Env)
	}
	if stdout(t, m) != "s3cret\n" {
		t.Fatal("the process did not get the real value")
	}
}

// TestDeleteImageWhileQueued: runs queued behind a full slot on an image
// deleted meanwhile still run on it (their leases keep its chain from
// Spawn on), one of them committing a child of it; once the leases end and
// the child goes, the layers are collected.
func TestDeleteImageWhileQueued(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	e, err := New(ctx, Config{Home: testutil.Home(t), Runtime: "runc", InitBinary: staticInit(t), WarmPerImage: -1, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	base := busybox(t, e)
	o, _ := run(t, e, base, "echo queued > /marker")
	img, err := e.resolveImage(ctx, acct, o.ResultImageUUID) // the row: the test checks its layer on disk
	if err != nil {
		t.Fatal(err)
	}
	onDisk := func(layer string) bool { _, err := os.Stat(e.layerPath(layer)); return err == nil }

	// A holds the only slot until its stdin closes.
	a, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: base, Command: "cat", Disposable: ptr(true),
		Stdin: &Stdin{Close: ptr(false)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.runningOp(ctx, acct, a); err != nil {
		t.Fatal(err)
	}
	b, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: img.UUID, Command: "cat /marker", Shell: ptr(true), Disposable: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: img.UUID, Command: "echo c > /c", Shell: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{b, c} {
		if o, _ := e.Operation(ctx, acct, op); o.Status != apitypes.StatusPending {
			t.Fatalf("%s is %s while A holds the only slot, want PENDING", op, o.Status)
		}
	}
	if err := e.DeleteImage(ctx, acct, img.UUID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Image(ctx, acct, img.UUID); !errdefs.IsNotFound(err) {
		t.Fatalf("deleted image still visible: %v", err)
	}
	if _, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: img.UUID, Command: "true"}); !errdefs.IsNotFound(err) {
		t.Fatalf("Spawn on the deleted image = %v, want not found", err)
	}
	if !onDisk(img.Layer) {
		t.Fatal("deleting the image removed the layer queued runs lease")
	}
	if err := e.WriteStdin(ctx, acct, a, 1, Stdin{Close: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	ob := waitOp(t, e, b)
	oc := waitOp(t, e, c)
	for _, o := range []Operation{ob, oc} {
		if o.Status != apitypes.StatusSuccess {
			t.Fatalf("queued run on the deleted image: %s (%s), want SUCCESS", o.Status, o.Error)
		}
	}
	var mb apitypes.InstanceMetadata
	if err := json.Unmarshal([]byte(ob.Metadata), &mb); err != nil {
		t.Fatal(err)
	}
	if got := stdout(t, mb); got != "queued\n" {
		t.Errorf("run on the deleted image read %q, want its /marker", got)
	}
	for _, op := range []string{b, c} {
		if l := e.leaseOf(op); l != nil {
			<-l.done // released after the run's end, with its collection
		}
	}
	// C's result is a child of the deleted image: it keeps the layer.
	child, err := e.resolveImage(ctx, acct, oc.ResultImageUUID)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := readFile(t, e, child.UUID, "/marker"); err != nil || s != "queued\n" {
		t.Fatalf("child of the deleted image reads /marker = %q, %v", s, err)
	}
	if !onDisk(img.Layer) || !onDisk(child.Layer) {
		t.Fatal("layers of a live child collected")
	}
	if err := e.DeleteImage(ctx, acct, child.UUID); err != nil {
		t.Fatal(err)
	}
	if onDisk(img.Layer) || onDisk(child.Layer) {
		t.Errorf("layers of the deleted image (%v) and its deleted child (%v) still on disk, want both collected", onDisk(img.Layer), onDisk(child.Layer))
	}
	if !onDisk(mustImage(t, e, base).Layer) {
		t.Error("base layer collected")
	}
}

func mustImage(t *testing.T, e *Engine, id string) store.Image {
	t.Helper()
	im, err := e.resolveImage(context.Background(), acct, id) // the row, with its layer
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// TestNewImageOnParentDeletedMeanwhile: an image made on a parent that is
// deleted while its layer is written still gets the parent's chain (the
// parent's lease holds it), and the parent's layer goes with the child.
func TestNewImageOnParentDeletedMeanwhile(t *testing.T) {
	e, base := newEngine(t, "runc")
	ctx := context.Background()
	parent, err := e.NewImage(ctx, acct, base, func(dir string) error { return os.WriteFile(filepath.Join(dir, "p"), []byte("p\n"), 0o644) })
	if err != nil {
		t.Fatal(err)
	}
	player := mustImage(t, e, parent).Layer
	child, err := e.NewImage(ctx, acct, parent, func(dir string) error {
		if err := e.DeleteImage(ctx, acct, parent); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "c"), []byte("c\n"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := readFile(t, e, child, "/p"); err != nil || s != "p\n" {
		t.Fatalf("child of a parent deleted meanwhile reads /p = %q, %v", s, err)
	}
	if err := e.DeleteImage(ctx, acct, child); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.layerPath(player)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleted parent's layer still on disk after its child went: %v", err)
	}
}

// TestSquashImageDeletedMeanwhile: a squash reading the chain of an image
// deleted meanwhile finishes on it (its lease holds the chain); then the
// image's layers, the flattened one included, are collected.
func TestSquashImageDeletedMeanwhile(t *testing.T) {
	e, base := newEngine(t, "runc")
	ctx := context.Background()
	var chain []string // base, a, b
	img := base
	for _, name := range []string{"a", "b"} {
		chain = append(chain, img)
		var err error
		if img, err = e.NewImage(ctx, acct, img, func(dir string) error {
			return os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644)
		}); err != nil {
			t.Fatal(err)
		}
	}
	before := listDir(t, filepath.Join(e.Home(), "layers"))
	testHookSquashChain = func(u string) {
		if err := e.DeleteImage(ctx, acct, u); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { testHookSquashChain = nil })
	if err := e.squash(ctx, img); err != nil {
		t.Fatalf("squash of an image deleted while it ran: %v", err)
	}
	after := listDir(t, filepath.Join(e.Home(), "layers"))
	// b and its flattened chain are gone; a (still an image) and base stay.
	want := []string{mustImage(t, e, chain[0]).Layer, mustImage(t, e, chain[1]).Layer}
	slices.Sort(want)
	if !slices.Equal(after, want) {
		t.Errorf("layers after the squash = %q (before %q), want only base's and a's %q", after, before, want)
	}
}

// TestResultTag: a run's result_tag lands on its result image in the
// transaction that records the run, and only for a command that exited 0
// and changed the image; a disposable run or a bad tag is refused.
func TestResultTag(t *testing.T) {
	e, base := newEngine(t, "runc")
	ctx := context.Background()
	tagged := func(name string) string {
		t.Helper()
		im, err := e.ResolveImage(ctx, acct, "tag:"+name)
		if err != nil {
			return ""
		}
		return im.UUID
	}
	keep := func(tag string) runOpts {
		return func(r *SpawnRequest) { r.Disposable, r.ResultTag = ptr(false), ptr(tag) }
	}
	good, _ := run(t, e, base, "echo 1 > /f", keep("good"))
	if good.ResultTag != "good" || tagged("good") != good.ResultImageUUID {
		t.Fatalf("successful step: operation tag %q, tag:good on %q; want it on %s", good.ResultTag, tagged("good"), good.ResultImageUUID)
	}
	for _, tc := range []struct{ name, cmd string }{
		{"failed command", "echo 2 > /f; exit 1"},
		{"unchanged image", "true"},
	} {
		o, _ := runAny(t, e, good.ResultImageUUID, tc.cmd, keep("good"))
		if o.Status != apitypes.StatusSuccess || o.ResultTag != "" || tagged("good") != good.ResultImageUUID {
			t.Errorf("%s: %s, operation tag %q, tag:good on %q; want it left on %s", tc.name, o.Status, o.ResultTag, tagged("good"), good.ResultImageUUID)
		}
	}
	for _, req := range []SpawnRequest{
		{Command: "true", Image: base, Disposable: ptr(true), ResultTag: ptr("x")},
		{Command: "true", Image: base, Disposable: ptr(false), ResultTag: ptr("bad tag!")},
	} {
		if _, _, err := e.Spawn(ctx, acct, req); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Spawn(disposable %v, result_tag %q) = %v, want invalid argument", *req.Disposable, *req.ResultTag, err)
		}
	}
}
