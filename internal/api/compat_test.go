package api_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/engine"
)

// spawnRaw starts a shell command over raw HTTP and returns the operation id.
func (d *daemon) spawnRaw(t *testing.T, cmd string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"command": cmd, "image": d.base, "shell": true, "disposable": true})
	r := d.send(t, http.MethodPost, "/v1/instances", string(b))
	wantStatus(t, r, http.StatusCreated)
	return r.object(t)["uuid"].(string)
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return out
}

// TestGzip checks checklist item 1: gzip only when the request allows it
// (the contree CLI sends identity and cannot decode gzip), and streams are
// sync-flushed so events arrive before the end.
func TestGzip(t *testing.T) {
	d := sharedDaemon(t)
	for _, tc := range []struct {
		name, accept string
		gzip         bool
	}{
		{"no header", "", false},
		{"identity (contree CLI)", "Accept-Encoding: identity", false},
		{"gzip", "Accept-Encoding: gzip", true},
		{"gzip among others", "Accept-Encoding: br, gzip;q=0.8, deflate", true},
		{"gzip refused", "Accept-Encoding: gzip;q=0, identity", false},
		{"wildcard", "Accept-Encoding: *", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdrs []string
			if tc.accept != "" {
				hdrs = append(hdrs, tc.accept)
			}
			r := d.get(t, "/v1/openapi.json", hdrs...) // tens of KiB
			wantStatus(t, r, http.StatusOK)
			body := r.body
			if got := r.Header.Get("Content-Encoding") == "gzip"; got != tc.gzip {
				t.Fatalf("Content-Encoding = %q, want gzip=%v", r.Header.Get("Content-Encoding"), tc.gzip)
			}
			if tc.gzip {
				body = gunzip(t, body)
			}
			var v struct {
				Paths map[string]any `json:"paths"`
			}
			if err := json.Unmarshal(body, &v); err != nil || len(v.Paths) == 0 {
				t.Fatalf("body does not decode to the OpenAPI document: %v %.200q", err, body)
			}
		})
	}

	t.Run("small answers are not compressed", func(t *testing.T) {
		r := d.get(t, "/v1/whoami", "Accept-Encoding: gzip")
		wantStatus(t, r, http.StatusOK)
		if ce := r.Header.Get("Content-Encoding"); ce != "" || len(r.body) >= 1024 {
			t.Fatalf("a %d-byte answer has Content-Encoding %q, want it plain", len(r.body), ce)
		}
		if r.Header.Get("Content-Length") != strconv.Itoa(len(r.body)) {
			t.Errorf("Content-Length = %q for %d bytes", r.Header.Get("Content-Length"), len(r.body))
		}
		var v map[string]any
		if err := json.Unmarshal(r.body, &v); err != nil {
			t.Errorf("body %q: %v", r.body, err)
		}
	})

	t.Run("body-less answers are not compressed", func(t *testing.T) {
		r := d.get(t, "/v1/inspect/?tag=busybox:latest", "Accept-Encoding: gzip")
		wantStatus(t, r, http.StatusFound)
		if ce := r.Header.Get("Content-Encoding"); ce != "" || len(r.body) != 0 {
			t.Errorf("302 has Content-Encoding %q and %d body bytes, want none", ce, len(r.body))
		}
	})

	t.Run("download and archive", func(t *testing.T) {
		r := d.get(t, "/v1/inspect/"+d.base+"/download?path=/etc/passwd", "Accept-Encoding: gzip")
		wantStatus(t, r, http.StatusOK)
		if body := r.body; r.Header.Get("Content-Encoding") != "" || !strings.HasPrefix(string(body), "root:x:0:0") {
			t.Errorf("a small download: encoding %q, body %.40q", r.Header.Get("Content-Encoding"), body)
		}
		r = d.get(t, "/v1/inspect/"+d.base+"/download?path=/bin/busybox", "Accept-Encoding: gzip")
		wantStatus(t, r, http.StatusOK)
		if r.Header.Get("Content-Encoding") != "gzip" || !bytes.HasPrefix(gunzip(t, r.body), []byte("\x7fELF")) {
			t.Errorf("gzip download: encoding %q", r.Header.Get("Content-Encoding"))
		}
		r = d.get(t, "/v1/inspect/"+d.base+"/archive?path=/etc", "Accept-Encoding: gzip")
		wantStatus(t, r, http.StatusOK)
		names := tarNames(t, gunzip(t, r.body))
		if !contains(names, "passwd") {
			t.Errorf("gzip archive members %v lack passwd", names)
		}
	})

	t.Run("event stream is sync-flushed", func(t *testing.T) {
		op := d.spawnRaw(t, "echo first; sleep 1.5; echo second")
		req, _ := http.NewRequest(http.MethodGet, d.srv.URL+"/v1/operations/"+op+"/events?follow=1", nil)
		req.Header.Set("Authorization", "Bearer "+d.token)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("Content-Encoding = %q, want gzip", resp.Header.Get("Content-Encoding"))
		}
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(zr)
		start := time.Now()
		var firstStdout, completion time.Duration
		for completion == 0 {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("read stream: %v", err)
			}
			if strings.HasPrefix(line, "event: stdout") && firstStdout == 0 {
				firstStdout = time.Since(start)
			}
			if strings.HasPrefix(line, "event: completion") {
				completion = time.Since(start)
			}
		}
		if completion-firstStdout < time.Second {
			t.Errorf("first stdout frame arrived at %v, completion at %v: frames are held back until the end", firstStdout, completion)
		}
		if _, err := io.ReadAll(zr); err != nil {
			t.Errorf("gzip stream does not end cleanly after completion: %v", err)
		}
	})
}

