package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
	"github.com/arborsh/arbor/internal/testutil/s3server"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// testLease is the cluster tests' lease: a killed worker's run ends within
// it plus the reaper's period (a fifth of it). Short, to keep the tests
// short, but with heartbeats every 1.7 s a loaded machine's slow commits
// do not cost a live worker its lease.
const testLease = 5 * time.Second

var arborBin struct {
	once sync.Once
	path string
	err  error
}

// arborBinary builds the arbor binary once per test binary: cluster nodes
// are separate processes, as in production.
func arborBinary(t *testing.T) string {
	t.Helper()
	arborBin.once.Do(func() {
		dir, err := testutil.BuildDir("arbor")
		if err != nil {
			arborBin.err = err
			return
		}
		arborBin.path = filepath.Join(dir, "arbor")
		cmd := exec.Command("go", "build", "-o", arborBin.path, "github.com/arborsh/arbor/cmd/arbor")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			arborBin.err = fmt.Errorf("go build arbor: %v: %s", err, out)
		}
	})
	if arborBin.err != nil {
		t.Fatal(arborBin.err)
	}
	return arborBin.path
}

// clusterNet is one PostgreSQL database and one bucket that nodes share.
type clusterNet struct {
	t     *testing.T
	bin   string
	dsn   string
	blobs string
	s3    *s3server.Server
}

// node is one `arbor serve` process of a cluster.
type node struct {
	name, role, home string
	cmd              *exec.Cmd
	url, token       string
	log              *testutil.SyncBuffer
	done             chan struct{}
}

func newClusterNet(t *testing.T) *clusterNet {
	testutil.RequiresRoot(t)
	dsn := pgtest.DSN(t)
	srv := s3server.Start(t)
	bucket := srv.Bucket(t)
	return &clusterNet{t: t, bin: arborBinary(t), dsn: dsn, blobs: "s3://" + bucket + "/c", s3: srv}
}

// start starts a node of role name, waiting until it serves.
func (cn *clusterNet) start(name, role string, home string, extra ...string) *node {
	t := cn.t
	t.Helper()
	if home == "" {
		home = testutil.Home(t)
	}
	n := &node{name: name, role: role, home: home, log: &testutil.SyncBuffer{}, done: make(chan struct{})}
	_ = os.Remove(filepath.Join(home, "url"))
	n.cmd = exec.Command(cn.bin, "serve", "--home", home, "--listen", "127.0.0.1:0", "--db", cn.dsn, "--blobs", cn.blobs,
		"--blobs-endpoint", cn.s3.Endpoint, "--role", role, "--worker-id", name, "--lease-ttl", testLease.String(),
		"--runtime", "runsc", "--gc-interval", "-1s", "--shutdown-timeout", "0s")
	n.cmd.Args = append(n.cmd.Args, extra...)
	n.cmd.Env = append(os.Environ(), cn.s3.Env()...)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("log of %s (%s):\n%s", n.name, n.role, n.log.String())
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(home, "url")); err == nil {
			n.url = strings.TrimSpace(string(b))
			tok, _ := os.ReadFile(filepath.Join(home, "token"))
			n.token = strings.TrimSpace(string(tok))
			return n
		}
		select {
		case <-n.done:
			t.Fatalf("node %s exited at start: %s", name, n.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s did not start: %s", name, n.log.String())
		}
	}
}

// stop ends the node with SIGTERM (idempotent).
func (n *node) stop() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// kill ends the node with SIGKILL.
func (n *node) kill() {
	_ = n.cmd.Process.Kill()
	<-n.done
}

