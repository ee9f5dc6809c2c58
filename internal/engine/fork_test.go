package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/errdefs"
)

// waitStdout follows the main process's stdout until it holds want and
// returns what it holds then.
func waitStdout(t testing.TB, e *Engine, op, want string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := stdoutHolds(ctx, e, op, want)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// stdoutHolds is waitStdout without a test.
func stdoutHolds(ctx context.Context, e *Engine, op, want string) (string, error) {
	var out strings.Builder
	found := errors.New("found")
	spid := 1
	err := e.FollowEvents(ctx, acct, op, FollowOptions{After: -1, Follow: true, Spid: &spid}, func(ev Event) error {
		if ev.Type != apitypes.EventStdout {
			return nil
		}
		var d apitypes.EventDataStream
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return err
		}
		b, err := apitypes.StreamRepr{Value: d.Value, Encoding: d.Encoding}.Bytes()
		if err != nil {
			return err
		}
		out.Write(b)
		if strings.Contains(out.String(), want) {
			return found
		}
		return nil
	})
	if !errors.Is(err, found) {
		return "", fmt.Errorf("operation %s: stdout %q never held %q (%v)", op, out.String(), want, err)
	}
	return out.String(), nil
}

// say writes line to the main process's stdin, closing it if last.
func say(t *testing.T, e *Engine, op, line string, last bool) {
	t.Helper()
	if err := e.WriteStdin(context.Background(), acct, op, 1, Stdin{Value: line + "\n", Close: ptr(last)}); err != nil {
		t.Fatalf("stdin of %s: %v", op, err)
	}
}

// startCounter spawns forkScript, gives it the line "a" and waits for its
// answer.
func startCounter(t *testing.T, e *Engine, base string) string {
	t.Helper()
	op, _, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: forkScript, Image: base, Shell: ptr(true),
		Stdin: &Stdin{Value: "a\n", Close: ptr(false)}})
	if err != nil {
		t.Fatal(err)
	}
	waitStdout(t, e, op, "a 1\n")
	return op
}

// forkScript numbers the lines it reads, in memory (i) and in a file, and
// prints the file when its stdin ends.
const forkScript = `i=0; while read l; do i=$((i+1)); echo "$l $i" >> /root/log; echo "$l $i"; done; echo log:; cat /root/log`

// TestForkLive forks a running instance into two copies: each continues
// from the parent's memory and files at the fork point, then diverges; the
// parent goes on unaffected; a copy forks again; the fork point is an
// image in the lineage, under which every copy's snapshot hangs.
func TestForkLive(t *testing.T) {
	for _, warm := range []bool{false, true} {
		name := "cold"
		if warm {
			name = "warm"
		}
		t.Run(name, func(t *testing.T) {
			var e *Engine
			var base string
			if warm {
				e, base = newWarmEngine(t, "runsc")
				run(t, e, base, "true", disposable)
				waitIdle(t, e, base, 1)
			} else {
				e, base = newEngine(t, "runsc")
			}
			ctx := context.Background()
			parent, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: forkScript, Image: base, Shell: ptr(true),
				Stdin: &Stdin{Value: "a\n", Close: ptr(false)}})
			if err != nil {
				t.Fatal(err)
			}
			waitStdout(t, e, parent, "a 1\n")
			res, err := e.Fork(ctx, acct, parent, ForkRequest{Count: 2})
			if err != nil {
				t.Fatalf("Fork: %v", err)
			}
			if len(res.Operations) != 2 || res.Image == "" || res.Image == base || res.CheckpointBytes <= 0 {
				t.Fatalf("Fork = %+v, want 2 operations, a new fork-point image and the checkpoint's size", res)
			}
			t.Logf("checkpoint of the shell: %d bytes", res.CheckpointBytes)
			f0, f1 := res.Operations[0], res.Operations[1]
			say(t, e, f0, "x", false)
			waitStdout(t, e, f0, "x 2\n")
			say(t, e, f1, "y", false)
			say(t, e, f1, "y", false)
			waitStdout(t, e, f1, "y 3\n")
			say(t, e, parent, "b", false)
			waitStdout(t, e, parent, "b 2\n")

			// A copy forks again, from where it stands.
			res2, err := e.Fork(ctx, acct, f0, ForkRequest{})
			if err != nil {
				t.Fatalf("fork of a fork: %v", err)
			}
			f00 := res2.Operations[0]
			say(t, e, f00, "z", true)
			say(t, e, f0, "x", true)
			say(t, e, f1, "y", true)
			say(t, e, parent, "b", true)

			want := map[string]string{
				parent: "log:\na 1\nb 2\nb 3\n",
				f0:     "log:\na 1\nx 2\nx 3\n",
				f1:     "log:\na 1\ny 2\ny 3\ny 4\n",
				f00:    "log:\na 1\nx 2\nz 3\n",
			}
			for op, w := range want {
				waitStdout(t, e, op, w)
				o := waitOp(t, e, op)
				if o.Status != apitypes.StatusSuccess {
					t.Fatalf("operation %s: %s %s", op, o.Status, o.Error)
				}
				l, err := e.Lineage(ctx, acct, o.ResultImageUUID)
				if err != nil {
					t.Fatal(err)
				}
				wantParent := res.Image
				switch op {
				case parent:
					wantParent = base
				case f00:
					wantParent = res2.Image
				}
				if len(l.Ancestors) == 0 || l.Ancestors[0].UUID != wantParent {
					t.Errorf("operation %s: result's ancestors %+v, want the parent %s first", op, l.Ancestors, wantParent)
				}
			}
			l, err := e.Lineage(ctx, acct, res.Image)
			if err != nil || len(l.Ancestors) == 0 || l.Ancestors[0].UUID != base {
				t.Errorf("fork point's lineage %+v (%v), want a child of the base image", l, err)
			}
		})
	}
}

