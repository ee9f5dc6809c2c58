package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

// TestSpawnEcho checks the defaulted echo and lenient decoding of spawn
// bodies as each client generation sends them.
func TestSpawnEcho(t *testing.T) {
	d := sharedDaemon(t)
	f, err := d.c.UploadFile(ctxT(t), strings.NewReader("#!/bin/sh\necho script\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, mode, want string
	}{
		{"octal string", `"0644"`, "0644"},
		{"python oct()", `"0o755"`, "0755"},
		{"st_mode with type bits (contree-mcp rsync)", `"0o100644"`, "0644"},
		{"setuid", `"04755"`, "4755"},
		{"JSON integer", `420`, "0644"},
		{"null", `null`, "0644"},
	} {
		t.Run("mode "+tc.name, func(t *testing.T) {
			body := fmt.Sprintf(`{"command":"true","image":%q,"disposable":true,"files":{"/root/x":{"uuid":%q,"mode":%s}}}`, d.base, f.UUID, tc.mode)
			r := d.send(t, http.MethodPost, "/v1/instances", body)
			wantStatus(t, r, http.StatusCreated)
			var sp apitypes.InstanceSpawnResponse
			if err := json.Unmarshal(r.body, &sp); err != nil {
				t.Fatal(err)
			}
			if got := r.object(t)["files"].(map[string]any)["/root/x"].(map[string]any)["mode"]; got != tc.want {
				t.Errorf("mode %s echoed as %#v, want %q", tc.mode, got, tc.want)
			}
		})
	}

	t.Run("contree-mcp full dump with unknown fields", func(t *testing.T) {
		d := realDaemon(t) // places a file owned by root
		f, err := d.c.UploadFile(ctxT(t), strings.NewReader("#!/bin/sh\necho script\n"))
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf(`{"command":"cat /root/s.sh; cat","image":%q,"hostname":"linuxkit","args":[],"shell":true,"env":{},
			"cwd":"/root","disposable":true,"stdin":{"value":"from stdin","encoding":"ascii","truncated":false},"timeout":30,
			"truncate_output_at":8000,"files":{"/root/s.sh":{"uuid":%q,"mode":"0o644","uid":0,"gid":0}},"result":null,
			"kind":"instance","inflight":true}`, d.base, f.UUID)
		r := d.send(t, http.MethodPost, "/v1/instances", body)
		wantStatus(t, r, http.StatusCreated)
		id := r.object(t)["uuid"].(string)
		op, err := d.c.Wait(ctxT(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if got := stdoutOf(t, op); got != "#!/bin/sh\necho script\nfrom stdin" {
			t.Errorf("stdout = %q", got)
		}
		m := instance(t, op)
		if m.Timeout != 30 || m.TruncateOutputAt != 8000 || m.Files["/root/s.sh"].Mode != 0o644 {
			t.Errorf("echo = timeout %d truncate %d mode %o", m.Timeout, m.TruncateOutputAt, m.Files["/root/s.sh"].Mode)
		}
	})

	t.Run("go client echo has every default", func(t *testing.T) {
		sp, err := d.c.Spawn(ctxT(t), apitypes.InstanceSpawnRequest{Command: "true", Image: "busybox:latest", Disposable: ptr(true)})
		if err != nil {
			t.Fatal(err)
		}
		if sp.Image != d.base || sp.Hostname != "linuxkit" || sp.Cwd != "/root" || sp.Timeout != 60 || sp.TruncateOutputAt != 1<<20 ||
			sp.Args == nil || sp.Env == nil || sp.Files == nil || sp.Stdin.Encoding != "ascii" || sp.Result != nil {
			t.Errorf("echo = %+v, want the documented defaults (bare tag resolved)", sp.InstanceMetadata)
		}
		if _, err := d.c.Wait(ctxT(t), sp.UUID); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRuns covers results: output and exit codes, result images for
// disposable, changing and unchanged runs, timeouts, and runsc.
func TestRuns(t *testing.T) {
	d := sharedDaemon(t)
	t.Run("exit code is not the status", func(t *testing.T) {
		t.Parallel()
		op := d.run(t, d.c, d.base, "echo out; echo err >&2; exit 3")
		m := instance(t, op)
		errOut, _ := m.Result.Stderr.Bytes()
		if m.Result.State.ExitCode != 3 || stdoutOf(t, op) != "out\n" || string(errOut) != "err\n" {
			t.Errorf("result = %+v, want exit 3 and both streams", m.Result)
		}
	})
	t.Run("disposable has no result image", func(t *testing.T) {
		t.Parallel()
		op := d.run(t, d.c, d.base, "echo x > /root/f", func(r *apitypes.InstanceSpawnRequest) { r.Disposable = ptr(true) })
		if op.ResultImageUUID != nil || op.Result.Image != nil {
			t.Errorf("disposable run produced image %v / %v", deref(op.ResultImageUUID), deref(op.Result.Image))
		}
	})
	t.Run("unchanged filesystem keeps the input image", func(t *testing.T) {
		t.Parallel()
		op := d.run(t, d.c, d.base, "true")
		if deref(op.ResultImageUUID) != d.base || deref(op.Result.Image) != d.base {
			t.Errorf("result image = %v, want the input %s", deref(op.ResultImageUUID), d.base)
		}
	})
	t.Run("changes make a child image", func(t *testing.T) {
		t.Parallel()
		op := d.run(t, d.c, d.base, "echo branch > /root/made")
		child := deref(op.ResultImageUUID)
		if child == "" || child == d.base || deref(op.Result.Image) != child {
			t.Fatalf("result image = %q / %q", child, deref(op.Result.Image))
		}
		b, err := d.c.ReadFile(ctxT(t), child, "/root/made")
		if err != nil || string(b) != "branch\n" {
			t.Errorf("child image /root/made = %q, %v", b, err)
		}
		im, err := d.c.Image(ctxT(t), child)
		if err != nil || deref(im.OperationUUID) != op.UUID {
			t.Errorf("child image operation_uuid = %v, want %s (%v)", deref(im.OperationUUID), op.UUID, err)
		}
		// Run on the result: chains work through the API too.
		if got := stdoutOf(t, d.run(t, d.c, child, "cat /root/made", func(r *apitypes.InstanceSpawnRequest) { r.Disposable = ptr(true) })); got != "branch\n" {
			t.Errorf("run on the child saw %q", got)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		op := d.run(t, d.c, d.base, "sleep 20", func(r *apitypes.InstanceSpawnRequest) { r.Timeout = ptr(1.0); r.Disposable = ptr(true) })
		if st := instance(t, op).Result.State; !st.TimedOut {
			t.Errorf("state = %+v, want timed_out", st)
		}
	})
	t.Run("runsc", func(t *testing.T) {
		t.Parallel()
		d := realDaemon(t)
		op := d.run(t, d.c, d.base, "echo gvisor; echo x > /root/g", func(r *apitypes.InstanceSpawnRequest) { r.Runtime = ptr("runsc") })
		if got := stdoutOf(t, op); got != "gvisor\n" {
			t.Errorf("runsc stdout = %q", got)
		}
		if instance(t, op).Runtime != "runsc" {
			t.Errorf("echoed runtime = %q, want runsc", instance(t, op).Runtime)
		}
		if b, err := d.c.ReadFile(ctxT(t), deref(op.ResultImageUUID), "/root/g"); err != nil || string(b) != "x\n" {
			t.Errorf("runsc result image /root/g = %q, %v", b, err)
		}
	})
}

// TestOperations covers list filters, get, and cancel.
func TestOperations(t *testing.T) {
	d := sharedDaemon(t)
	c := d.otherClient(t, "ops-test") // an account of its own, so counts are exact
	if _, err := d.importBusybox(ctxT(t), c, "busybox:latest"); err != nil {
		t.Fatal(err)
	}
	done := d.run(t, c, "busybox:latest", "true")
	sp, err := c.Spawn(ctxT(t), apitypes.InstanceSpawnRequest{Command: "sleep 30", Image: "busybox:latest", Shell: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("list filters", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			o    client.OperationListOptions
			want int
		}{
			{"all", client.OperationListOptions{}, 3},
			{"kind", client.OperationListOptions{Kind: "image_import"}, 1},
			{"status", client.OperationListOptions{Status: []string{"SUCCESS"}}, 2},
			{"several statuses", client.OperationListOptions{Status: []string{"PENDING", "ASSIGNED", "EXECUTING"}}, 1},
			{"limit", client.OperationListOptions{Page: client.Page{Limit: 1}}, 1},
			{"offset", client.OperationListOptions{Page: client.Page{Offset: 2}}, 1},
			{"since relative", client.OperationListOptions{Page: client.Page{Since: "1h"}}, 3},
			{"since seconds", client.OperationListOptions{Page: client.Page{Since: "3600"}}, 3},
			{"since RFC 3339", client.OperationListOptions{Page: client.Page{Since: time.Now().Add(-time.Hour).Format(time.RFC3339)}}, 3},
			{"since naive ISO (UTC)", client.OperationListOptions{Page: client.Page{Since: time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04:05.000000")}}, 3},
			{"until in the past", client.OperationListOptions{Page: client.Page{Until: "1w"}}, 0},
		} {
			got, err := c.ListOperations(ctxT(t), tc.o)
			if err != nil || len(got) != tc.want {
				t.Errorf("%s: ListOperations(%+v) = %d operations, %v; want %d", tc.name, tc.o, len(got), err, tc.want)
			}
		}
		list, _ := c.ListOperations(ctxT(t), client.OperationListOptions{})
		if len(list) == 3 && (list[0].UUID != sp.UUID || list[1].UUID != done.UUID) {
			t.Errorf("operations are not newest first: %v", list)
		}
	})

	t.Run("get", func(t *testing.T) {
		op, err := c.Operation(ctxT(t), strings.ToUpper(done.UUID))
		if err != nil || op.UUID != done.UUID || op.Status != apitypes.StatusSuccess {
			t.Errorf("Operation(upper-case id) = %v, %v", op, err)
		}
		r := do(t, http.MethodGet, d.srv.URL+"/v1/operations/"+sp.UUID+"?inflight=1", "", nil)
		wantStatus(t, r, http.StatusUnauthorized)
	})

	t.Run("cancel", func(t *testing.T) {
		if err := c.Cancel(ctxT(t), sp.UUID); err != nil {
			t.Fatal(err)
		}
		op, err := c.Wait(ctxT(t), sp.UUID)
		if err != nil || op.Status != apitypes.StatusCancelled {
			t.Fatalf("cancelled run: %v %v", op, err)
		}
		err = c.Cancel(ctxT(t), sp.UUID)
		if !client.IsConflict(err) || !strings.Contains(err.Error(), "not cancellable") {
			t.Errorf("second cancel = %v, want 409 not cancellable", err)
		}
		var last apitypes.OperationEvent
		if err := c.FollowEvents(ctxT(t), sp.UUID, -1, func(ev apitypes.OperationEvent) error { last = ev; return nil }); err != nil {
			t.Fatal(err)
		}
		var comp apitypes.EventDataCompletion
		_ = json.Unmarshal(last.Data, &comp)
		if last.Type != apitypes.EventCompletion || comp.Status != apitypes.StatusCancelled {
			t.Errorf("cancelled run's log ends with %s %+v, want completion CANCELLED", last.Type, comp)
		}
	})
}

// TestSubprocesses walks contree-client's subprocess lifecycle: a main
// process with stdin kept open, an exec'd process fed through stdin, one
// killed by signal name, and their events in the parent's log.
func TestSubprocesses(t *testing.T) {
	d := realDaemon(t) // signals a sandboxed process
	ctx := ctxT(t)
	body := fmt.Sprintf(`{"command":"cat; echo main-done","image":%q,"shell":true,"disposable":true,
		"stdin":{"value":"first\n","encoding":"ascii","close":false}}`, d.base)
	r := d.send(t, http.MethodPost, "/v1/instances", body)
	wantStatus(t, r, http.StatusCreated)
	op := r.object(t)["uuid"].(string)
	defer d.c.Cancel(ctxT(t), op)

	spid, err := d.c.Exec(ctx, op, apitypes.ExecSpec{Command: "cat", Stdin: &apitypes.ClosableStreamRepr{Value: "", Close: ptr(false)}})
	if err != nil || spid != 2 {
		t.Fatalf("Exec = %d, %v; want spid 2", spid, err)
	}
	if err := d.c.WriteStdin(ctx, op, spid, apitypes.ClosableStreamRepr{Value: "aGVsbG8K", Encoding: "base64", Close: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	res := waitProcess(t, d.c, op, spid)
	if out, _ := res.Stdout.Bytes(); string(out) != "hello\n" || res.State.ExitCode != 0 || res.State.Signal != -1 {
		t.Errorf("subprocess 2 = %q %+v, want hello, exit 0", out, res.State)
	}

	sleeper, err := d.c.Exec(ctx, op, apitypes.ExecSpec{Command: "sleep 60", Shell: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := d.c.Subprocess(ctx, op, sleeper); err != nil || res.State.ExitCode != -1 || res.State.Signal != -1 {
		t.Errorf("running subprocess = %+v, %v; want exit_code and signal -1", res, err)
	}
	if err := d.c.KillSubprocess(ctx, op, sleeper, "TERM"); err != nil {
		t.Fatal(err)
	}
	if st := waitProcess(t, d.c, op, sleeper).State; st.Signal != 15 || st.ExitCode != -1 {
		t.Errorf("killed subprocess state = %+v, want signal 15 and exit_code -1", st)
	}

	// A spid that was never handed out is 404 at once, not 425: there is
	// nothing to wait for.
	r = d.get(t, "/v1/operations/"+op+"/subprocesses/9")
	wantError(t, r, http.StatusNotFound, "no process 9")
	if ra := r.Header.Get("Retry-After"); ra != "" {
		t.Errorf("404 for an unknown spid carries Retry-After %q", ra)
	}

	// The parent still runs; closing its stdin ends it.
	if main, err := d.c.Operation(ctx, op); err != nil || apitypes.IsTerminal(main.Status) {
		t.Fatalf("parent after its subprocesses ended = %v, %v", main.Status, err)
	}
	if err := d.c.WriteStdin(ctx, op, 1, apitypes.ClosableStreamRepr{Value: "second\n", Close: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	done, err := d.c.Wait(ctx, op)
	if err != nil {
		t.Fatal(err)
	}
	if got := stdoutOf(t, done); got != "first\nsecond\nmain-done\n" {
		t.Errorf("main stdout = %q", got)
	}
	seen := map[string]bool{}
	if err := d.c.FollowEvents(ctx, op, -1, func(ev apitypes.OperationEvent) error {
		seen[fmt.Sprintf("%d:%s", ev.Spid, ev.Type)] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1:spawn", "1:exit", "2:spawn", "2:stdin", "2:stdout", "2:exit", "3:exit", "0:completion"} {
		if !seen[want] {
			t.Errorf("parent log lacks a %s event (has %v)", want, seen)
		}
	}

	_, err = d.c.Exec(ctx, op, apitypes.ExecSpec{Command: "true"})
	if !client.IsConflict(err) || !strings.Contains(err.Error(), "not running") {
		t.Errorf("Exec into a finished run = %v, want 409 not running", err)
	}
	if _, err := d.c.Subprocess(ctx, op, 9); !client.IsNotFound(err) {
		t.Errorf("unknown subprocess of a finished run = %v, want 404", err)
	}
	base := "/v1/operations/" + op + "/subprocesses"
	wantError(t, d.send(t, http.MethodPost, base, `{"args":["x"]}`), http.StatusBadRequest, "command")
	wantError(t, d.send(t, http.MethodPost, base+"/2/stdin", `{"close":true}`), http.StatusBadRequest, "value")
	wantError(t, d.send(t, http.MethodPost, base+"/2/stdin", `{"value":"%%%","encoding":"base64"}`), http.StatusBadRequest, "base64")
	wantError(t, d.send(t, http.MethodDelete, base+"/2?signal=BOGUS", ""), http.StatusBadRequest, "signal")
	wantError(t, d.get(t, base+"/0"), http.StatusBadRequest, "spid")
}

// waitProcess follows a process's events until it has exited or was
// killed, and returns its result.
func waitProcess(t *testing.T, c *client.Client, op string, spid int) *apitypes.InstanceResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctxT(t), 30*time.Second)
	defer cancel()
	exited := errors.New("exited")
	err := c.StreamEvents(ctx, op, client.EventsOptions{After: -1, Follow: true, Spid: &spid}, func(ev apitypes.OperationEvent) error {
		if ev.Type == apitypes.EventExit {
			return exited
		}
		return nil
	})
	if err != nil && !errors.Is(err, exited) {
		t.Fatalf("follow process %d: %v", spid, err)
	}
	res, err := c.Subprocess(ctxT(t), op, spid)
	if err != nil {
		t.Fatalf("Subprocess(%d): %v", spid, err)
	}
	if res.State.ExitCode == -1 && res.State.Signal == -1 {
		t.Fatalf("process %d did not exit: %+v", spid, res.State)
	}
	return res
}