func (n *node) client(t *testing.T, token string) *client.Client {
	c, err := client.New(n.url, token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// stdout is the main process's stdout of operation id, from its log.
func stdout(ctx context.Context, c *client.Client, id string) (string, error) {
	var b strings.Builder
	err := c.StreamEvents(ctx, id, client.EventsOptions{After: -1}, func(ev apitypes.OperationEvent) error {
		if ev.Spid == 1 {
			b.WriteString(outputOf(ev))
		}
		return nil
	})
	return b.String(), err
}

// outputOf is the text of an output event ("" for other events).
func outputOf(ev apitypes.OperationEvent) string {
	var s apitypes.StreamRepr
	if ev.Type != apitypes.EventStdout || json.Unmarshal(ev.Data, &s) != nil {
		return ""
	}
	v, _ := s.Bytes()
	return string(v)
}

// placement reads where the database says op runs.
func placement(ctx context.Context, dsn, op string) (status, owner string, err error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", "", err
	}
	defer conn.Close(ctx)
	var o *string
	err = conn.QueryRow(ctx, `SELECT status, lease_owner FROM operations WHERE uuid=$1`, op).Scan(&status, &o)
	if o != nil {
		owner = *o
	}
	return status, owner, err
}

// TestClusterTwoAPINodesTwoWorkers runs the ConTree flow against two API
// nodes and two workers, separate `arbor serve` processes with homes of
// their own on one PostgreSQL database and one bucket: an import (on the
// API node that got it), a chain of saved runs spawned on alternating API
// nodes and run by workers, an uploaded file placed by a worker, the
// image's files read from the other API node, events followed live from
// the API node that did not queue the run, a subprocess with stdin in an
// instance running on a worker through either API node, and a cancel from
// the API node that did not spawn it.
func TestClusterTwoAPINodesTwoWorkers(t *testing.T) {
	cn := newClusterNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	w1 := cn.start("w1", RoleWorker, "")
	w2 := cn.start("w2", RoleWorker, "")
	a1 := cn.start("a1", RoleAPI, "")
	a2 := cn.start("a2", RoleAPI, "")
	c1, c2 := a1.client(t, a1.token), a2.client(t, a1.token)
	sh := true

	// A worker serves only its peers.
	if _, err := w1.client(t, a1.token).WhoAmI(ctx); client.StatusCode(err) != 421 {
		t.Errorf("whoami on a worker: %v, want 421 (send API requests to an API node)", err)
	}

	img, err := testdaemon.ImportBusybox(ctx, c1, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	f, err := c2.UploadFile(ctx, strings.NewReader("uploaded on a2\n"))
	if err != nil {
		t.Fatal(err)
	}
	ran := map[string]bool{}
	for i := range 4 {
		c := []*client.Client{c1, c2}[i%2]
		req := apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Command: fmt.Sprintf("cat /log 2>/dev/null; echo step%d >> /log; cat /in", i),
			Files: map[string]apitypes.FileSpec{"/in": {UUID: f.UUID, Mode: 0o644}}}
		op, err := c.Run(ctx, req)
		if err != nil || op.Status != apitypes.StatusSuccess || op.ResultImageUUID == nil {
			t.Fatalf("step %d: %v %+v", i, err, op)
		}
		out, err := stdout(ctx, []*client.Client{c2, c1}[i%2], op.UUID)
		want := ""
		for j := range i {
			want += fmt.Sprintf("step%d\n", j)
		}
		if err != nil || out != want+"uploaded on a2\n" {
			t.Fatalf("step %d output %q (%v), want %q", i, out, err, want+"uploaded on a2\n")
		}
		_, owner, err := placement(ctx, cn.dsn, op.UUID)
		if err != nil {
			t.Fatal(err)
		}
		ran[owner] = true
		img = *op.ResultImageUUID
	}
	t.Logf("steps ran on workers %v", ran)
	for _, c := range []*client.Client{c1, c2} {
		b, err := c.ReadFile(ctx, img, "/log")
		if err != nil || string(b) != "step0\nstep1\nstep2\nstep3\n" {
			t.Errorf("/log of the last image on %s: %q %v", c.BaseURL(), b, err)
		}
	}

	// Events followed live from the other API node: every line, in order.
	sp, err := c1.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Disposable: &sh,
		Command: "for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done"})
	if err != nil {
		t.Fatal(err)
	}
	var lines strings.Builder
	if err := c2.FollowEvents(ctx, sp.UUID, -1, func(ev apitypes.OperationEvent) error {
		lines.WriteString(outputOf(ev))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if lines.String() != "line1\nline2\nline3\nline4\nline5\n" {
		t.Errorf("followed from a2: %q", lines.String())
	}

	// A subprocess with stdin in an instance a worker runs, through both
	// API nodes (forwarded with the cluster secret), then a cancel from
	// the API node that did not spawn it.
	long, err := c1.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: img, Command: "sleep 120", Shell: &sh, Disposable: &sh})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(ctx, t, c2, long.UUID, apitypes.StatusExecuting)
	for _, c := range []*client.Client{c1, c2} {
		open := false
		spid, err := c.Exec(ctx, long.UUID, apitypes.ExecSpec{Command: "cat", Stdin: &apitypes.ClosableStreamRepr{Value: "", Close: &open}})
		if err != nil {
			t.Fatalf("exec through %s: %v", c.BaseURL(), err)
		}
		cl := true
		if err := c.WriteStdin(ctx, long.UUID, spid, apitypes.ClosableStreamRepr{Value: "via " + c.BaseURL() + "\n", Close: &cl}); err != nil {
			t.Fatalf("stdin through %s: %v", c.BaseURL(), err)
		}
		var res *apitypes.InstanceResult
		for res == nil || res.State.ExitCode == -1 {
			if res, err = c.Subprocess(ctx, long.UUID, spid); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got, _ := res.Stdout.Bytes(); string(got) != "via "+c.BaseURL()+"\n" || res.State.ExitCode != 0 {
			t.Errorf("subprocess through %s: %q exit %d", c.BaseURL(), got, res.State.ExitCode)
		}
	}
	// Its worker's heartbeats keep its lease past several lease periods.
	time.Sleep(2 * testLease) // the span is the point: nothing to wait for
	if op, err := c1.Operation(ctx, long.UUID); err != nil || op.Status != apitypes.StatusExecuting {
		t.Fatalf("a run past two leases: %v %+v", err, op)
	}
	if err := c2.Cancel(ctx, long.UUID); err != nil {
		t.Fatal(err)
	}
	if op, err := c1.Wait(ctx, long.UUID); err != nil || op.Status != apitypes.StatusCancelled {
		t.Errorf("cancelled from a2: %v %+v", err, op)
	}
	_ = w2
}

