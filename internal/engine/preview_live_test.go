package engine

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
)

// fetchPreview exposes port of op and GETs /index.html through the relay.
func fetchPreview(t *testing.T, e *Engine, op string, port int) string {
	t.Helper()
	ctx := context.Background()
	if _, err := e.Expose(ctx, acct, op, port, 0); err != nil {
		t.Fatalf("expose %s:%d: %v", op, port, err)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return e.DialPreview(ctx, op, port) }}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://preview/index.html")
	if err != nil {
		t.Fatalf("GET through the preview of %s: %v", op, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status + " " + string(b)
}

// TestPreviewWarmForkContinue: previews of a run in a warm sandbox, of its
// live fork (the parent's relay is not carried into the copy: the copy
// gets its own) and of the next step continued in the same sandbox (a
// preview does not keep the sandbox from being continued).
func TestPreviewWarmForkContinue(t *testing.T) {
	e, base := newWarmEngine(t, "runsc")
	ctx := context.Background()
	serve := func(image, text string) string {
		op, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: image, Shell: ptr(true), Stdin: &Stdin{Close: ptr(false)},
			Command: "mkdir -p /www; echo " + text + " > /www/index.html; httpd -p 127.0.0.1:8080 -h /www; echo up; cat"})
		if err != nil {
			t.Fatal(err)
		}
		waitStdout(t, e, op, "up")
		return op
	}
	op1 := serve(base, "one")
	if got := fetchPreview(t, e, op1, 8080); got != "200 OK one\n" {
		t.Fatalf("step 1 preview: %q", got)
	}
	res, err := e.Fork(ctx, acct, op1, ForkRequest{})
	if err != nil {
		t.Fatalf("fork with a preview open: %v", err)
	}
	cp := res.Operations[0]
	if got := fetchPreview(t, e, cp, 8080); got != "200 OK one\n" {
		t.Errorf("the fork's preview: %q", got)
	}
	if got := fetchPreview(t, e, op1, 8080); got != "200 OK one\n" {
		t.Errorf("step 1 preview after the fork: %q", got)
	}
	say(t, e, cp, "", true)
	say(t, e, op1, "", true)
	o1 := waitOp(t, e, op1)
	if o1.Status != apitypes.StatusSuccess {
		t.Fatalf("step 1: %s %s", o1.Status, o1.Error)
	}
	op2 := serve(o1.ResultImageUUID, "two")
	if got := fetchPreview(t, e, op2, 8080); got != "200 OK two\n" {
		t.Errorf("step 2 preview: %q", got)
	}
	say(t, e, op2, "", true)
	o2 := waitOp(t, e, op2)
	if n := continuedOn(e, o2.ResultImageUUID); n != 1 {
		t.Errorf("the sandbox was not continued past a step with a preview: %d continued on step 2's image", n)
	}
	waitOp(t, e, cp)
}
