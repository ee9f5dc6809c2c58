package engine

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/initproc"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/runtime"
)

// hostPython is the tarball of baseimage.WriteHostPythonTar, built once
// per test binary (about a second, 50 MB).
var hostPython = sync.OnceValues(func() ([]byte, error) {
	var buf bytes.Buffer
	err := baseimage.WriteHostPythonTar(&buf)
	return buf.Bytes(), err
})

// pythonImage imports a base image with the host's python3 (Debian's,
// which scripts/setup.sh installs) and busybox.
func pythonImage(t testing.TB, e *Engine) string {
	t.Helper()
	b, err := hostPython()
	if err != nil {
		t.Fatal(err)
	}
	return tarImage(t, e, bytes.NewReader(b))
}

// pyApp is a python3 program that holds its state in memory: a counter
// and a variable, and a table built at start-up. It serves that state on
// 127.0.0.1:8000 (one line per request line) and keeps a connection to
// itself open from the start, through which "get TAG" asks, and a file
// open for appending from the start, /root/held.txt. Its commands come on
// stdin, one a line: "inc N", "set V", "write FILE" (the state into
// /root/FILE), "note X" (X as a line of the held file), "get TAG" (prints
// "state TAG counter=C var=V").
const pyApp = `
import hashlib, os, socket, socketserver, sys, threading
counter, var = 0, "initial"
table = {i: hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)}
class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for _ in self.rfile:
            self.wfile.write(f"counter={counter} var={var} table={len(table)}\n".encode())
socketserver.ThreadingTCPServer.daemon_threads = True
server = socketserver.ThreadingTCPServer(("127.0.0.1", 8000), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
conn = socket.create_connection(("127.0.0.1", 8000))
replies = conn.makefile()
with open("/root/started.txt", "w") as f:
    f.write("pid=%d\n" % os.getpid())
held = open("/root/held.txt", "a")
print("ready", flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "inc":
        counter += int(arg)
    elif cmd == "set":
        var = arg
    elif cmd == "write":
        with open("/root/" + arg, "w") as f:
            f.write(f"counter={counter} var={var}\n")
    elif cmd == "note":
        held.write(arg + "\n")
        held.flush()
    elif cmd == "get":
        conn.sendall(b"get\n")
        print("state", arg, replies.readline().strip(), flush=True)
`

// pyClient asks the server from a new process: a new connection to the
// listening socket.
const pyClient = `import socket; s = socket.create_connection(("127.0.0.1", 8000)); s.sendall(b"?\n"); print(s.makefile().readline(), end="")`

func spawnPyApp(t testing.TB, e *Engine, image string) string {
	t.Helper()
	op, _, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: "python3", Args: []string{"-u", "-c", pyApp}, Image: image,
		Shell: ptr(false), Stdin: &Stdin{Value: "", Close: ptr(false)}})
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// tell sends commands to op's python3, one a line.
func tell(t *testing.T, e *Engine, op string, cmds ...string) {
	t.Helper()
	if err := e.WriteStdin(context.Background(), acct, op, 1, Stdin{Value: strings.Join(cmds, "\n") + "\n", Close: ptr(false)}); err != nil {
		t.Fatalf("stdin of %s: %v", op, err)
	}
}

// askServer runs pyClient in op and returns its answer.
func askServer(t *testing.T, e *Engine, op string) string {
	t.Helper()
	spid, err := e.Exec(context.Background(), acct, op, ExecRequest{Command: "python3", Args: []string{"-c", pyClient}})
	if err != nil {
		t.Fatal(err)
	}
	r := waitSub(t, e, op, spid)
	out, _ := r.Stdout.Bytes()
	if r.State.ExitCode != 0 {
		errOut, _ := r.Stderr.Bytes()
		t.Fatalf("operation %s: client exited %d: %s%s", op, r.State.ExitCode, out, errOut)
	}
	return strings.TrimSpace(string(out))
}

