package api_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

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