func tarNames(t *testing.T, b []byte) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		names = append(names, h.Name)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestEvents checks the event log contract: exclusive resume by
// Last-Event-Id or since (the larger wins), replay with and without follow,
// the spid filter, keepalives, 425 before events exist, and a client that
// leaves mid-stream.
func TestEvents(t *testing.T) {
	d := sharedDaemon(t)
	op := d.spawnRaw(t, "echo one; echo two >&2")
	if _, err := d.c.Wait(ctxT(t), op); err != nil {
		t.Fatal(err)
	}
	all := frameEvents(t, firstFrames(t, d.get(t, "/v1/operations/"+op+"/events")))
	n := len(all)
	if n < 5 || all[n-1]["type"] != "completion" {
		t.Fatalf("replay without follow has %d events ending in %v, want completion last", n, all[n-1]["type"])
	}

	ids := func(path string, headers ...string) []int {
		t.Helper()
		r := d.get(t, path, headers...)
		wantStatus(t, r, http.StatusOK)
		var out []int
		for _, ev := range frameEvents(t, firstFrames(t, r)) {
			out = append(out, int(ev["id"].(float64)))
		}
		return out
	}
	base := "/v1/operations/" + op + "/events"
	for _, tc := range []struct {
		name    string
		path    string
		headers []string
		first   int
	}{
		{"since -1 is the whole log", base + "?since=-1&follow=1", nil, 0},
		{"follow=0 replays", base + "?follow=0", nil, 0},
		{"since is exclusive", base + "?since=2", nil, 3},
		{"Last-Event-Id is exclusive", base + "?follow=1", []string{"Last-Event-Id: 1"}, 2},
		{"the larger of since and Last-Event-Id wins", base + "?since=3", []string{"Last-Event-Id: 1"}, 4},
		{"the larger wins either way", base + "?since=0", []string{"Last-Event-Id: 2"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ids(tc.path, tc.headers...)
			if len(got) == 0 || got[0] != tc.first || got[len(got)-1] != n-1 {
				t.Errorf("ids = %v, want %d..%d", got, tc.first, n-1)
			}
		})
	}

	t.Run("resume after completion is an empty stream", func(t *testing.T) {
		if got := ids(base, fmt.Sprintf("Last-Event-Id: %d", n-1)); len(got) != 0 {
			t.Errorf("ids = %v, want none", got)
		}
	})

	t.Run("spid filter keeps completion", func(t *testing.T) {
		r := d.get(t, base+"?spid=1")
		evs := frameEvents(t, firstFrames(t, r))
		for _, ev := range evs[:len(evs)-1] {
			if ev["spid"] != float64(1) {
				t.Errorf("spid=1 stream has %v", ev)
			}
		}
		if evs[len(evs)-1]["type"] != "completion" {
			t.Errorf("spid=1 stream does not end with completion")
		}
	})

	t.Run("bad parameters", func(t *testing.T) {
		wantError(t, d.get(t, base+"?since=abc"), http.StatusBadRequest, "since")
		wantError(t, d.get(t, base, "Last-Event-Id: x"), http.StatusBadRequest, "Last-Event-Id")
		wantError(t, d.get(t, base+"?spid=-2"), http.StatusBadRequest, "spid")
		wantError(t, d.get(t, base+"?follow=maybe"), http.StatusBadRequest, "follow")
		wantError(t, d.get(t, "/v1/operations/00000000-0000-4000-8000-000000000000/events"), http.StatusNotFound, "")
		wantError(t, d.get(t, "/v1/operations/not-a-uuid/events"), http.StatusBadRequest, "UUID")
	})

	t.Run("keepalive comments", func(t *testing.T) {
		d.needsEngine(t, "serve it with a short keepalive")
		srv := httptest.NewServer(api.New(d.e, api.Options{Keepalive: 100 * time.Millisecond}))
		defer srv.Close()
		op := d.spawnRaw(t, "sleep 0.8")
		r := do(t, http.MethodGet, srv.URL+"/v1/operations/"+op+"/events?follow=1", d.token, nil)
		frames, comments := parseSSE(t, r.body)
		if !contains(comments, ": keepalive") {
			t.Errorf("no keepalive comment in a quiet stream: %q", r.body)
		}
		if evs := frameEvents(t, frames); evs[len(evs)-1]["type"] != "completion" {
			t.Errorf("stream with keepalives does not end with completion")
		}
	})

	t.Run("client leaving mid-stream", func(t *testing.T) {
		op := d.spawnRaw(t, "echo start; sleep 1; echo end")
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.srv.URL+"/v1/operations/"+op+"/events?follow=1", nil)
		req.Header.Set("Authorization", "Bearer "+d.token)
		resp, err := raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		cancel() // drop the connection in the middle of the stream
		resp.Body.Close()
		res, err := d.c.Wait(ctxT(t), op)
		if err != nil || res.Status != apitypes.StatusSuccess {
			t.Fatalf("operation after a follower left: %v %v", res, err)
		}
		if _, err := d.c.WhoAmI(ctxT(t)); err != nil {
			t.Fatalf("daemon unhealthy after a follower left: %v", err)
		}
	})
}