// waitStatus waits until operation id has status want.
func waitStatus(ctx context.Context, t *testing.T, c *client.Client, id, want string) {
	t.Helper()
	for {
		op, err := c.Operation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if op.Status == want {
			return
		}
		if isTerminal(op.Status) {
			t.Fatalf("operation %s ended %s (%v) before reaching %s", id, op.Status, op.Error, want)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("operation %s: still %s, want %s", id, op.Status, want)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func isTerminal(s string) bool {
	return s == apitypes.StatusSuccess || s == apitypes.StatusFailed || s == apitypes.StatusCancelled
}

// TestClusterNodeKilled: kill -9 of the worker running a run fails the run
// within one lease plus the reaper's period, with the reason, no image and
// no second outcome (the other worker goes on running new work, and the
// killed one, restarted, cleans up and publishes nothing); kill -9 of the
// API node a client follows events through, and the client resumes from
// the other one after its last event, missing nothing and seeing nothing
// twice.
func TestClusterNodeKilled(t *testing.T) {
	cn := newClusterNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	workers := map[string]*node{"w1": cn.start("w1", RoleWorker, ""), "w2": cn.start("w2", RoleWorker, "")}
	a1 := cn.start("a1", RoleAPI, "")
	a2 := cn.start("a2", RoleAPI, "")
	c1, c2 := a1.client(t, a1.token), a2.client(t, a1.token)
	sh := true
	img, err := testdaemon.ImportBusybox(ctx, c1, "busybox")
	if err != nil {
		t.Fatal(err)
	}

	// A worker killed mid-run.
	sp, err := c1.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Command: "echo started; echo x > /f; sleep 120"})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(ctx, t, c1, sp.UUID, apitypes.StatusExecuting)
	_, owner, err := placement(ctx, cn.dsn, sp.UUID)
	if err != nil || workers[owner] == nil {
		t.Fatalf("owner of the run: %q %v", owner, err)
	}
	killed := workers[owner]
	killed.kill()
	start := time.Now()
	op, err := c2.Wait(ctx, sp.UUID)
	took := time.Since(start)
	if err != nil || op.Status != apitypes.StatusFailed || op.Error == nil || !strings.Contains(*op.Error, "stopped renewing its lease") {
		t.Fatalf("run of the killed worker: %v %+v", err, op)
	}
	if op.ResultImageUUID != nil {
		t.Errorf("the killed worker's run made image %s", *op.ResultImageUUID)
	}
	if limit := testLease + testLease/5 + 2*time.Second; took > limit {
		t.Errorf("the killed worker's run ended %v after the kill, want within %v", took, limit)
	}
	t.Logf("killed worker's run failed %v after the kill: %s", took.Round(10*time.Millisecond), *op.Error)
	// The other worker runs new work.
	next, err := c2.Run(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Command: "echo after > /g"})
	if err != nil || next.Status != apitypes.StatusSuccess {
		t.Fatalf("a run after the kill: %v %+v", err, next)
	}
	// The killed worker comes back under its ID: it cleans up what it left
	// and its old run stays as the reaper ended it.
	cn.start(killed.name, RoleWorker, killed.home)
	if again, err := c1.Operation(ctx, sp.UUID); err != nil || again.Status != apitypes.StatusFailed || again.ResultImageUUID != nil {
		t.Errorf("the killed worker's run after its restart: %v %+v", err, again)
	}
	var completions int
	if err := c1.StreamEvents(ctx, sp.UUID, client.EventsOptions{After: -1}, func(ev apitypes.OperationEvent) error {
		if ev.Type == apitypes.EventCompletion {
			completions++
		}
		return nil
	}); err != nil || completions != 1 {
		t.Errorf("completion events of the killed worker's run: %d (%v), want 1", completions, err)
	}

	// An API node killed while a client follows through it.
	sp, err = c1.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Disposable: &sh,
		Command: "for i in $(seq 1 12); do echo line$i; sleep 0.25; done"})
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	last := int64(-1)
	n := 0
	fctx, stopFollow := context.WithCancel(ctx)
	err = c2.FollowEvents(fctx, sp.UUID, -1, func(ev apitypes.OperationEvent) error {
		last = ev.ID
		if out := outputOf(ev); out != "" {
			got.WriteString(out)
			if n++; n == 3 {
				a2.kill()
				stopFollow() // the client's own retries would go to the dead node
			}
		}
		return nil
	})
	stopFollow()
	if n < 3 {
		t.Fatalf("followed %d output events before the API node died (%v)", n, err)
	}
	if err := c1.FollowEvents(ctx, sp.UUID, last, func(ev apitypes.OperationEvent) error {
		got.WriteString(outputOf(ev))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := 1; i <= 12; i++ {
		fmt.Fprintf(&want, "line%d\n", i)
	}
	if got.String() != want.String() {
		t.Errorf("output followed across the API node's death:\n%q\nwant\n%q", got.String(), want.String())
	}
}

// TestClusterAllNodes: several nodes of role all on one database and
// bucket (no single-node lock once work goes through the queue) share the
// runs spawned on either, each run once, its events followed from the
// other node.
func TestClusterAllNodes(t *testing.T) {
	cn := newClusterNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n1 := cn.start("n1", RoleAll, "")
	n2 := cn.start("n2", RoleAll, "")
	c1, c2 := n1.client(t, n1.token), n2.client(t, n1.token)
	sh := true
	img, err := testdaemon.ImportBusybox(ctx, c2, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 6 {
		sp, err := []*client.Client{c1, c2}[i%2].Spawn(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Disposable: &sh,
			Command: fmt.Sprintf("sleep 0.5; echo run%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sp.UUID)
	}
	owners := map[string]int{}
	for i, id := range ids {
		op, err := []*client.Client{c2, c1}[i%2].Wait(ctx, id)
		if err != nil || op.Status != apitypes.StatusSuccess {
			t.Fatalf("run %d: %v %+v", i, err, op)
		}
		if out, err := stdout(ctx, c1, id); err != nil || out != fmt.Sprintf("run%d\n", i) {
			t.Errorf("run %d printed %q (%v)", i, out, err)
		}
		_, owner, _ := placement(ctx, cn.dsn, id)
		owners[owner]++
	}
	t.Logf("runs per node: %v", owners)
}

// TestClusterWorkerPaused: a worker stopped (SIGSTOP) for longer than its
// lease is presumed dead: the reaper fails its run with the reason. When
// it resumes, its heartbeat finds the lease gone: it kills the sandbox and
// publishes nothing (no image, no second outcome, no more events).
func TestClusterWorkerPaused(t *testing.T) {
	cn := newClusterNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := cn.start("w", RoleWorker, "")
	a := cn.start("a", RoleAPI, "")
	c := a.client(t, a.token)
	sh := true
	img, err := testdaemon.ImportBusybox(ctx, c, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := c.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Command: "echo x > /f; sleep 30; echo late"})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(ctx, t, c, sp.UUID, apitypes.StatusExecuting)
	if err := w.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	op, err := c.Wait(ctx, sp.UUID)
	_ = w.cmd.Process.Signal(syscall.SIGCONT)
	if err != nil || op.Status != apitypes.StatusFailed || op.Error == nil || !strings.Contains(*op.Error, "stopped renewing its lease") {
		t.Fatalf("run of the paused worker: %v %+v", err, op)
	}
	logs := func() int {
		n := 0
		_ = c.StreamEvents(ctx, sp.UUID, client.EventsOptions{After: -1}, func(apitypes.OperationEvent) error { n++; return nil })
		return n
	}
	before := logs()
	// Resumed, the worker finds its lease lost and tears the run down.
	// Well before its command's sleep would end.
	run := filepath.Join(w.home, "run", sp.UUID)
	deadline := time.After(15 * time.Second)
	for !strings.Contains(w.log.String(), "lease lost: stopping the run") || exists(run) {
		select {
		case <-deadline:
			t.Fatalf("the resumed worker did not stop its run within 15 s: %s", w.log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	again, err := c.Operation(ctx, sp.UUID)
	if err != nil || again.Status != apitypes.StatusFailed || again.ResultImageUUID != nil || *again.Error != *op.Error {
		t.Errorf("after the worker resumed: %v %+v", err, again)
	}
	if after := logs(); after != before {
		t.Errorf("the resumed worker added %d events after the reaper's completion", after-before)
	}
	// And it takes new work.
	if next, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Command: "true"}); err != nil || next.Status != apitypes.StatusSuccess {
		t.Errorf("a run after the pause: %v %+v", err, next)
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestClusterWorkersShareHost: two workers on one host (one slot each, so
// each takes one) run networked sandboxes at the same time: their
// networks, container IDs, cgroups and runtime state do not collide (a
// network is claimed by creating its host interface, so the second daemon
// takes the next free one).
func TestClusterWorkersShareHost(t *testing.T) {
	cn := newClusterNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cn.start("w1", RoleWorker, "", "--slots", "1")
	cn.start("w2", RoleWorker, "", "--slots", "1")
	a := cn.start("a", RoleAPI, "")
	c := a.client(t, a.token)
	sh := true
	img, err := testdaemon.ImportBusybox(ctx, c, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 2 {
		sp, err := c.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Disposable: &sh,
			Networking: &apitypes.Networking{Enabled: &sh}, Command: "sleep 3; cat /proc/net/route | wc -l"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sp.UUID)
	}
	owners, nets := map[string]bool{}, map[string]bool{}
	for _, id := range ids {
		op, err := c.Wait(ctx, id)
		if err != nil || op.Status != apitypes.StatusSuccess {
			t.Fatalf("networked run %s: %v %+v", id, err, op)
		}
		_, owner, _ := placement(ctx, cn.dsn, id)
		owners[owner] = true
		_ = c.StreamEvents(ctx, id, client.EventsOptions{After: -1}, func(ev apitypes.OperationEvent) error {
			if ev.Type == apitypes.EventNetwork {
				nets[string(ev.Data)] = true
			}
			return nil
		})
	}
	if len(owners) != 2 {
		t.Errorf("the runs ran on %v, want one on each worker", owners)
	}
	if len(nets) != 2 {
		t.Errorf("the two sandboxes' networks: %v, want two different ones", nets)
	}
}
