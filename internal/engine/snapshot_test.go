package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/layerfs"
	"github.com/arborsh/arbor/internal/store"
)

// TestShellArgs: with shell=true the args are appended to the command line,
// each quoted, as ConTree's CLI expects when it runs a local script as
// "/bin/sh -s -- ARGS" with the script on stdin; the spawn event shows the
// line that ran.
func TestShellArgs(t *testing.T) {
	e, base := newEngine(t, "runc")
	args := []string{"-s", "--", "a1", "b 2", "it's", "$HOME", "", "*"}
	script := `printf '[%s]' "$#" "$1" "$2" "$3" "$4" "$5" "$6"`
	o, m := run(t, e, base, "/bin/sh", func(r *SpawnRequest) {
		r.Args = args
		r.Stdin = &Stdin{Value: script}
	})
	if got, want := stdout(t, m), "[6][a1][b 2][it's][$HOME][][*]"; got != want {
		t.Errorf("script saw %q, want %q", got, want)
	}
	evs, err := e.st.Events(context.Background(), o.UUID, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var spawn apitypes.EventDataSpawn
	for _, ev := range evs {
		if ev.Type == apitypes.EventSpawn {
			if err := json.Unmarshal([]byte(ev.Data), &spawn); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := []string{"-c", `/bin/sh -s -- a1 'b 2' 'it'\''s' '$HOME' '' '*'`}
	if spawn.Command != "/bin/sh" || !reflect.DeepEqual(spawn.Args, want) || !spawn.Shell {
		t.Errorf("spawn event command %q args %q shell %v, want /bin/sh %q true", spawn.Command, spawn.Args, spawn.Shell, want)
	}
	if !reflect.DeepEqual(m.Args, args) {
		t.Errorf("metadata args %q, want the request's %q", m.Args, args)
	}
}

// TestPreserveEnvWithoutFileChanges: a preserve_env run that writes no file
// still saves its environment in a new image when that environment differs
// from the input's; one that changes nothing returns its input image.
func TestPreserveEnvWithoutFileChanges(t *testing.T) {
	e, base := newEngine(t, "runc")
	preserve := func(env map[string]string) runOpts {
		return func(r *SpawnRequest) { r.PreserveEnv = ptr(true); r.Env = env }
	}
	o, _ := run(t, e, base, "true", preserve(map[string]string{"FOO": "bar"}))
	if o.ResultImageUUID == base || o.ResultImageUUID == "" {
		t.Fatalf("preserve_env run returned image %q, want a new image holding FOO", o.ResultImageUUID)
	}
	withFoo := o.ResultImageUUID
	if _, m := run(t, e, withFoo, "echo $FOO"); stdout(t, m) != "bar\n" {
		t.Fatalf("next run sees FOO=%q, want bar", stdout(t, m))
	}
	// Nothing new to save: same value again, or no variables at all.
	for _, env := range []map[string]string{{"FOO": "bar"}, nil} {
		if o, _ := run(t, e, withFoo, "true", preserve(env)); o.ResultImageUUID != withFoo {
			t.Errorf("preserve_env run with env %v made image %s, want its input %s", env, o.ResultImageUUID, withFoo)
		}
	}
	// A changed value is saved.
	o, _ = run(t, e, withFoo, "true", preserve(map[string]string{"FOO": "baz"}))
	if o.ResultImageUUID == withFoo {
		t.Fatal("changed variable not saved")
	}
	if _, m := run(t, e, o.ResultImageUUID, "echo $FOO"); stdout(t, m) != "baz\n" {
		t.Errorf("next run sees FOO=%q, want baz", stdout(t, m))
	}
	// Without preserve_env the variables are not saved.
	if o, _ := run(t, e, base, "true", func(r *SpawnRequest) { r.Env = map[string]string{"FOO": "x"} }); o.ResultImageUUID != base {
		t.Errorf("run without preserve_env made image %s, want its input", o.ResultImageUUID)
	}
}

// snapshotRuns runs cmd on an image under each runtime, cold and then warm,
// requires the same result image from all four (layerfs.Diff), and returns
// them by "runtime/mode". mutate, if set, alters the busybox base first.
func snapshotRuns(t *testing.T, cmd string, mutate func(root string) error) map[string]snapRun {
	t.Helper()
	ctx := context.Background()
	out := map[string]snapRun{}
	var first string
	for _, rt := range runtimes {
		e, base := newWarmEngine(t, rt)
		if mutate != nil {
			base = busyboxWith(t, e, mutate)
		}
		for _, mode := range []string{"cold", "warm"} {
			if mode == "warm" {
				waitIdle(t, e, base, 1) // the cold run asked for it
			}
			hits := e.WarmStats().Hits
			o, m := run(t, e, base, cmd)
			if served := e.WarmStats().Hits > hits; served != (mode == "warm") {
				t.Fatalf("%s/%s run served warm=%v", rt, mode, served)
			}
			name := rt + "/" + mode
			out[name] = snapRun{e: e, input: base, image: o.ResultImageUUID, m: m}
			if first == "" {
				first = name
				continue
			}
			a, ra, err := out[first].e.ImageFS(ctx, acct, out[first].image)
			if err != nil {
				t.Fatal(err)
			}
			b, rb, err := e.ImageFS(ctx, acct, o.ResultImageUUID)
			if err != nil {
				t.Fatal(err)
			}
			changes, err := layerfs.Diff(ctx, a, b, layerfs.DiffOptions{})
			ra()
			rb()
			if err != nil || len(changes) != 0 {
				t.Errorf("%s result differs from %s: %+v %v", name, first, changes, err)
			}
		}
	}
	return out
}

// busyboxWith makes a base image of busybox altered by mutate.
func busyboxWith(t *testing.T, e *Engine, mutate func(root string) error) string {
	t.Helper()
	var buf bytes.Buffer
	if err := baseimage.WriteBusyboxTar(&buf); err != nil {
		t.Fatal(err)
	}
	id, err := e.NewBaseImage(context.Background(), acct, func(dir string) error {
		cmd := exec.Command("tar", "-x", "-C", dir)
		cmd.Stdin = &buf
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("tar: %v: %s", err, out)
		}
		return mutate(dir)
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type snapRun struct {
	e            *Engine
	input, image string
	m            apitypes.InstanceMetadata
}

// TestSnapshotHoldsEveryPath: a file written anywhere in the root is in the
// result image and seen by the next run, identically under every runtime,
// cold or warm; runsc's own /tmp tmpfs must not swallow /tmp. /dev and its
// /dev/shm are per-sandbox tmpfs mounts under every runtime: never saved.
func TestSnapshotHoldsEveryPath(t *testing.T) {
	paths := []struct {
		dir  string
		kept bool
	}{
		{"/tmp", true},
		{"/var/tmp", true},
		{"/run", true},
		{"/var/run", true},
		{"/root", true},
		{"/dev/shm", false},
	}
	write := "mkdir -p /run /var/run"
	check, want := "true", ""
	for _, p := range paths {
		write += fmt.Sprintf(" && echo %s > %s/snap", p.dir, p.dir)
		check += fmt.Sprintf("; cat %s/snap 2>/dev/null || echo no-%s", p.dir, p.dir)
		if p.kept {
			want += p.dir + "\n"
		} else {
			want += "no-" + p.dir + "\n"
		}
	}
	for name, r := range snapshotRuns(t, write, nil) {
		for _, p := range paths {
			s, err := readFile(t, r.e, r.image, p.dir+"/snap")
			if p.kept && s != p.dir+"\n" {
				t.Errorf("%s: %s/snap in the result image: %q %v, want it kept", name, p.dir, s, err)
			}
			if !p.kept && err == nil {
				t.Errorf("%s: %s/snap is in the result image, want it left out", name, p.dir)
			}
		}
		if _, m := run(t, r.e, r.image, check, disposable); stdout(t, m) != want {
			t.Errorf("%s: next run sees %q, want %q", name, stdout(t, m), want)
		}
	}
	// A run whose only change is in /tmp makes a new image all the same.
	for name, r := range snapshotRuns(t, "echo x > /tmp/only", nil) {
		if r.image == r.input {
			t.Errorf("%s: a run that wrote only /tmp/only returned its input image", name)
		}
	}
}

// TestSnapshotOddTmp: an image without /tmp gives the same /tmp and the
// same snapshot under every runtime: runsc would mount its tmpfs on a /tmp
// it creates, so arbor creates it (mode 1777) for every runtime. (A /tmp
// that is a symlink is not covered: runsc resolves the link before it looks
// for an explicit /tmp mount, so its tmpfs still lands on the target; see
// the README.)
func TestSnapshotOddTmp(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(root string) error
		file   string // where /tmp/f lands in the image
	}{
		{"missing", func(root string) error { return os.Remove(filepath.Join(root, "tmp")) }, "/tmp/f"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for name, r := range snapshotRuns(t, "echo x > /tmp/f && stat -c %a /tmp/", tc.mutate) {
				if got := stdout(t, r.m); got != "1777\n" {
					t.Errorf("%s: run printed %q, want /tmp writable with mode 1777", name, got)
				}
				if s, err := readFile(t, r.e, r.image, tc.file); s != "x\n" {
					t.Errorf("%s: %s in the result image: %q %v", name, tc.file, s, err)
				}
			}
		})
	}
}

// TestCaptureCoalesces drives a capture directly: 2,000 one-byte writes
// become a few events (one each before), a lone byte still gets its event
// within the flush delay without waiting for the end, and finish leaves
// nothing pending and reports truncation after the output.
func TestCaptureCoalesces(t *testing.T) {
	e, _ := newEngine(t, "runc")
	ctx := context.Background()
	op := newID()
	if err := e.st.InsertOperationLimited(ctx, store.Operation{UUID: op, Account: acct, Kind: apitypes.KindInstance, Status: apitypes.StatusExecuting, CreatedAt: time.Now()}, 1<<30); err != nil {
		t.Fatal(err)
	}
	e.events.open(op, 0)
	defer e.events.close(op)
	c := &capture{e: e, op: op, spid: 1, stream: apitypes.EventStdout, limit: 2500}
	wake := e.events.wakeup(op)
	start := time.Now()
	c.Write([]byte("a"))
	select {
	case <-wake:
		t.Logf("a lone byte's event after %v", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("a lone byte got no event before finish")
	}
	for range 2000 {
		c.Write([]byte("x"))
	}
	c.Write([]byte(strings.Repeat("z", 1000))) // 499 kept, 501 dropped
	c.finish()
	evs, err := e.st.Events(ctx, op, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for i, ev := range evs {
		if ev.Type == apitypes.EventTruncated {
			if i != len(evs)-1 || !strings.Contains(ev.Data, `"bytes_dropped":501`) {
				t.Errorf("truncated event %d of %d: %s", i, len(evs), ev.Data)
			}
			continue
		}
		var d apitypes.EventDataStream
		json.Unmarshal([]byte(ev.Data), &d)
		b, _ := apitypes.StreamRepr{Value: d.Value, Encoding: d.Encoding}.Bytes()
		got += string(b)
	}
	if want := "a" + strings.Repeat("x", 2000) + strings.Repeat("z", 499); got != want {
		t.Errorf("events carry %d bytes, want %d in order", len(got), len(want))
	}
	if len(evs) > 10 {
		t.Errorf("%d events for 2,002 writes, want them coalesced", len(evs))
	}
}

// TestOutputCoalesced: a process's many small writes arrive whole and in
// order through few events; a follower still sees output promptly, long
// before the process exits.
func TestOutputCoalesced(t *testing.T) {
	e, base := newEngine(t, "runc")
	o, m := run(t, e, base, "i=0; while [ $i -lt 2000 ]; do printf x; printf y >&2; i=$((i+1)); done", disposable)
	if got := stdout(t, m); got != strings.Repeat("x", 2000) {
		t.Fatalf("stdout is %d bytes, want 2000 x", len(got))
	}
	evs, err := e.st.Events(context.Background(), o.UUID, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	streams := map[string]string{}
	n := map[string]int{}
	for _, ev := range evs {
		if ev.Type != apitypes.EventStdout && ev.Type != apitypes.EventStderr {
			continue
		}
		var d apitypes.EventDataStream
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
			t.Fatal(err)
		}
		b, err := apitypes.StreamRepr{Value: d.Value, Encoding: d.Encoding}.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		streams[ev.Type] += string(b)
		n[ev.Type]++
	}
	if streams["stdout"] != strings.Repeat("x", 2000) || streams["stderr"] != strings.Repeat("y", 2000) {
		t.Errorf("events carry stdout %d bytes, stderr %d bytes, want 2000 each", len(streams["stdout"]), len(streams["stderr"]))
	}
	// One event per 5 ms at most: the loop takes well under a second.
	if n["stdout"] > 200 || n["stderr"] > 200 {
		t.Errorf("%d stdout and %d stderr events for 2000 writes each, want coalescing", n["stdout"], n["stderr"])
	}
	t.Logf("%d stdout, %d stderr events", n["stdout"], n["stderr"])

	// Live: the first line arrives while the command still sleeps.
	op, _, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: "echo first; sleep 3; echo second", Image: base, Shell: ptr(true), Disposable: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	var firstAt, exitAt time.Time
	err = e.FollowEvents(context.Background(), acct, op, FollowOptions{After: -1, Follow: true}, func(ev Event) error {
		switch {
		case ev.Type == apitypes.EventStdout && firstAt.IsZero():
			firstAt = time.Now()
		case ev.Type == apitypes.EventExit:
			exitAt = time.Now()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if firstAt.IsZero() || exitAt.IsZero() || exitAt.Sub(firstAt) < 2*time.Second {
		t.Errorf("first output seen %v before the exit, want it live (about 3 s before)", exitAt.Sub(firstAt))
	}
}

// TestExecShellArgs: a process exec'd into a running instance with
// shell=true gets its args appended to its command line, as the main
// process does.
func TestExecShellArgs(t *testing.T) {
	e, base := newEngine(t, "runc")
	ctx := context.Background()
	op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "cat", Image: base, Shell: ptr(true), Disposable: ptr(true),
		Stdin: &Stdin{Close: ptr(false)}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.WriteStdin(ctx, acct, op, 1, Stdin{Close: ptr(true)})
	spid, err := e.Exec(ctx, acct, op, ExecRequest{Command: "/bin/sh", Shell: ptr(true), Args: []string{"-s", "--", "a1", "b 2"},
		Stdin: &Stdin{Value: `printf '[%s]' "$#" "$1" "$2"`}})
	if err != nil {
		t.Fatal(err)
	}
	r := waitSub(t, e, op, spid)
	if b, _ := r.Stdout.Bytes(); string(b) != "[2][a1][b 2]" {
		t.Errorf("exec'd script saw %q, want [2][a1][b 2]", b)
	}
}
