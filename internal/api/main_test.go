package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil"
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
}

var (
	sharedOnce sync.Once
	shared     *daemon
	sharedErr  error
	cleanups   []func()
)

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(code)
}

// sharedDaemon returns the daemon most tests share (runtime runc, for
// speed; runsc is chosen per request where a test needs it). Tests that
// need their own limits start their own with startDaemon.
func sharedDaemon(t *testing.T) *daemon {
	t.Helper()
	testutil.RequiresRoot(t)
	sharedOnce.Do(func() {
		home, err := os.MkdirTemp("", "arbor-api-test-")
		if err != nil {
			sharedErr = err
			return
		}
		cleanups = append(cleanups, func() { os.RemoveAll(home) })
		shared, sharedErr = newDaemon(home, engine.Config{Runtime: "runc"}, api.Options{}, &cleanups)
	})
	if sharedErr != nil {
		t.Fatalf("start shared daemon: %v", sharedErr)
	}
	return shared
}

// startDaemon starts a daemon of the test's own, closed when t ends.
func startDaemon(t *testing.T, cfg engine.Config, opts api.Options) *daemon {
	t.Helper()
	testutil.RequiresRoot(t)
	home := testutil.Home(t) // before the cleanup below, so it is removed after the engine closes
	var cl []func()
	t.Cleanup(func() {
		for i := len(cl) - 1; i >= 0; i-- {
			cl[i]()
		}
	})
	d, err := newDaemon(home, cfg, opts, &cl)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newDaemon(home string, cfg engine.Config, opts api.Options, cleanup *[]func()) (*daemon, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg.Home = home
	if cfg.Runtime == "" {
		cfg.Runtime = "runc"
	}
	e, err := engine.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	*cleanup = append(*cleanup, func() { e.Close() })
	srv := httptest.NewServer(api.New(e, opts))
	// Close streams still open (a test's follower) before the engine.
	*cleanup = append(*cleanup, func() { srv.CloseClientConnections(); srv.Close() })
	_, secret, err := e.CreateToken(ctx, engine.DefaultAccount, "test", 0)
	if err != nil {
		return nil, err
	}
	c, err := client.New(srv.URL, secret)
	if err != nil {
		return nil, err
	}
	d := &daemon{e: e, home: home, srv: srv, token: secret, c: c}
	d.base, err = importBusybox(ctx, c, "busybox:latest")
	return d, err
}

// importBusybox builds the busybox rootfs tar, uploads it and imports it
// through the API, as a user without registry access would.
func importBusybox(ctx context.Context, c *client.Client, tag string) (string, error) {
	var buf bytes.Buffer
	if err := baseimage.WriteBusyboxTar(&buf); err != nil {
		return "", err
	}
	f, err := c.UploadFile(ctx, &buf)
	if err != nil {
		return "", err
	}
	op, err := c.ImportImage(ctx, apitypes.ImageImportRequest{Registry: apitypes.ImageImportRegistry{URL: "upload://" + f.UUID}, Tag: &tag})
	if err != nil {
		return "", err
	}
	res, err := c.Wait(ctx, op)
	if err != nil {
		return "", err
	}
	if res.Status != apitypes.StatusSuccess || res.ResultImageUUID == nil {
		return "", &client.Error{Status: 500, Message: "import failed: " + res.Status + " " + deref(res.Error)}
	}
	return *res.ResultImageUUID, nil
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