// TestForkPython is issue 19's proof with a real python3: an instance
// whose main process is python3 holding state in memory and serving it on
// a loopback socket is forked into 3. Each copy answers with the parent's
// state at the fork point, through the connection the parent opened and
// through a new one, then diverges under its own commands; the parent is
// unaffected; a copy forks again; the fork point is an image in the
// lineage; files written after the fork differ per copy, also through a
// file the process held open across the fork.
func TestForkPython(t *testing.T) {
	e, _ := newEngine(t, "runsc")
	base := pythonImage(t, e)
	ctx := context.Background()

	parent := spawnPyApp(t, e, base)
	waitStdout(t, e, parent, "ready\n")
	tell(t, e, parent, "inc 1", "set before-fork", "write before.txt", "note before-fork", "get p0")
	atFork := "counter=1 var=before-fork table=20000"
	waitStdout(t, e, parent, "state p0 "+atFork+"\n")

	res, err := e.Fork(ctx, acct, parent, ForkRequest{Count: 3})
	if err != nil {
		t.Fatalf("Fork: %v", err)
	}
	if len(res.Operations) != 3 || res.Image == "" || res.Image == base || res.CheckpointBytes <= 0 {
		t.Fatalf("Fork = %+v, want 3 operations, a new fork-point image and the checkpoint's size", res)
	}
	t.Logf("checkpoint of python3: %d bytes", res.CheckpointBytes)
	forks := res.Operations

	// Every copy starts from the parent's memory at the fork point...
	for i, f := range forks {
		tell(t, e, f, fmt.Sprintf("get f%d", i))
		waitStdout(t, e, f, fmt.Sprintf("state f%d %s\n", i, atFork))
		if got := askServer(t, e, f); got != atFork {
			t.Errorf("copy %d: its server answers %q to a new connection, want %q", i, got, atFork)
		}
	}
	// ...then goes its own way. want is each one's state at its end; held,
	// what its file held open since the start holds then (its appends after
	// the fork land in its own copy of the file).
	want, held := map[string]string{}, map[string]string{}
	for i, f := range forks {
		st := fmt.Sprintf("counter=%d var=fork-%d", 1+10*(i+1), i)
		tell(t, e, f, fmt.Sprintf("inc %d", 10*(i+1)), fmt.Sprintf("set fork-%d", i), "write after.txt", fmt.Sprintf("note fork-%d", i), fmt.Sprintf("get f%d-after", i))
		want[f] = st
		held[f] = fmt.Sprintf("before-fork\nfork-%d\n", i)
	}
	for i, f := range forks {
		waitStdout(t, e, f, fmt.Sprintf("state f%d-after %s table=20000\n", i, want[f]))
		if got := askServer(t, e, f); got != want[f]+" table=20000" {
			t.Errorf("copy %d: its server answers %q, want %q", i, got, want[f])
		}
	}
	// The parent is where it was.
	tell(t, e, parent, "get p1")
	waitStdout(t, e, parent, "state p1 "+atFork+"\n")
	tell(t, e, parent, "inc 100", "set parent-after", "write after.txt", "note parent", "get p2")
	want[parent] = "counter=101 var=parent-after"
	held[parent] = "before-fork\nparent\n"
	waitStdout(t, e, parent, "state p2 "+want[parent]+" table=20000\n")

	// A copy forks again, from where it stands.
	res2, err := e.Fork(ctx, acct, forks[0], ForkRequest{})
	if err != nil {
		t.Fatalf("fork of a fork: %v", err)
	}
	grand := res2.Operations[0]
	tell(t, e, grand, "get g")
	waitStdout(t, e, grand, "state g "+want[forks[0]]+" table=20000\n")
	tell(t, e, grand, "set grandchild", "write after.txt", "note grandchild", "get g-after")
	want[grand] = "counter=11 var=grandchild"
	held[grand] = "before-fork\nfork-0\ngrandchild\n"
	waitStdout(t, e, grand, "state g-after "+want[grand]+" table=20000\n")
	tell(t, e, forks[0], "get f0-last")
	waitStdout(t, e, forks[0], "state f0-last "+want[forks[0]]+" table=20000\n")

	// Each ends (stdin closed) and is snapshotted: its own files, over the
	// fork point's, in the lineage under the fork point.
	for op := range want {
		if err := e.WriteStdin(ctx, acct, op, 1, Stdin{Close: ptr(true)}); err != nil {
			t.Fatal(err)
		}
	}
	for op, st := range want {
		o := waitOp(t, e, op)
		if o.Status != apitypes.StatusSuccess {
			t.Fatalf("operation %s: %s %s", op, o.Status, o.Error)
		}
		for file, w := range map[string]string{"/root/before.txt": "counter=1 var=before-fork\n", "/root/after.txt": st + "\n", "/root/held.txt": held[op]} {
			if got, err := readFile(t, e, o.ResultImageUUID, file); err != nil || got != w {
				t.Errorf("operation %s: %s = %q (%v), want %q", op, file, got, err, w)
			}
		}
		l, err := e.Lineage(ctx, acct, o.ResultImageUUID)
		if err != nil {
			t.Fatal(err)
		}
		var chain []string
		for _, a := range l.Ancestors {
			chain = append(chain, a.UUID)
		}
		wantChain := []string{res.Image, base}
		switch op {
		case parent:
			wantChain = []string{base}
		case grand:
			wantChain = []string{res2.Image, res.Image, base}
		}
		if strings.Join(chain, " ") != strings.Join(wantChain, " ") {
			t.Errorf("operation %s: result's ancestors %v, want %v", op, chain, wantChain)
		}
	}
	// The fork point holds the files as they were at the fork.
	if got, err := readFile(t, e, res.Image, "/root/before.txt"); err != nil || got != "counter=1 var=before-fork\n" {
		t.Errorf("fork point: before.txt = %q (%v)", got, err)
	}
	if _, err := readFile(t, e, res.Image, "/root/after.txt"); err == nil {
		t.Error("fork point holds a file written after the fork")
	}
	if got, err := readFile(t, e, res.Image, "/root/held.txt"); err != nil || got != "before-fork\n" {
		t.Errorf("fork point: held.txt = %q (%v), want the line written before the fork", got, err)
	}
}

