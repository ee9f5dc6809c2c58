package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/api"
	arbord "github.com/arborsh/arbor/internal/daemon"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// daemon is an engine on a temporary home served over httptest, with a
// client of the default account and a busybox base image tagged
// "busybox:latest".
type daemon struct {
	e     *engine.Engine
	home  string
	srv   *httptest.Server
	token string
	c     *client.Client
	base  string // busybox image uuid
	td    *testdaemon.Daemon
}

func TestMain(m *testing.M) {
	// With ARBOR_TEST_CLUSTER=1 the real daemons are clusters of arbor
	// serve's own composition (scripts/test.sh's cluster stage).
	testdaemon.RunNode = func(ctx context.Context, n testdaemon.Node, ready func(string)) error {
		return arbord.Run(ctx, arbord.Config{Home: n.Home, Listen: "127.0.0.1:0", Engine: n.Engine, Logger: n.Logger, Ready: ready,
			DB: n.DB, Blobs: n.Blobs, BlobsEndpoint: n.BlobsEndpoint, Role: n.Role, WorkerID: n.Name})
	}
	os.Exit(testdaemon.Main(m))
}

// sharedDaemon returns the daemon most tests share: over the fake runtime
// (testdaemon.Shell plays the commands) with copied roots, so the tests of
// API behaviour run without root. Tests that need their own limits start
// their own with startDaemon.
func sharedDaemon(t *testing.T) *daemon {
	t.Helper()
	return wrap(testdaemon.Shared(t, "api-fake", testdaemon.Options{Busybox: "busybox:latest", Fake: testdaemon.Shell}))
}

// realDaemon returns the shared daemon with real sandboxes (runtime runc,
// for speed; runsc is chosen per request where a test needs it), for the
// tests of what only a sandbox does. It needs root.
func realDaemon(t *testing.T) *daemon {
	t.Helper()
	return wrap(testdaemon.Shared(t, "api", testdaemon.Options{Busybox: "busybox:latest"}))
}

// startDaemon starts a daemon of the test's own over the fake runtime,
// closed when t ends.
func startDaemon(t *testing.T, cfg engine.Config, opts api.Options) *daemon {
	t.Helper()
	return wrap(testdaemon.New(t, testdaemon.Options{Engine: cfg, API: opts, Busybox: "busybox:latest", Fake: testdaemon.Shell}))
}

// startRealDaemon starts a daemon of the test's own with real sandboxes;
// it needs root.
func startRealDaemon(t *testing.T, cfg engine.Config, opts api.Options) *daemon {
	t.Helper()
	return wrap(testdaemon.New(t, testdaemon.Options{Engine: cfg, API: opts, Busybox: "busybox:latest"}))
}

// needsEngine skips t in cluster mode (testdaemon.EnvCluster), where d has
// no engine object: the cluster's are four, one per node, behind their
// own servers. what says what the test does with it.
func (d *daemon) needsEngine(t *testing.T, what string) {
	t.Helper()
	if d.e == nil {
		t.Skipf("%s=1: no single engine object to %s", testdaemon.EnvCluster, what)
	}
}

// limits are the limits as the engine has them; none in cluster mode,
// where the engines are not reachable (whoami's are checked on one node).
func (d *daemon) limits() map[string]int64 {
	if d.e == nil {
		return nil
	}
	return d.e.Limits()
}

// singleNode skips t in cluster mode: what it checks is one node's.
func singleNode(t *testing.T, what string) {
	t.Helper()
	if testdaemon.ClusterMode() {
		t.Skipf("%s=1: %s", testdaemon.EnvCluster, what)
	}
}

func wrap(d *testdaemon.Daemon) *daemon {
	return &daemon{e: d.Engine, home: d.Home, srv: d.Server, token: d.Token, c: d.Client, base: d.Busybox, td: d}
}

// importBusybox uploads a busybox rootfs tar and imports it through c as
// tag, as the daemon's own was.
func (d *daemon) importBusybox(ctx context.Context, c *client.Client, tag string) (string, error) {
	return d.td.ImportBusybox(ctx, c, tag)
}

// otherClient returns a client of a new account named after prefix.
func (d *daemon) otherClient(t *testing.T, prefix string) *client.Client {
	t.Helper()
	c, _, _ := d.account(t, prefix)
	return c
}

var accountSeq atomic.Int64

