package engine

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/layerfs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/testutil"
)

// coldInitBeside puts arbor's C init beside the Go init at goInit, where
// the engine finds it (as setup.sh builds bin/arbor-init-c beside
// bin/arbor-init), so cold batch runs of every engine test start it.
func coldInitBeside(goInit string) error {
	c, err := testutil.ColdInit()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(c)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(filepath.Dir(goInit), "arbor-init-c"), b, 0o755)
}

// newInitEngine is a cold engine (pool off) whose batch runs start the C
// init, or the Go init if goInit.
func newInitEngine(t *testing.T, rt string, goInit bool) (*Engine, string) {
	t.Helper()
	testutil.RequiresRoot(t)
	cfg := Config{Home: testutil.Home(t), Runtime: rt, InitBinary: staticInit(t), WarmPerImage: -1}
	if goInit {
		cfg.ColdInit = "off"
	}
	e, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if (e.coldInit == "") != goInit {
		t.Fatalf("engine's C init %q with goInit %v", e.coldInit, goInit)
	}
	return e, busybox(t, e)
}

// TestColdInitMatchesGo runs the same batch runs through the C init and
// through the Go init, under each runtime, and requires the same results:
// output, exit codes and signals, timeouts, output caps, the file size
// limit, credentials, events and result images.
func TestColdInitMatchesGo(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			ce, cbase := newInitEngine(t, rt, false)
			ge, gbase := newInitEngine(t, rt, true)
			for _, tc := range []struct {
				name, cmd string
				opts      []runOpts
			}{
				{"output and exit code", "echo out; echo err >&2; exit 3", nil},
				{"stdin", "cat; echo", []runOpts{func(r *SpawnRequest) { r.Stdin = &Stdin{Value: "hello"} }}},
				{"killed by a signal", "kill -TERM $$", nil},
				{"timeout", "echo up; sleep 100", []runOpts{func(r *SpawnRequest) { r.Timeout = ptr(1.0) }}},
				{"output cap", "yes | head -c 100000", []runOpts{func(r *SpawnRequest) { r.TruncateOutputAt = ptr(int64(100)) }}},
				{"file size limit", "head -c 100000 /dev/zero > /big; echo $?", []runOpts{func(r *SpawnRequest) {
					r.ResourcesLimits = &oplog.ResourcesLimits{MaxLayerBytes: ptr(int64(50000))}
				}}},
				{"credentials", "id -u; id -g; id -G", []runOpts{func(r *SpawnRequest) { r.UID, r.GID, r.Cwd = ptr(1000), ptr(1001), ptr("/") }}},
				{"cwd not permitted", "id -u", []runOpts{func(r *SpawnRequest) { r.UID, r.GID, r.Cwd = ptr(1000), ptr(1001), ptr("/root") }}},
				{"not found", "/no/such", []runOpts{func(r *SpawnRequest) { r.Shell = ptr(false) }}},
				{"env, cwd and writes", "echo $X; pwd; echo new > /root/new; rm /etc/hostname; mkdir -p /w/d", []runOpts{func(r *SpawnRequest) {
					r.Env, r.Cwd = map[string]string{"X": "y"}, ptr("/work/here")
				}}},
				{"background holder", "sleep 100 & echo bg", nil},
				// ls before grep, not in a pipeline: a pipeline's count depends on
				// whether grep is forked before ls reads /proc (3 or 4); /dev/shm
				// is not in the result image.
				{"process tree", "echo $PPID; tr '\\0' ' ' < /proc/1/cmdline; echo; ls /proc > /dev/shm/procs; grep -c '^[0-9]' /dev/shm/procs", nil},
				{"only stdio", "ls /proc/self/fd | wc -l", nil},
				{"pid 1 survives signals", "for s in 1 2 3 15 10 12; do kill -$s 1; done; sleep 0.2; echo alive", nil},
			} {
				t.Run(tc.name, func(t *testing.T) {
					cop, cm := runAny(t, ce, cbase, tc.cmd, tc.opts...)
					gop, gm := runAny(t, ge, gbase, tc.cmd, tc.opts...)
					if cop.Status != gop.Status || cop.Error != gop.Error {
						t.Fatalf("operation: C init %s (%s), Go init %s (%s)", cop.Status, cop.Error, gop.Status, gop.Error)
					}
					if (cm.Result == nil) != (gm.Result == nil) {
						t.Fatalf("result: C init %+v, Go init %+v", cm.Result, gm.Result)
					}
					if cm.Result == nil {
						return
					}
					if tc.name == "file size limit" {
						// The size watcher's kill races the command's own SIGXFSZ
						// (either inits' run can see either first): the outcome
						// (FAILED, the size cap's error), compared above, is what
						// must match.
						return
					}
					cs, gs := cm.Result.State, gm.Result.State
					cs.Pid, gs.Pid = 0, 0
					if cs != gs {
						t.Errorf("state: C init %+v, Go init %+v", cs, gs)
					}
					if c, g := stdout(t, cm), stdout(t, gm); c != g {
						t.Errorf("stdout: C init %q, Go init %q", c, g)
					}
					cerr, _ := cm.Result.Stderr.Bytes()
					gerr, _ := gm.Result.Stderr.Bytes()
					if string(cerr) != string(gerr) || cm.Result.Stdout.Truncated != gm.Result.Stdout.Truncated {
						t.Errorf("stderr: C init %q (truncated %v), Go init %q (%v)", cerr, cm.Result.Stdout.Truncated, gerr, gm.Result.Stdout.Truncated)
					}
					if c, g := outputUnordered(eventTypes(t, ce, cop.UUID)), outputUnordered(eventTypes(t, ge, gop.UUID)); !reflect.DeepEqual(c, g) {
						t.Errorf("events: C init %v, Go init %v", c, g)
					}
					if cop.Status != apitypes.StatusSuccess {
						return
					}
					if (cop.ResultImageUUID == cbase) != (gop.ResultImageUUID == gbase) {
						t.Fatalf("result image: C init %s (base %s), Go init %s (base %s)", cop.ResultImageUUID, cbase, gop.ResultImageUUID, gbase)
					}
					if cop.ResultImageUUID == cbase {
						return
					}
					ctx := context.Background()
					a, ra, err := ce.ImageFS(ctx, acct, cop.ResultImageUUID)
					if err != nil {
						t.Fatal(err)
					}
					defer ra()
					b, rb, err := ge.ImageFS(ctx, acct, gop.ResultImageUUID)
					if err != nil {
						t.Fatal(err)
					}
					defer rb()
					changes, err := layerfs.Diff(ctx, a, b, layerfs.DiffOptions{})
					if err != nil {
						t.Fatal(err)
					}
					if len(changes) != 0 {
						t.Errorf("C init's result image differs from the Go init's: %+v", changes)
					}
				})
			}
		})
	}
}