// TestRunWatched: the watcher of execWarm and execRestored destroys the
// sandbox when the run's context ends first, and only then, and folds the
// command's exit into the result.
func TestRunWatched(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	destroyed := make(chan struct{})
	res, err := runWatched(ctx, runtime.Result{Signal: -1}, func() { close(destroyed) }, func() (initproc.Exit, time.Duration, error) {
		cancel()
		<-destroyed // the command ends because its sandbox did
		return initproc.Exit{Signal: 9}, time.Second, nil
	})
	if err != nil || !res.Killed || res.Signal != 9 || !res.Exact {
		t.Errorf("cancelled run: %+v %v, want killed by signal 9", res, err)
	}
	calls := 0
	res, err = runWatched(context.Background(), runtime.Result{Signal: -1}, func() { calls++ }, func() (initproc.Exit, time.Duration, error) {
		return initproc.Exit{Code: 3}, time.Second, nil
	})
	if err != nil || res.Killed || calls != 0 || res.ExitCode != 3 || res.Duration != time.Second {
		t.Errorf("a run that ended by itself: %+v %v, %d destroy calls; want exit 3, not killed, no destroy", res, err, calls)
	}
}

// forkPointKept checks, after TestKill9Recovery's crash once a fork's
// copies were restored, that the one image added (the fork point,
// committed whole before the crash) is readable, and that the parent and
// the copies all ended as failed by the restart; it returns the fork
// point's layer.
func forkPointKept(t *testing.T, e *Engine, before, after []Image) string {
	t.Helper()
	ctx := context.Background()
	var point []Image
	for _, im := range after {
		if !slices.ContainsFunc(before, func(b Image) bool { return b.UUID == im.UUID }) {
			point = append(point, im)
		}
	}
	if len(point) != 1 {
		t.Fatalf("images added by the fork: %+v, want the fork point alone", point)
	}
	if s, err := readFile(t, e, point[0].UUID, "/root/started.txt"); err != nil || !strings.HasPrefix(s, "pid=") {
		t.Errorf("fork point's /root/started.txt = %q (%v)", s, err)
	}
	ops, err := e.ListOperations(ctx, OperationFilter{Account: acct, Kind: oplog.KindInstance})
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 3 {
		t.Errorf("%d instance operations after the crash, want the parent and 2 copies", len(ops))
	}
	for _, o := range ops {
		if o.Status != apitypes.StatusFailed || !strings.Contains(o.Error, "daemon restarted") || o.ResultImageUUID != "" {
			t.Errorf("operation %s after restart: %s %q result %q, want FAILED/daemon restarted/none", o.UUID, o.Status, o.Error, o.ResultImageUUID)
		}
	}
	row, err := e.st.Image(ctx, acct, point[0].UUID)
	if err != nil {
		t.Fatal(err)
	}
	return row.Layer
}
