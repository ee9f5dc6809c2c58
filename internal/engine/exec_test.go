package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/oplog"
)

// TestSubprocesses covers stdin kept open, exec'd processes, their stdin
// and signals, and signals to the main process, cold and warm.
func TestSubprocesses(t *testing.T) {
	for _, tc := range []struct {
		rt   string
		warm bool
	}{{"runsc", false}, {"runc", false}, {"runsc", true}} {
		name := tc.rt
		if tc.warm {
			name += "/warm"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var e *Engine
			var base string
			if tc.warm {
				e, base = newWarmEngine(t, tc.rt)
				run(t, e, base, "true", disposable)
			} else {
				e, base = newEngine(t, tc.rt)
			}
			ctx := context.Background()
			if tc.warm {
				waitIdle(t, e, base, 1)
			}
			// The main process reads stdin until it is closed.
			op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "cat; echo main-done", Image: base, Shell: ptr(true),
				Stdin: &Stdin{Value: "first\n", Close: ptr(false)}})
			if err != nil {
				t.Fatal(err)
			}
			spid, err := e.Exec(ctx, acct, op, ExecRequest{Command: "cat", Stdin: &Stdin{Value: "", Close: ptr(false)}})
			if err != nil || spid != 2 {
				t.Fatalf("Exec = %d, %v; want spid 2", spid, err)
			}
			if err := e.WriteStdin(ctx, acct, op, spid, Stdin{Value: "hello\n", Close: ptr(true)}); err != nil {
				t.Fatal(err)
			}
			r := waitSub(t, e, op, spid)
			if b, _ := r.Stdout.Bytes(); string(b) != "hello\n" || r.State.ExitCode != 0 {
				t.Fatalf("subprocess stdout %q exit %d, want hello and 0", b, r.State.ExitCode)
			}
			spid3, err := e.Exec(ctx, acct, op, ExecRequest{Command: "sleep 100", Shell: ptr(true)})
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond) // deliberate: let the shell reach sleep, so TERM kills a running command
			if err := e.KillSubprocess(ctx, acct, op, spid3, "TERM"); err != nil {
				t.Fatal(err)
			}
			r3 := waitSub(t, e, op, spid3)
			if r3.State.ExitCode == 0 {
				t.Fatalf("killed subprocess exit %+v", r3.State)
			}
			// The parent is still running; closing its stdin ends it.
			if err := e.WriteStdin(ctx, acct, op, 1, Stdin{Value: "second\n", Close: ptr(true)}); err != nil {
				t.Fatal(err)
			}
			o, _ := e.WaitOperation(ctx, acct, op)
			r1, _ := e.SubprocessResult(ctx, acct, op, 1)
			if b, _ := r1.Stdout.Bytes(); string(b) != "first\nsecond\nmain-done\n" || o.Status != apitypes.StatusSuccess {
				t.Fatalf("main stdout %q status %s", b, o.Status)
			}
			if _, err := e.Exec(ctx, acct, op, ExecRequest{Command: "true"}); err == nil {
				t.Fatal("exec into a finished instance succeeded")
			}
			// sleeper starts a disposable `sleep secs` (warm if the pool is on).
			sleeper := func(secs string) string {
				t.Helper()
				if tc.warm {
					waitIdle(t, e, base, 1)
				}
				op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "sleep", Args: []string{secs}, Image: base, Disposable: ptr(true)})
				if err != nil {
					t.Fatal(err)
				}
				return op
			}
			// retry calls fn once (Signal and Exec wait for the main
			// process to start), failing the test on an error.
			retry := func(fn func() error) {
				t.Helper()
				if err := fn(); err != nil {
					t.Fatal(err)
				}
			}
			// A signal to the main process kills it: signal 15, exit code -1.
			op = sleeper("100")
			retry(func() error { return e.KillSubprocess(ctx, acct, op, 1, "TERM") })
			r1 = waitSub(t, e, op, 1)
			if r1.State.ExitCode != -1 || r1.State.Signal != 15 {
				t.Errorf("main process after TERM: %+v, want signal 15, exit code -1", r1.State)
			}
			// Exec'd processes die with the main process.
			op = sleeper("1")
			retry(func() (err error) {
				spid, err = e.Exec(ctx, acct, op, ExecRequest{Command: "sleep", Args: []string{"100"}})
				return err
			})
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if o, err := e.WaitOperation(wctx, acct, op); err != nil || o.Status != apitypes.StatusSuccess {
				t.Fatalf("run with a live exec'd process: %v %s %s", err, o.Status, o.Error)
			}
			if r := waitSub(t, e, op, spid); r.State.ExitCode == 0 {
				t.Errorf("exec'd process outlived the main one: %+v", r.State)
			}
			if tc.warm && e.WarmStats().Hits != 3 {
				t.Errorf("runs not served warm: %+v", e.WarmStats())
			}
		})
	}
}

