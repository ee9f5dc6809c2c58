package webui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/daemon"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
	"github.com/arborsh/arbor/internal/webui"
)

// chromiumPath is Debian's chromium, which the e2e script drives through
// playwright-core (no browser download).
const chromiumPath = "/usr/bin/chromium"

// requireBrowser skips the test unless node and chromium are installed;
// under CI (CI=true) it fails instead, so a broken set-up cannot pass.

// TestMain removes the static init the tests build once (testdaemon.Main).
func TestMain(m *testing.M) { os.Exit(testdaemon.Main(m)) }

func requireBrowser(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	var missing []string
	if err != nil {
		missing = append(missing, "node")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		missing = append(missing, chromiumPath+" (apt-get install chromium)")
	}
	if len(missing) == 0 {
		return node
	}
	msg := "the web UI's browser test needs " + strings.Join(missing, " and ") + "; scripts/setup.sh installs them"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// tree is the small lineage the test builds, handed to the script as JSON
// in ARBOR_E2E_TREE.
type tree struct {
	Base    string `json:"base"`    // busybox import, tagged busybox:latest
	Env     string `json:"env"`     // set-up run on base, tagged env
	FixA    string `json:"fix_a"`   // on env, tagged fix-a: stdout "fix a", stderr "warn a"
	FixB    string `json:"fix_b"`   // on env, tagged fix-b: exits 3
	FixC    string `json:"fix_c"`   // on env, untagged: deletes /work/greeting.txt
	Running string `json:"running"` // operation on fix-a still running: prints "live-start", sleeps
}

// TestBrowser drives the web UI in headless Chromium against a real daemon:
// it builds a small tree through the Go client, then runs e2e/ui.test.mjs,
// which signs in, checks the tree, opens nodes (output, live log, files,
// diff), moves and removes tags, cancels a running operation, walks the
// tree with the keyboard, checks contrast, and fails on any console error.
// Screenshots go to $ARBOR_ARTIFACTS/webui when set, else to a temporary
// directory.
//
// It needs Debian's chromium and node; scripts/setup.sh installs chromium
// (apt) and playwright-core (npm ci --prefix internal/webui/e2e); the script
// runs npm ci itself when node_modules is missing.
func TestBrowser(t *testing.T) {
	testutil.RequiresRoot(t)
	node := requireBrowser(t)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	home := testutil.Home(t)
	apiURL, token := startDaemon(t, ctx, home)

	c, err := client.New(apiURL, token)
	if err != nil {
		t.Fatal(err)
	}
	tr := buildTree(t, ctx, c)

	// One origin for the app and the API, as when the daemon mounts the
	// handler itself.
	target, _ := url.Parse(apiURL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1 // stream event logs as they come
	mux := http.NewServeMux()
	mux.Handle("/v1/", proxy)
	mux.Handle("/", webui.Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer srv.CloseClientConnections()

	shots := t.TempDir()
	if dir := os.Getenv("ARBOR_ARTIFACTS"); dir != "" {
		shots = filepath.Join(dir, "webui")
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	spec, _ := json.Marshal(tr)
	script, err := filepath.Abs(filepath.Join("e2e", "ui.test.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 100*time.Second)
	defer scancel()
	cmd := exec.CommandContext(sctx, node, script, srv.URL, token, shots)
	cmd.Env = append(os.Environ(), "ARBOR_E2E_TREE="+string(spec))
	cmd.WaitDelay = 5 * time.Second
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err = cmd.Run()
	t.Logf("ui.test.mjs (%.1fs):\n%s", time.Since(start).Seconds(), out.String())
	t.Logf("screenshots: %s", shots)
	if err != nil {
		t.Fatalf("ui.test.mjs: %v", err)
	}

	// What the script did through the UI, seen through the API.
	tags := map[string]string{}
	for _, id := range []string{tr.Base, tr.Env, tr.FixA, tr.FixB, tr.FixC} {
		im, err := c.Image(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		tags[id] = deref(im.Tag)
	}
	for id, want := range map[string]string{tr.Base: "busybox:latest", tr.Env: "env", tr.FixA: "", tr.FixB: "", tr.FixC: "fix-a"} {
		if tags[id] != want {
			t.Errorf("after the UI moved fix-a to fix_c and removed fix-b: image %s has tag %q, want %q", id, tags[id], want)
		}
	}
	op, err := c.Operation(ctx, tr.Running)
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != apitypes.StatusCancelled {
		t.Errorf("running operation after the UI cancelled it: status %s, want %s", op.Status, apitypes.StatusCancelled)
	}
}

// startDaemon runs a real daemon (runc) on a free loopback port until the
// test ends, and returns its URL and the default account's token.
func startDaemon(t *testing.T, ctx context.Context, home string) (string, string) {
	t.Helper()
	dctx, stop := context.WithCancel(ctx)
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(dctx, daemon.Config{
			Home: home, Listen: "127.0.0.1:0", Engine: engine.Config{Runtime: "runc", InitBinary: initBin(t)},
			Ready: func(u string) { ready <- u },
		})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("daemon.Run: %v", err)
		}
	})
	var u string
	select {
	case u = <-ready:
	case err := <-done:
		t.Fatalf("daemon.Run: %v", err)
	case <-ctx.Done():
		t.Fatal("daemon did not start in time")
	}
	b, err := os.ReadFile(filepath.Join(home, "token"))
	if err != nil {
		t.Fatal(err)
	}
	return u, strings.TrimSpace(string(b))
}

func buildTree(t *testing.T, ctx context.Context, c *client.Client) tree {
	t.Helper()
	var tr tree
	var buf bytes.Buffer
	if err := baseimage.WriteBusyboxTar(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := c.UploadFile(ctx, &buf)
	if err != nil {
		t.Fatal(err)
	}
	tag := "busybox:latest"
	imp, err := c.ImportImage(ctx, apitypes.ImageImportRequest{Registry: apitypes.ImageImportRegistry{URL: "upload://" + f.UUID}, Tag: &tag})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Wait(ctx, imp)
	if err != nil {
		t.Fatal(err)
	}
	if res.ResultImageUUID == nil {
		t.Fatalf("import: %s %s", res.Status, deref(res.Error))
	}
	tr.Base = *res.ResultImageUUID

	run := func(from, command, tag string, wantExit int) string {
		t.Helper()
		res, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Command: command, Image: from, Shell: ptr(true), Disposable: ptr(false)})
		if err != nil {
			t.Fatalf("run %q: %v", command, err)
		}
		if res.Status != apitypes.StatusSuccess || res.ResultImageUUID == nil {
			t.Fatalf("run %q: %s %s", command, res.Status, deref(res.Error))
		}
		var meta apitypes.InstanceMetadata
		if err := json.Unmarshal(res.Metadata, &meta); err != nil || meta.Result == nil {
			t.Fatalf("run %q: metadata %s: %v", command, res.Metadata, err)
		}
		if meta.Result.State.ExitCode != wantExit {
			t.Fatalf("run %q: exit code %d, want %d (stderr %q)", command, meta.Result.State.ExitCode, wantExit, meta.Result.Stderr.Value)
		}
		if tag != "" {
			if _, err := c.SetTag(ctx, *res.ResultImageUUID, tag); err != nil {
				t.Fatal(err)
			}
		}
		return *res.ResultImageUUID
	}
	tr.Env = run(tr.Base, "mkdir -p /work && echo hello > /work/greeting.txt && echo setup done", "env", 0)
	tr.FixA = run(tr.Env, "echo retry >> /work/greeting.txt && echo fix a && echo warn a >&2", "fix-a", 0)
	tr.FixB = run(tr.Env, "echo pool > /work/pool.txt; echo fix b; exit 3", "fix-b", 3)
	tr.FixC = run(tr.Env, "rm /work/greeting.txt && echo fix c", "", 0)

	sp, err := c.Spawn(ctx, apitypes.InstanceSpawnRequest{Command: "echo live-start; sleep 120", Image: tr.FixA,
		Shell: ptr(true), Disposable: ptr(false)})
	if err != nil {
		t.Fatal(err)
	}
	tr.Running = sp.UUID
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Cancel(cctx, sp.UUID) // if the script did not get that far
	})
	// Wait until it prints, so the UI's live log has something to show.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var seen bool
		err := c.StreamEvents(ctx, sp.UUID, client.EventsOptions{After: -1}, func(ev apitypes.OperationEvent) error {
			if ev.Type == apitypes.EventStdout && strings.Contains(string(ev.Data), "live-start") {
				seen = true
			}
			return nil
		})
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("running operation printed nothing in 30s (last error: %v)", err)
		}
		time.Sleep(100 * time.Millisecond) // the page renders no event to wait on: poll
	}
	return tr
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func ptr[T any](v T) *T { return &v }

// initBin is arbor's static init, which port previews need in the daemon.
func initBin(t *testing.T) string {
	t.Helper()
	p, err := testdaemon.StaticInit()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