// account creates a new account (prefix plus a sequence number, so reruns
// with -count start empty) and a token of it through the API, and returns
// a client using it, the secret and the account name.
func (d *daemon) account(t *testing.T, prefix string) (c *client.Client, secret, account string) {
	t.Helper()
	account = fmt.Sprintf("%s-%d", prefix, accountSeq.Add(1))
	tok, err := d.c.CreateToken(context.Background(), apitypes.TokenCreateRequest{Account: &account})
	if err != nil {
		t.Fatalf("CreateToken(%s): %v", account, err)
	}
	c, err = client.New(d.srv.URL, tok.Secret)
	if err != nil {
		t.Fatal(err)
	}
	return c, tok.Secret, account
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func ptr[T any](v T) *T { return &v }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// raw is a plain HTTP client that neither follows redirects nor asks for
// gzip on its own, so tests see exactly what the server sends.
var raw = &http.Client{
	Transport:     &http.Transport{DisableCompression: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// rawResp is a response with its body read.
type rawResp struct {
	*http.Response
	body []byte
}

// json decodes the body into map/slice values.
func (r rawResp) json(t *testing.T) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("%s %s: body is not JSON: %v: %q", r.Request.Method, r.Request.URL, err, r.body)
	}
	return v
}

func (r rawResp) object(t *testing.T) map[string]any {
	t.Helper()
	m, ok := r.json(t).(map[string]any)
	if !ok {
		t.Fatalf("%s %s: body is not a JSON object: %q", r.Request.Method, r.Request.URL, r.body)
	}
	return m
}

// do sends a request with the token (if any) and optional headers given as
// "Key: value" strings.
func do(t *testing.T, method, url, token string, body io.Reader, headers ...string) rawResp {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := raw.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return rawResp{resp, b}
}

func (d *daemon) get(t *testing.T, path string, headers ...string) rawResp {
	t.Helper()
	return do(t, http.MethodGet, d.srv.URL+path, d.token, nil, headers...)
}

func (d *daemon) send(t *testing.T, method, path, body string, headers ...string) rawResp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	return do(t, method, d.srv.URL+path, d.token, rd, append([]string{"Content-Type: application/json"}, headers...)...)
}

// wantStatus fails unless r has status want.
func wantStatus(t *testing.T, r rawResp, want int) {
	t.Helper()
	if r.StatusCode != want {
		t.Fatalf("%s %s = %d %q, want %d", r.Request.Method, r.Request.URL.RequestURI(), r.StatusCode, r.body, want)
	}
}

// wantError checks an error answer: status, {"error": string, "status": N}
// and, if given, a substring of the message.
func wantError(t *testing.T, r rawResp, status int, substr string) {
	t.Helper()
	wantStatus(t, r, status)
	m := r.object(t)
	msg, ok := m["error"].(string)
	if !ok || msg == "" {
		t.Fatalf("%s %s: error body %q has no error string", r.Request.Method, r.Request.URL, r.body)
	}
	if got, _ := m["status"].(float64); int(got) != status {
		t.Errorf("%s %s: error body status = %v, want %d", r.Request.Method, r.Request.URL, m["status"], status)
	}
	if substr != "" && !strings.Contains(msg, substr) {
		t.Errorf("%s %s: error %q does not mention %q", r.Request.Method, r.Request.URL, msg, substr)
	}
}

// run spawns a shell command through the client and waits for it.
func (d *daemon) run(t *testing.T, c *client.Client, image, cmd string, mod ...func(*apitypes.InstanceSpawnRequest)) *apitypes.OperationResponse {
	t.Helper()
	req := apitypes.InstanceSpawnRequest{Command: cmd, Image: image, Shell: ptr(true)}
	for _, m := range mod {
		m(&req)
	}
	op, err := c.Run(ctxT(t), req)
	if err != nil {
		t.Fatalf("Run(%q): %v", cmd, err)
	}
	if op.Status != apitypes.StatusSuccess {
		t.Fatalf("Run(%q) status = %s (%s), want SUCCESS", cmd, op.Status, deref(op.Error))
	}
	return op
}

// instance decodes an instance operation's metadata.
func instance(t *testing.T, op *apitypes.OperationResponse) apitypes.InstanceMetadata {
	t.Helper()
	var m apitypes.InstanceMetadata
	if err := json.Unmarshal(op.Metadata, &m); err != nil {
		t.Fatalf("decode metadata: %v", err)
	}
	if m.Result == nil {
		t.Fatalf("operation %s has no result", op.UUID)
	}
	return m
}

func stdoutOf(t *testing.T, op *apitypes.OperationResponse) string {
	t.Helper()
	b, err := instance(t, op).Result.Stdout.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tmpUploads lists upload staging files left in the engine's home.
func (d *daemon) tmpUploads(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(d.home, "tmp", "upload-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