func waitSub(t *testing.T, e *Engine, op string, spid int) oplog.InstanceResult {
	t.Helper()
	if err := followExit(e, op, spid, 30*time.Second); err != nil {
		t.Fatalf("follow process %d: %v%s", spid, err, sandboxProcesses(e, op))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := e.SubprocessResult(ctx, acct, op, spid)
	if err != nil {
		t.Fatal(err)
	}
	if r.State.ExitCode == -1 && r.State.Signal == -1 {
		t.Fatalf("process %d did not exit: %+v", spid, r.State)
	}
	return r
}

// followExit waits up to d for process spid's exit event.
func followExit(e *Engine, op string, spid int, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	exited := errors.New("exited")
	err := e.FollowEvents(ctx, acct, op, FollowOptions{After: -1, Follow: true, Spid: &spid}, func(ev Event) error {
		if ev.Type == apitypes.EventExit {
			return exited
		}
		return nil
	})
	if errors.Is(err, exited) {
		return nil
	}
	return err
}

// sandboxProcesses lists, for a failure message, what runs in op's sandbox
// (ps through one more exec) and the runtime processes on the host that
// name it: enough to tell which hop held up an exit.
func sandboxProcesses(e *Engine, op string) string {
	var b strings.Builder
	if spid, err := e.Exec(context.Background(), acct, op, ExecRequest{Command: "ps", Args: []string{"-o", "pid,ppid,stat,args"}}); err != nil {
		fmt.Fprintf(&b, "\nps in the sandbox: %v", err)
	} else if err := followExit(e, op, spid, 10*time.Second); err != nil {
		fmt.Fprintf(&b, "\nps in the sandbox did not end: %v", err)
	} else if r, err := e.SubprocessResult(context.Background(), acct, op, spid); err == nil {
		out, _ := r.Stdout.Bytes()
		fmt.Fprintf(&b, "\nin the sandbox:\n%s", out)
	}
	if out, err := exec.Command("pgrep", "-af", op).CombinedOutput(); err == nil {
		fmt.Fprintf(&b, "host processes naming %s:\n%s", op, out)
	}
	return b.String()
}

// TestSubprocessExitStatus: an exec'd process killed by a signal reports
// the signal (exit code -1); one that exits with a code above 128 reports
// that code, cold and warm, under each runtime.
func TestSubprocessExitStatus(t *testing.T) {
	type state struct{ code, signal int }
	for _, rt := range runtimes {
		for _, warm := range []bool{false, true} {
			name := rt + "/cold"
			if warm {
				name = rt + "/warm"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var e *Engine
				var base string
				if warm {
					e, base = newWarmEngine(t, rt)
					run(t, e, base, "true", disposable)
					waitIdle(t, e, base, 1)
				} else {
					e, base = newEngine(t, rt)
				}
				ctx := context.Background()
				op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "sleep", Args: []string{"60"}, Image: base, Disposable: ptr(true)})
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = e.Cancel(ctx, acct, op) }()
				for cmd, want := range map[string]state{
					"kill -9 $$":    {-1, 9},
					"kill -TERM $$": {-1, 15},
					"exit 137":      {137, -1},
					"exit 3":        {3, -1},
				} {
					spid, err := e.Exec(ctx, acct, op, ExecRequest{Command: cmd, Shell: ptr(true)}) // waits for the main process
					if err != nil {
						t.Fatal(err)
					}
					r := waitSub(t, e, op, spid)
					if got := (state{r.State.ExitCode, r.State.Signal}); got != want {
						t.Errorf("%s: exit code %d signal %d, want %d %d", cmd, got.code, got.signal, want.code, want.signal)
					}
				}
				// The wrapper runs as root and the command as the asked user.
				spid, err := e.Exec(ctx, acct, op, ExecRequest{Command: "id -u; id -g", Shell: ptr(true), UID: ptr(1000), GID: ptr(1001)})
				if err != nil {
					t.Fatal(err)
				}
				if r := waitSub(t, e, op, spid); r.State.ExitCode != 0 {
					t.Errorf("id as 1000: %+v", r.State)
				} else if b, _ := r.Stdout.Bytes(); string(b) != "1000\n1001\n" {
					t.Errorf("id as 1000:1001: %q", b)
				}
			})
		}
	}
}