// TestForkNeedsRunsc: a runc instance cannot be forked, and says why.
func TestForkNeedsRunsc(t *testing.T) {
	e, base := newEngine(t, "runc")
	ctx := context.Background()
	op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "cat", Image: base,
		Stdin: &Stdin{Value: "", Close: ptr(false)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Fork(ctx, acct, op, ForkRequest{Count: 2}); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "runsc") {
		t.Errorf("Fork of a runc instance = %v, want a failed precondition naming runsc", err)
	}
	if _, err := e.Fork(ctx, acct, op, ForkRequest{Count: 99}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Fork into 99 = %v, want an invalid argument", err)
	}
	say(t, e, op, "", true)
	waitOp(t, e, op)
}

// TestForkNeedsOpenStdin: a cold batch run (stdin closed) is not booted
// forkable, and a fork says how to spawn one that is.
func TestForkNeedsOpenStdin(t *testing.T) {
	e, base := newEngine(t, "runsc")
	ctx := context.Background()
	op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "echo up; exec sleep 60", Shell: ptr(true), Image: base, Disposable: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	waitStdout(t, e, op, "up\n")
	if _, err := e.Fork(ctx, acct, op, ForkRequest{}); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "stdin.close=false") {
		t.Errorf("Fork of a batch run = %v, want a failed precondition naming stdin.close=false", err)
	}
	if err := e.Cancel(ctx, acct, op); err != nil {
		t.Fatal(err)
	}
	waitOp(t, e, op)
}

// crashInFork is TestKill9Recovery's helper for a daemon killed mid-fork:
// it starts req as a forkable instance, prints its id, waits until its
// stdout holds ready, then forks it and prints "forking" while the parent
// is paused with its checkpoint written and its upper copied (or, with
// restored, once the copies' sandboxes are restored, the fork point
// committed), and blocks there.
func crashInFork(ctx context.Context, e *Engine, req SpawnRequest, ready string, restored bool) {
	req.Image, req.Stdin = os.Getenv("ARBOR_CRASH_IMAGE"), &Stdin{Value: "", Close: ptr(false)}
	op, _, err := e.Spawn(ctx, acct, req)
	if err == nil {
		fmt.Println("op", op)
		_, err = stdoutHolds(ctx, e, op, ready)
	}
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	var once sync.Once
	hook := func() {
		once.Do(func() { fmt.Println("forking") })
		select {}
	}
	if restored {
		testHookForkRestored = hook
	} else {
		testHookForkQuiet = hook
	}
	if _, err := e.Fork(ctx, acct, op, ForkRequest{Count: 2}); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	select {}
}

// TestForkConcurrent: forks of one instance asked at once are taken one
// after the other (a sandbox cannot be paused twice), and all succeed.
func TestForkConcurrent(t *testing.T) {
	e, base := newEngine(t, "runsc")
	ctx := context.Background()
	op := startCat(t, e, base)
	errs := make(chan error, 3)
	ops := make(chan string, 3)
	for range 3 {
		go func() {
			res, err := e.Fork(ctx, acct, op, ForkRequest{})
			for _, f := range res.Operations {
				ops <- f
			}
			errs <- err
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Fork: %v", err)
		}
	}
	close(ops)
	for f := range ops {
		say(t, e, f, "", true)
		waitOp(t, e, f)
	}
	say(t, e, op, "", true)
	waitOp(t, e, op)
}