// firstFrames parses an SSE answer, failing on anything but 200.
func firstFrames(t *testing.T, r rawResp) []sseFrame {
	t.Helper()
	wantStatus(t, r, http.StatusOK)
	f, _ := parseSSE(t, r.body)
	return f
}

// TestQueuedOperation uses a daemon with one run slot, so a second run
// stays PENDING: its events are 425 Too Early (with Retry-After) unless
// followed, and a follower gets them once the run starts.
func TestQueuedOperation(t *testing.T) {
	singleNode(t, "one run slot is one node's: a cluster's two workers have one each")
	d := startDaemon(t, engine.Config{Slots: 1}, api.Options{})
	blocker := d.spawnRaw(t, "sleep 30")
	queued := d.spawnRaw(t, "echo finally")
	waitStatus(t, d.c, blocker, apitypes.StatusExecuting)
	if op, _ := d.c.Operation(ctxT(t), queued); op.Status != apitypes.StatusPending {
		t.Fatalf("second run is %s, want PENDING behind the first", op.Status)
	}

	r := d.get(t, "/v1/operations/"+queued+"/events")
	wantError(t, r, http.StatusTooEarly, "not ready")
	if r.Header.Get("Retry-After") == "" {
		t.Error("425 without Retry-After")
	}
	wantError(t, d.get(t, "/v1/operations/"+queued+"/subprocesses/1"), http.StatusTooEarly, "")
	wantError(t, d.get(t, "/v1/operations/"+queued+"/subprocesses/2"), http.StatusNotFound, "no process 2")

	// A follower waits through PENDING; cancelling the blocker lets it run.
	got := make(chan []string, 1)
	go func() {
		var types []string
		err := d.c.FollowEvents(context.Background(), queued, -1, func(ev apitypes.OperationEvent) error {
			types = append(types, ev.Type)
			return nil
		})
		if err != nil {
			types = append(types, "error: "+err.Error())
		}
		got <- types
	}()
	time.Sleep(200 * time.Millisecond) // deliberate: let the follower attach while PENDING (it would also pass replaying)
	if err := d.c.Cancel(ctxT(t), blocker); err != nil {
		t.Fatal(err)
	}
	select {
	case types := <-got:
		if len(types) == 0 || types[len(types)-1] != apitypes.EventCompletion || !contains(types, apitypes.EventExit) {
			t.Errorf("follower of the queued run saw %v, want its events through completion", types)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("follower of a queued run never finished")
	}
	res, err := d.c.Wait(ctxT(t), blocker)
	if err != nil || res.Status != apitypes.StatusCancelled {
		t.Fatalf("cancelled blocker: %v %v", res.Status, err)
	}
}

// waitStatus polls until operation id reaches status.
func waitStatus(t *testing.T, c *client.Client, id, status string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		op, err := c.Operation(ctxT(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if op.Status == status {
			return
		}
		if apitypes.IsTerminal(op.Status) || time.Now().After(deadline) {
			t.Fatalf("operation %s is %s, want %s", id, op.Status, status)
		}
		time.Sleep(20 * time.Millisecond) // status changes are not events: poll
	}
}

// TestPrefixMount serves the API under a path prefix, as behind
// https://api.example/sandboxes: Locations keep the prefix (or are
// relative), and the client works with a base URL that has one.
func TestPrefixMount(t *testing.T) {
	d := sharedDaemon(t)
	d.needsEngine(t, "serve it under a path prefix")
	mux := http.NewServeMux()
	mux.Handle("/sandboxes/", http.StripPrefix("/sandboxes", api.New(d.e, api.Options{})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c, err := client.New(srv.URL+"/sandboxes", d.token)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"command": "true", "image": d.base, "disposable": true})
	r := do(t, http.MethodPost, srv.URL+"/sandboxes/v1/instances", d.token, bytes.NewReader(b), "Content-Type: application/json")
	wantStatus(t, r, http.StatusCreated)
	op := r.object(t)["uuid"].(string)
	if loc := r.Header.Get("Location"); loc != "/sandboxes/v1/operations/"+op {
		t.Errorf("Location under a prefix = %q, want /sandboxes/v1/operations/%s", loc, op)
	}
	if _, err := c.Wait(ctxT(t), op); err != nil {
		t.Fatal(err)
	}
	im, err := c.ResolveImage(ctxT(t), "tag:busybox:latest")
	if err != nil || im.UUID != d.base {
		t.Fatalf("ResolveImage under a prefix = %v, %v", im, err)
	}
	// A redirect-following client (contree-mcp, old SDKs) lands on the image.
	follow := &http.Client{}
	for _, p := range []string{"/sandboxes/v1/inspect/?tag=busybox:latest", "/sandboxes/v1/inspect?tag=busybox:latest"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+p, nil)
		req.Header.Set("Authorization", "Bearer "+d.token)
		resp, err := follow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var im apitypes.Image
		err = json.NewDecoder(resp.Body).Decode(&im)
		resp.Body.Close()
		if err != nil || im.UUID != d.base || !strings.HasSuffix(resp.Request.URL.Path, "/sandboxes/v1/inspect/"+d.base+"/") {
			t.Errorf("following %s ended at %s with %v (%v)", p, resp.Request.URL.Path, im.UUID, err)
		}
	}
}

// TestRequestID checks X-Request-ID is echoed or generated.
func TestRequestID(t *testing.T) {
	d := sharedDaemon(t)
	if got := d.get(t, "/v1/whoami", "X-Request-ID: abc-123").Header.Get("X-Request-ID"); got != "abc-123" {
		t.Errorf("echoed X-Request-ID = %q, want abc-123", got)
	}
	a, b := d.get(t, "/v1/whoami").Header.Get("X-Request-ID"), d.get(t, "/v1/whoami").Header.Get("X-Request-ID")
	if a == "" || a == b {
		t.Errorf("generated X-Request-IDs %q and %q, want distinct non-empty ids", a, b)
	}
	if got := d.get(t, "/v1/whoami", "X-Request-ID: "+strings.Repeat("x", 300)).Header.Get("X-Request-ID"); len(got) > 128 {
		t.Errorf("an oversized X-Request-ID was echoed (%d bytes)", len(got))
	}
}
