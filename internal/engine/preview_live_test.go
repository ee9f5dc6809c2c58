package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

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

// BenchmarkPreview measures a preview of a Go HTTP server (keep-alive)
// under each runtime: the first request, which starts the relay (logged),
// then requests over a kept connection (kept) and each on a new connection
// (conn: a new relay stream and a dial inside the sandbox).
func BenchmarkPreview(b *testing.B) {
	for _, rt := range []string{"runsc", "runc"} {
		b.Run(rt, func(b *testing.B) {
			e, base := newEngine(b, rt)
			ctx := context.Background()
			req := SpawnRequest{Image: base, Shell: ptr(true), Stdin: &Stdin{Close: ptr(false)},
				Command: "/probe httpserve 127.0.0.1:8080 & echo up; cat"}
			probe(b, e)(&req)
			op, _, err := e.Spawn(ctx, acct, req)
			if err != nil {
				b.Fatal(err)
			}
			waitStdout(b, e, op, "up")
			if _, err := e.Expose(ctx, acct, op, 8080, 0); err != nil {
				b.Fatal(err)
			}
			get := func(c *http.Client) {
				resp, err := c.Get("http://preview/")
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			dial := func(ctx context.Context, _, _ string) (net.Conn, error) { return e.DialPreview(ctx, op, 8080) }
			kept := &http.Client{Transport: &http.Transport{DialContext: dial}}
			begin := time.Now()
			if c, err := e.DialPreview(ctx, op, 8080); err == nil { // starts the relay
				c.Close()
			}
			b.Logf("%s: first dial (starts the relay) %v", rt, time.Since(begin))
			for deadline := time.Now().Add(30 * time.Second); ; { // the server may still be starting
				resp, err := kept.Get("http://preview/")
				if err == nil {
					resp.Body.Close()
					break
				}
				if time.Now().After(deadline) {
					b.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			b.Run("kept", func(b *testing.B) {
				for b.Loop() {
					get(kept)
				}
			})
			b.Run("conn", func(b *testing.B) {
				fresh := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
				for b.Loop() {
					get(fresh)
				}
			})
			_ = e.Cancel(ctx, acct, op)
		})
	}
}

// TestPreviewOpensNoNetwork: exposing a port of a networked sandbox (its
// server on 0.0.0.0) leaves the sandbox closed to the host and to another
// networked sandbox, which still reaches the outside; the preview reaches
// the server all the same, through the relay; under runsc and runc.
func TestPreviewOpensNoNetwork(t *testing.T) {
	outside := serverNetns(t)
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) { testPreviewOpensNoNetwork(t, rt, outside) })
	}
}

func testPreviewOpensNoNetwork(t *testing.T, rt, outside string) {
	e, base := newEngine(t, rt)
	ctx := context.Background()
	netOn := &Networking{Enabled: ptr(true)}
	op, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: base, Shell: ptr(true), Stdin: &Stdin{Close: ptr(false)}, Networking: netOn,
		Command: "mkdir -p /www; echo one > /www/index.html; httpd -p 0.0.0.0:8080 -h /www; echo up; cat"})
	if err != nil {
		t.Fatal(err)
	}
	waitStdout(t, e, op, "up")
	if got := fetchPreview(t, e, op, 8080); got != "200 OK one\n" {
		t.Fatalf("preview of a networked sandbox: %q", got)
	}
	evs, err := e.st.Events(ctx, op, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	ip := ""
	for _, ev := range evs {
		if ev.Type == apitypes.EventNetwork {
			var d apitypes.EventDataNetwork
			if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
				t.Fatal(err)
			}
			ip = strings.Split(d.Configured.IP4, "/")[0]
		}
	}
	if ip == "" {
		t.Fatal("no network event with the sandbox's address")
	}
	if c, err := net.DialTimeout("tcp", ip+":8080", 2*time.Second); err == nil {
		c.Close()
		t.Errorf("the host connected to the exposed port at %s:8080", ip)
	}
	// busybox's wget needs NSS modules it lacks; nc takes addresses.
	_, m := run(t, e, base, fmt.Sprintf("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 %s 8080; "+
		"printf 'GET /hello.txt HTTP/1.0\\r\\n\\r\\n' | nc -w 5 %s 18080", ip, outside), disposable, func(r *SpawnRequest) { r.Networking = netOn })
	if out := stdout(t, m); strings.Contains(out, "one") || !strings.Contains(out, "hello from outside") {
		t.Errorf("another networked sandbox: %q (stderr %q), want no answer from %s:8080 and the outside server's", out, stderr(t, m), ip)
	}
	say(t, e, op, "", true)
	waitOp(t, e, op)
}
