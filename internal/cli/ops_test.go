package cli

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

// spawn starts a shell command on busybox behind the CLI's back.
func (d *testDaemon) spawn(t *testing.T, shell string) string {
	t.Helper()
	sp, err := d.c.Spawn(t.Context(), apitypes.InstanceSpawnRequest{Image: d.busybox, Command: shell, Shell: ptr(true)})
	if err != nil {
		t.Fatalf("spawn %q: %v", shell, err)
	}
	return sp.UUID
}

// waitStatus polls op until its status is one of want.
func (d *testDaemon) waitStatus(t *testing.T, op string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := d.c.Operation(t.Context(), op)
		if err == nil && slices.Contains(want, res.Status) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("operation %s: %v, %v; want status %v", op, res, err, want)
		}
		time.Sleep(20 * time.Millisecond) // status changes are not events: poll
	}
}

func TestPsWaitCancelLogs(t *testing.T) {
	t.Parallel()
	d := fakeDaemon(t)
	long := d.spawn(t, "echo started; echo to-stderr >&2; sleep 60")
	d.waitStatus(t, long, apitypes.StatusExecuting)

	// ps lists it while it runs, with its command.
	rows := okJSON[[]opRow](t, d, "ps")
	i := slices.IndexFunc(rows, func(r opRow) bool { return r.UUID == long })
	if i < 0 {
		t.Fatalf("ps --json does not list running operation %s: %+v", long, rows)
	}
	if rows[i].Command != "echo started; echo to-stderr >&2; sleep 60" || rows[i].Kind != apitypes.KindInstance || apitypes.IsTerminal(rows[i].Status) {
		t.Errorf("ps row = %+v", rows[i])
	}
	wantContains(t, "ps", d.ok(t, "ps"), "OPERATION", "STATUS", shortID(long), "sleep 60")
	wantContains(t, "ps -q", d.ok(t, "ps", "-q"), long+"\n")

	// logs replays what it printed so far: stdout to stdout, stderr to stderr.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	printed := errors.New("printed")
	var out, errOut bool
	err := d.c.StreamEvents(ctx, long, client.EventsOptions{After: -1, Follow: true}, func(ev apitypes.OperationEvent) error {
		out = out || ev.Type == apitypes.EventStdout
		errOut = errOut || ev.Type == apitypes.EventStderr
		if out && errOut {
			return printed
		}
		return nil
	})
	if !errors.Is(err, printed) {
		t.Fatalf("waiting for the run's output: %v (stdout seen %v, stderr seen %v)", err, out, errOut)
	}
	if r := d.arbor(t, "logs", long[:8]); r.code != 0 || r.stdout != "started\n" || r.stderr != "to-stderr\n" {
		t.Fatalf("logs = %v, want started / to-stderr", r)
	}

	// logs -f follows until the end; cancel ends it.
	followed := make(chan result, 1)
	go func() { followed <- d.arbor(t, "logs", "-f", long) }()
	time.Sleep(200 * time.Millisecond) // deliberate: let logs -f attach before the cancel (it would also pass replaying)
	cancelled := okJSON[[]struct {
		Operation string `json:"operation"`
		Cancelled bool   `json:"cancelled"`
		Error     string `json:"error"`
	}](t, d, "cancel", long[:8])
	if len(cancelled) != 1 || !cancelled[0].Cancelled || cancelled[0].Operation != long {
		t.Errorf("cancel --json = %+v", cancelled)
	}
	select {
	case r := <-followed:
		if r.code != 0 || r.stdout != "started\n" {
			t.Errorf("logs -f of a cancelled run: %v", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("logs -f did not end after the operation was cancelled")
	}

	// wait reports it CANCELLED, exit 130; cancelling again is an error.
	r := d.arbor(t, "--json", "wait", long)
	if r.code != 130 {
		t.Errorf("wait on a cancelled run: exit %d, want 130\n%v", r.code, r)
	}
	var waited []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &waited); err != nil || len(waited) != 1 || waited[0]["status"] != apitypes.StatusCancelled {
		t.Errorf("wait --json = %s, %v", r.stdout, err)
	}
	r = d.arbor(t, "cancel", long)
	if r.code != 1 || !strings.Contains(r.stderr, "nothing to cancel") {
		t.Errorf("cancel of a finished operation: %v", r)
	}
	if r := d.arbor(t, "ps", "--all", "--status", "cancelled", "-q"); !strings.Contains(r.stdout, long) {
		t.Errorf("ps --status cancelled does not list %s: %v", long, r)
	}
}

func TestWaitExitCodes(t *testing.T) {
	t.Parallel()
	d := fakeDaemon(t)
	ok := d.spawn(t, "echo fine")
	bad := d.spawn(t, "exit 5")
	r := d.arbor(t, "wait", bad)
	if r.code != 5 {
		t.Errorf("wait on one run exiting 5: exit %d, want 5\n%v", r.code, r)
	}
	wantContains(t, "wait", r.stdout, "OPERATION", bad, "SUCCESS", " 5 ")
	if r := d.arbor(t, "wait", ok); r.code != 0 {
		t.Errorf("wait on a passing run: %v", r)
	}
	if r := d.arbor(t, "wait", ok, bad); r.code != 1 {
		t.Errorf("wait on two runs, one failing: exit %d, want 1", r.code)
	}
	type row struct {
		Operation string  `json:"operation"`
		Kind      string  `json:"kind"`
		Status    string  `json:"status"`
		ExitCode  *int    `json:"exit_code"`
		TimedOut  bool    `json:"timed_out"`
		Image     *string `json:"image"`
		Duration  float64 `json:"duration"`
		Error     *string `json:"error"`
	}
	rows := okJSON[[]row](t, d, "wait", ok)
	if len(rows) != 1 || rows[0].Operation != ok || rows[0].ExitCode == nil || *rows[0].ExitCode != 0 || rows[0].Kind != apitypes.KindInstance {
		t.Errorf("wait --json = %+v", rows)
	}
	// logs --json is one event per line, ending with completion.
	out := d.ok(t, "--json", "logs", ok)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var last apitypes.OperationEvent
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Type != apitypes.EventCompletion {
		t.Errorf("logs --json last line = %q, %v; want the completion event", lines[len(lines)-1], err)
	}
	for _, tc := range []struct{ args []string }{{[]string{"wait", "xyz"}}, {[]string{"cancel", "0000"}}, {[]string{"logs", "ffffffff-ffff-4fff-bfff-ffffffffffff"}}} {
		if r := d.arbor(t, tc.args...); r.code != 1 || !strings.Contains(r.stderr, "operation") {
			t.Errorf("arbor %v: %v, want exit 1 naming the operation", tc.args, r)
		}
	}
}

func TestInterruptedCommandExits130(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		done <- d.exec(ctx, "", "run", "--image", "busybox", "--", "sh", "-c", "echo in-process-interrupt; sleep 60")
	}()
	var op string
	deadline := time.Now().Add(20 * time.Second)
	for op == "" && time.Now().Before(deadline) {
		ops, _ := d.c.ListOperations(t.Context(), client.OperationListOptions{Status: []string{apitypes.StatusExecuting}})
		for _, o := range ops {
			if res, err := d.c.Operation(t.Context(), o.UUID); err == nil && strings.Contains(string(res.Metadata), "in-process-interrupt") {
				op = o.UUID
			}
		}
		time.Sleep(20 * time.Millisecond) // status changes are not events: poll
	}
	if op == "" {
		cancel()
		t.Fatal("the run never started executing")
	}
	cancel()
	r := <-done
	if r.code != 130 {
		t.Errorf("interrupted run: exit %d, want 130\n%v", r.code, r)
	}
	wantContains(t, "stderr", r.stderr, "cancelling operation "+op)
	d.waitStatus(t, op, apitypes.StatusCancelled)
}