// TestForkPauseParent: with PauseParent the parent stays stopped at the
// fork point (its copy runs) until a CONT signal to its main process.
func TestForkPauseParent(t *testing.T) {
	e, base := newEngine(t, "runsc")
	ctx := context.Background()
	parent := startCounter(t, e, base)
	res, err := e.Fork(ctx, acct, parent, ForkRequest{PauseParent: true})
	if err != nil {
		t.Fatal(err)
	}
	say(t, e, parent, "b", false)
	f := res.Operations[0]
	say(t, e, f, "x", true)
	waitStdout(t, e, f, "x 2\n")
	// The copy has answered and ended; the parent, paused, has not.
	if o := waitOp(t, e, f); o.Status != apitypes.StatusSuccess {
		t.Fatalf("copy: %s %s", o.Status, o.Error)
	}
	if r, err := e.SubprocessResult(ctx, acct, parent, 1); err != nil || strings.Contains(r.Stdout.Value, "b 2") {
		t.Fatalf("paused parent answered: %+v %v", r.Stdout, err)
	}
	if err := e.KillSubprocess(ctx, acct, parent, 1, "CONT"); err != nil {
		t.Fatal(err)
	}
	waitStdout(t, e, parent, "b 2\n")
	// A paused parent can still be cancelled (or time out).
	res, err = e.Fork(ctx, acct, parent, ForkRequest{PauseParent: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Cancel(ctx, acct, parent); err != nil {
		t.Fatal(err)
	}
	if o := waitOp(t, e, parent); o.Status != apitypes.StatusCancelled {
		t.Fatalf("cancelled paused parent: %s %s", o.Status, o.Error)
	}
	for deadline := time.Now().Add(30 * time.Second); ; { // forgotten once its end is seen
		if _, paused := pausedParents.Load(parent); !paused {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a cancelled parent is still listed as paused")
		}
		time.Sleep(10 * time.Millisecond) // the watcher's wake-up is not observable
	}
	say(t, e, res.Operations[0], "", true)
	waitOp(t, e, res.Operations[0])
}

// TestForkNetworked: a copy of a networked instance gets a network of its
// own and reaches the outside through it.
func TestForkNetworked(t *testing.T) {
	e, base := newEngine(t, "runsc")
	srv := serverNetns(t)
	ctx := context.Background()
	script := `i=0; while read l; do i=$((i+1)); printf 'GET /hello.txt HTTP/1.0\r\n\r\n' | nc -w 5 ` + srv + ` 18080 | tail -n 1; echo "$l $i"; done`
	op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: script, Shell: ptr(true), Image: base, Disposable: ptr(true),
		Networking: &Networking{Enabled: ptr(true)}, Stdin: &Stdin{Value: "a\n", Close: ptr(false)}})
	if err != nil {
		t.Fatal(err)
	}
	waitStdout(t, e, op, "hello from outside\na 1\n")
	res, err := e.Fork(ctx, acct, op, ForkRequest{})
	if err != nil {
		t.Fatal(err)
	}
	f := res.Operations[0]
	say(t, e, f, "x", true)
	waitStdout(t, e, f, "hello from outside\nx 2\n")
	say(t, e, op, "b", true)
	waitStdout(t, e, op, "hello from outside\nb 2\n")
	for _, o := range []string{op, f} {
		if got := waitOp(t, e, o); got.Status != apitypes.StatusSuccess {
			t.Errorf("operation %s: %s %s", o, got.Status, got.Error)
		}
	}
}

// TestForkResumesParentAside: a fork's copies are started without waiting
// for the parent's resume, which follows beside them; the parent then
// goes on.
func TestForkResumesParentAside(t *testing.T) {
	e, base := newEngine(t, "runsc")
	ctx := context.Background()
	parent := startCounter(t, e, base)
	held, hold := make(chan struct{}), make(chan struct{})
	testHookForkResume = func() { close(held); <-hold }
	resume := sync.OnceFunc(func() { close(hold) })
	defer func() { resume(); testHookForkResume = nil }() // also on a failure: the engine's close waits for the resume
	res, err := e.Fork(ctx, acct, parent, ForkRequest{})
	if err != nil {
		t.Fatal(err)
	}
	<-held
	f := res.Operations[0]
	say(t, e, f, "x", true)
	waitStdout(t, e, f, "x 2\n") // while the parent is still stopped
	resume()
	say(t, e, parent, "b", true)
	waitStdout(t, e, parent, "b 2\n")
	for _, o := range []string{parent, f} {
		if got := waitOp(t, e, o); got.Status != apitypes.StatusSuccess {
			t.Errorf("operation %s: %s %s", o, got.Status, got.Error)
		}
	}
}