// TestSignalRightAfterExec: a signal sent as soon as Exec has handed out
// the spid reaches the command. The runtime process forwards signals only
// once it has set that up; one that came earlier ended the runtime and
// left the command running in the sandbox (CI saw a TERM lost this way).
func TestSignalRightAfterExec(t *testing.T) {
	for _, rt := range []string{"runc", "runsc"} {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newEngine(t, rt)
			ctx := context.Background()
			op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "cat", Image: base, Disposable: ptr(true),
				Stdin: &Stdin{Value: "", Close: ptr(false)}})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				spid, err := e.Exec(ctx, acct, op, ExecRequest{Command: "sleep", Args: []string{"1000" + string(rune('0'+i))}})
				if err != nil {
					t.Fatal(err)
				}
				if err := e.KillSubprocess(ctx, acct, op, spid, "TERM"); err != nil {
					t.Fatal(err)
				}
				if r := waitSub(t, e, op, spid); r.State.ExitCode == 0 {
					t.Fatalf("killed subprocess exited 0: %+v", r.State)
				}
			}
			ps, err := e.Exec(ctx, acct, op, ExecRequest{Command: "ps"})
			if err != nil {
				t.Fatal(err)
			}
			r := waitSub(t, e, op, ps)
			if out, _ := r.Stdout.Bytes(); strings.Contains(string(out), "sleep 1000") {
				t.Errorf("a TERMed subprocess still runs:\n%s", out)
			}
			if err := e.WriteStdin(ctx, acct, op, 1, Stdin{Value: "", Close: ptr(true)}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestExecStartedAfterMainExit: a process exec'd into a warm instance
// while its main process runs, but started by the runtime only after the
// main process exited and the init killed everything (a runtime's exec
// takes tens of milliseconds to start one), ends with the sandbox: the
// run finishes (it used to wait for that process for as long as it ran),
// the step's image is committed, and the sandbox does not continue.
func TestExecStartedAfterMainExit(t *testing.T) {
	for _, rt := range []string{"runc", "runsc"} {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newWarmEngine(t, rt)
			run(t, e, base, "true", disposable)
			waitIdle(t, e, base, 1)
			ctx := context.Background()
			e.beforeExec = func(op string) {
				// Hold the exec until the main process's exit is recorded.
				deadline := time.Now().Add(30 * time.Second)
				for time.Now().Before(deadline) {
					a := e.activeOf(op)
					if a == nil {
						return
					}
					a.mu.Lock()
					exited := a.exited
					a.mu.Unlock()
					if exited {
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "sleep 0.3; echo step > /root/step", Image: base, Shell: ptr(true)})
			if err != nil {
				t.Fatal(err)
			}
			var spid int
			for try := 0; ; try++ { // Exec waits for the main process to start
				spid, err = e.Exec(ctx, acct, op, ExecRequest{Command: "sleep 100; echo late > /root/late", Shell: ptr(true)})
				if err == nil || try == 50 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			o, err := e.WaitOperation(wctx, acct, op)
			if err != nil || o.Status != apitypes.StatusSuccess {
				t.Fatalf("run whose exec'd process started after the main one exited: %v %s %v", err, o.Status, o.Error)
			}
			if r := waitSub(t, e, op, spid); r.State.ExitCode == 0 {
				t.Errorf("the late exec'd process exited 0: %+v", r.State)
			}
			if o.ResultImageUUID == "" || o.ResultImageUUID == base {
				t.Fatalf("the step made no image: %q", o.ResultImageUUID)
			}
			e.beforeExec = nil
			// The next step on the image gets another sandbox, which has the
			// step's file and no trace of the late process.
			_, meta := run(t, e, o.ResultImageUUID, "cat /root/step; ls /root; ps | grep -c 'sleep 10[0]' || true")
			if out, _ := meta.Result.Stdout.Bytes(); string(out) != "step\nstep\n0\n" {
				t.Errorf("next step saw %q, want the step's file alone and no late process", out)
			}
		})
	}
}

// TestStdinEventsCut: a large stdin write is logged as events of at most
// maxEventBytes, as output is, so no SSE frame reaches the clients' 4 MiB
// parser cap; together they are exactly what was written, and the process
// reads all of it.
func TestStdinEventsCut(t *testing.T) {
	e, base := newEngine(t, "runc")
	ctx := context.Background()
	op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "wc -c", Image: base, Shell: ptr(true), Stdin: &Stdin{Close: ptr(false)}})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("<&>0123456789\n"), 3*maxEventBytes/14+5) // past three events; < & > grow in JSON
	if err := e.WriteStdin(ctx, acct, op, 1, Stdin{Value: string(data), Close: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	_, m := waitMeta(t, e, op, "wc -c")
	if got := strings.TrimSpace(stdout(t, m)); got != strconv.Itoa(len(data)) {
		t.Fatalf("wc -c read %s bytes, want %d", got, len(data))
	}
	var logged []byte
	n := 0
	err = e.FollowEvents(ctx, acct, op, FollowOptions{After: -1}, func(ev Event) error {
		if ev.Type != oplog.EventStdin {
			return nil
		}
		var s oplog.StreamRepr
		if err := json.Unmarshal(ev.Data, &s); err != nil {
			return err
		}
		b, err := s.Bytes()
		if err != nil {
			return err
		}
		if len(b) > maxEventBytes {
			t.Errorf("stdin event of %d bytes, over %d", len(b), maxEventBytes)
		}
		logged = append(logged, b...)
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 4 || !bytes.Equal(logged, data) {
		t.Errorf("%d stdin events holding %d bytes, want at least 4 holding the %d written", n, len(logged), len(data))
	}
}