// outputUnordered sorts each run of stdout and stderr events: the two
// streams come through separate pipes, in no fixed order between them.
func outputUnordered(types []string) []string {
	out := slices.Clone(types)
	isOut := func(s string) bool { return s == apitypes.EventStdout || s == apitypes.EventStderr }
	for i := 0; i < len(out); {
		j := i
		for j < len(out) && isOut(out[j]) {
			j++
		}
		if j > i {
			slices.Sort(out[i:j])
			i = j
		} else {
			i++
		}
	}
	return out
}

// runAny is run for runs that may fail.
func runAny(t *testing.T, e *Engine, image, cmd string, opts ...runOpts) (Operation, apitypes.InstanceMetadata) {
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
	return waitMeta(t, e, op, cmd)
}

// TestColdInitSignal: a signal sent through the engine reaches the
// command of a C init's cold run, which reports the death by it.
func TestColdInitSignal(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newInitEngine(t, rt, false)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			sh := true
			op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "echo ready; exec sleep 100", Image: base, Shell: &sh})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stdoutHolds(ctx, e, op, "ready\n"); err != nil {
				t.Fatal(err)
			}
			if err := e.Signal(ctx, acct, op, 1, syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			o, m := waitMeta(t, e, op, "echo ready; exec sleep 100")
			if m.Result == nil || m.Result.State.Signal != int(syscall.SIGUSR1) || m.Result.State.ExitCode != -1 {
				t.Fatalf("after SIGUSR1: %s", o.Metadata)
			}
		})
	}
}
