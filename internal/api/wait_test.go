package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

// TestLongPoll: GET /v1/operations/{id}?wait= answers once the operation
// ends, in one request; a wait that ends first answers the operation as it
// is; a bad wait is a 400 that says what to send.
func TestLongPoll(t *testing.T) {
	d := sharedDaemon(t)
	c, secret, _ := d.account(t, "wait-test")
	get := func(path string) rawResp { return do(t, http.MethodGet, d.srv.URL+path, secret, nil) }
	if _, err := d.importBusybox(ctxT(t), c, "busybox:latest"); err != nil {
		t.Fatal(err)
	}
	spawn := func(cmd string) string {
		sp, err := c.Spawn(ctxT(t), apitypes.InstanceSpawnRequest{Command: cmd, Image: "busybox:latest", Shell: ptr(true)})
		if err != nil {
			t.Fatal(err)
		}
		return sp.UUID
	}
	status := func(r rawResp) string {
		var op apitypes.OperationResponse
		if err := json.Unmarshal(r.body, &op); err != nil {
			t.Fatalf("decode %s: %v", r.body, err)
		}
		return op.Status
	}

	short := spawn("sleep 1; echo done")
	for _, wait := range []string{"30s", "30"} {
		r := get("/v1/operations/" + short + "?wait=" + wait)
		wantStatus(t, r, http.StatusOK)
		if got := status(r); got != apitypes.StatusSuccess {
			t.Errorf("wait=%s: one GET answered %s, want SUCCESS (the answer waits for the end)", wait, got)
		}
		if r.Header.Get("Retry-After") != "" {
			t.Errorf("wait=%s: a finished operation's answer has Retry-After %q", wait, r.Header.Get("Retry-After"))
		}
	}

	long := spawn("sleep 30")
	defer func() { _ = c.Cancel(ctxT(t), long) }()
	r := get("/v1/operations/" + long + "?wait=0.2")
	wantStatus(t, r, http.StatusOK)
	if got := status(r); apitypes.IsTerminal(got) {
		t.Errorf("wait=0.2 on a 30 s run answered %s, want it still in flight", got)
	}
	if r.Header.Get("Retry-After") == "" {
		t.Error("an unfinished operation's answer has no Retry-After")
	}
	op, err := c.WaitFor(ctxT(t), long, 200*time.Millisecond)
	if err != nil || apitypes.IsTerminal(op.Status) {
		t.Errorf("WaitFor(200ms) on a 30 s run = %v, %v; want it in flight", op, err)
	}

	for _, bad := range []string{"soon", "-1s", "-2", "NaN"} {
		wantError(t, get("/v1/operations/"+long+"?wait="+bad), http.StatusBadRequest, "wait must")
	}

	// Another account's operation is unknown, waiting or not.
	other := d.otherClient(t, "wait-other")
	if _, err := other.WaitFor(ctxT(t), long, time.Second); err == nil {
		t.Error("another account's WaitFor found the operation")
	}
}

// TestSpawnWait: POST /v1/instances?wait= answers 201 with the operation's
// Location and, once it has ended, the operation itself: an agent's step
// in one request. A wait that ends first answers the operation in flight;
// a bad wait is a 400 and spawns nothing; the Go client's Run gets the
// same result through it.
func TestSpawnWait(t *testing.T) {
	d := sharedDaemon(t)
	c, secret, _ := d.account(t, "spawn-wait")
	if _, err := d.importBusybox(ctxT(t), c, "busybox:latest"); err != nil {
		t.Fatal(err)
	}
	post := func(wait, cmd string) rawResp {
		b, err := json.Marshal(apitypes.InstanceSpawnRequest{Command: cmd, Image: "busybox:latest", Shell: ptr(true)})
		if err != nil {
			t.Fatal(err)
		}
		body := string(b)
		return do(t, http.MethodPost, d.srv.URL+"/v1/instances?wait="+wait, secret, strings.NewReader(body), "Content-Type: application/json")
	}
	decode := func(r rawResp) (op apitypes.OperationResponse, m apitypes.InstanceMetadata) {
		if err := json.Unmarshal(r.body, &op); err != nil {
			t.Fatalf("decode %s: %v", r.body, err)
		}
		if err := json.Unmarshal(op.Metadata, &m); err != nil {
			t.Fatalf("decode metadata %s: %v", op.Metadata, err)
		}
		return op, m
	}

	r := post("30s", "sleep 1; echo hi > /root/f; echo out")
	wantStatus(t, r, http.StatusCreated)
	op, m := decode(r)
	if loc := r.Header.Get("Location"); !strings.HasSuffix(loc, "/v1/operations/"+op.UUID) || op.UUID == "" {
		t.Errorf("Location %q, operation %q", loc, op.UUID)
	}
	if op.Status != apitypes.StatusSuccess || m.Result == nil {
		t.Fatalf("one POST answered %s, want SUCCESS with the result (the answer waits for the end): %s", op.Status, r.body)
	}
	if out, _ := m.Result.Stdout.Bytes(); string(out) != "out\n" {
		t.Errorf("stdout %q, want out", out)
	}
	if op.ResultImageUUID == nil || *op.ResultImageUUID == "" {
		t.Errorf("no result image in %s", r.body)
	}

	r = post("0.2", "sleep 30")
	wantStatus(t, r, http.StatusCreated)
	op, _ = decode(r)
	defer func() { _ = c.Cancel(ctxT(t), op.UUID) }()
	if apitypes.IsTerminal(op.Status) || op.UUID == "" {
		t.Errorf("wait=0.2 on a 30 s run answered %s (%q), want it in flight", op.Status, op.UUID)
	}

	before, err := c.ListOperations(ctxT(t), client.OperationListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, post("soon", "true"), http.StatusBadRequest, "wait must")
	after, err := c.ListOperations(ctxT(t), client.OperationListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("a refused wait spawned an operation: %d operations, then %d", len(before), len(after))
	}

	done, err := c.Run(ctxT(t), apitypes.InstanceSpawnRequest{Command: "echo run", Image: "busybox:latest", Shell: ptr(true)})
	if err != nil || done.Status != apitypes.StatusSuccess {
		t.Fatalf("Run = %+v, %v", done, err)
	}
}
