package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// signalLog is a slog handler that closes a channel when a record whose
// message starts with prefix is logged: the test waits for the daemon to
// reach a step instead of sleeping.
type signalLog struct {
	slog.Handler
	prefix string
	once   *sync.Once
	seen   chan struct{}
}

func (h signalLog) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.prefix) {
		h.once.Do(func() { close(h.seen) })
	}
	return h.Handler.Handle(ctx, r)
}

func (h signalLog) WithAttrs(a []slog.Attr) slog.Handler {
	h.Handler = h.Handler.WithAttrs(a)
	return h
}

// TestGracefulShutdown: on SIGTERM (ctx ends) the daemon refuses new runs
// with 503 naming the shutdown, keeps serving while a running run finishes
// and commits within --shutdown-timeout, and fails the run still going at
// the deadline with a reason.
func TestGracefulShutdown(t *testing.T) {
	testutil.RequiresRoot(t)
	home := testutil.Home(t)
	const deadline = 6 * time.Second
	draining := signalLog{Handler: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}),
		prefix: "shutting down", once: &sync.Once{}, seen: make(chan struct{})}
	ctx, sigterm := context.WithCancel(context.Background())
	defer sigterm()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Home: home, Listen: "127.0.0.1:0", ShutdownTimeout: deadline,
			Engine: engine.Config{Runtime: "runc", WarmPerImage: -1}, Logger: slog.New(draining),
			Ready: func(url string) { ready <- url }})
	}()
	var url string
	select {
	case url = <-ready:
	case err := <-done:
		t.Fatalf("daemon stopped: %v", err)
	}
	tok, err := os.ReadFile(filepath.Join(home, "token"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(url, strings.TrimSpace(string(tok)))
	if err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base, err := testdaemon.ImportBusybox(tctx, c, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	shell := true
	spawn := func(cmd string) string {
		t.Helper()
		sp, err := c.Spawn(tctx, apitypes.InstanceSpawnRequest{Command: cmd, Image: base, Shell: &shell})
		if err != nil {
			t.Fatal(err)
		}
		return sp.UUID
	}
	// Both running (they touch a file once started) before the signal.
	short := spawn("touch /started; sleep 2; echo finished > /out")
	long := spawn("touch /started; sleep 600")
	for _, id := range []string{short, long} {
		for {
			op, err := c.Operation(tctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if op.Status == apitypes.StatusExecuting {
				break
			}
			if op.Status != apitypes.StatusPending && op.Status != apitypes.StatusAssigned {
				t.Fatalf("operation %s is %s before the shutdown", id, op.Status)
			}
			time.Sleep(50 * time.Millisecond) // polling: the API has no wait-for-EXECUTING
		}
	}
	began := time.Now()
	sigterm()
	select {
	case <-draining.seen:
	case <-time.After(time.Minute):
		t.Fatal("the daemon did not log that it is shutting down")
	}

	// New runs: 503 with Retry-After and the reason.
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/instances", strings.NewReader(`{"command":"true","image":"`+base+`"}`))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Content-Type", "application/json")
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 503 || r.Header.Get("Retry-After") == "" {
		t.Errorf("spawn while shutting down: %d, Retry-After %q; want 503 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"))
	}
	once, err := client.New(url, strings.TrimSpace(string(tok)), client.WithRetries(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	_, err = once.Spawn(tctx, apitypes.InstanceSpawnRequest{Command: "true", Image: base})
	if err == nil || !strings.Contains(err.Error(), "daemon is shutting down") {
		t.Errorf("spawn while shutting down: %v, want an error naming the shutdown", err)
	}

	// The short run finishes and commits while the daemon still serves.
	op, err := c.Wait(tctx, short)
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != apitypes.StatusSuccess || op.Result.Image == nil {
		t.Fatalf("run within the deadline: %s (%v), want SUCCESS with an image", op.Status, op.Error)
	}
	out, err := c.ReadFile(tctx, *op.Result.Image, "/out")
	if err != nil || strings.TrimSpace(string(out)) != "finished" {
		t.Errorf("committed /out = %q, %v", out, err)
	}

	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(deadline + time.Minute):
		t.Fatal("daemon did not stop after the shutdown timeout")
	}
	if took := time.Since(began); took < deadline {
		t.Errorf("daemon stopped after %v, before the %v shutdown timeout, with a run still going", took, deadline)
	}
	st, err := store.Open(tctx, filepath.Join(home, "arbor.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	row, err := st.Operation(tctx, engine.DefaultAccount, long)
	if err != nil {
		t.Fatal(err)
	}
	if row.Status != apitypes.StatusFailed || !strings.Contains(row.Error, "daemon shut down") {
		t.Errorf("run cut at the deadline: %s %q, want FAILED naming the shutdown", row.Status, row.Error)
	}
}
