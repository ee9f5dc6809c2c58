package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestResourcesAndPrompts reads every resource template and renders every
// prompt.
func TestResourcesAndPrompts(t *testing.T) {
	e := daemonEnv(t)
	s := connect(t, e.c, Options{})
	ctx := ctxT(t)

	var r RunOut
	s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "mkdir -p /root/d && printf 'hi\\n' > /root/d/a.txt && printf '\\000\\001' > /root/d/bin"}, &r)

	lt, err := s.cs.ListResourceTemplates(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var templates []string
	for _, rt := range lt.ResourceTemplates {
		templates = append(templates, rt.URITemplate)
	}
	for _, want := range []string{readTemplate, lsTemplate, lineageTemplate, opTemplate, guideTemplate} {
		if !slices.Contains(templates, want) {
			t.Errorf("resource templates = %v, want %s", templates, want)
		}
	}

	read := func(uri string) *mcpsdk.ResourceContents {
		t.Helper()
		res, err := s.cs.ReadResource(ctx, &mcpsdk.ReadResourceParams{URI: uri})
		if err != nil {
			t.Fatalf("ReadResource(%s): %v", uri, err)
		}
		if len(res.Contents) != 1 {
			t.Fatalf("ReadResource(%s): %d contents", uri, len(res.Contents))
		}
		return res.Contents[0]
	}
	img := r.ResultImage
	for _, uri := range []string{
		"arbor://image/" + img + "/read/root/d/a.txt",
		"arbor://image/" + url.PathEscape("tag:busybox:latest") + "/read/etc/passwd",
		"arbor://image/tag:busybox:latest/read/etc/passwd",
		"arbor://image/busybox:latest/read/etc/passwd",
	} {
		c := read(uri)
		if c.Text == "" || c.URI != uri {
			t.Errorf("read %s = %+v", uri, c)
		}
	}
	if c := read("arbor://image/" + img + "/read/root/d/bin"); string(c.Blob) != "\x00\x01" || c.Text != "" {
		t.Errorf("binary resource = %+v, want a blob", c)
	}
	if c := read("arbor://image/" + img + "/ls/root/d"); !strings.Contains(c.Text, "a.txt") || c.MIMEType != "text/plain" {
		t.Errorf("ls resource = %+v", c)
	}
	if c := read("arbor://image/" + img + "/ls/"); !strings.Contains(c.Text, "root") {
		t.Errorf("ls / resource = %q", c.Text)
	}
	if c := read("arbor://image/" + img + "/lineage"); !strings.Contains(c.Text, e.base) {
		t.Errorf("lineage resource = %q, want the base %s", c.Text, e.base)
	}
	var oi OperationInfo
	if err := json.Unmarshal([]byte(read("arbor://operations/"+r.OperationID).Text), &oi); err != nil || oi.ResultImage != img || oi.ExitCode == nil {
		t.Errorf("operation resource = %+v (%v)", oi, err)
	}
	if c := read("arbor://guide/workflow"); !strings.Contains(c.Text, "checkpoint") {
		t.Errorf("guide resource = %q", c.Text)
	}
	for _, bad := range []string{
		"arbor://image/nope/read/etc/passwd",
		"arbor://image/" + img + "/read/root/nope",
		"arbor://operations/00000000-0000-0000-0000-000000000000",
		"arbor://guide/nope",
		"arbor://elsewhere",
	} {
		if _, err := s.cs.ReadResource(ctx, &mcpsdk.ReadResourceParams{URI: bad}); err == nil {
			t.Errorf("ReadResource(%s) succeeded, want an error", bad)
		} else {
			t.Logf("%s: %v", bad, err)
		}
	}

	lp, err := s.cs.ListPrompts(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range lp.Prompts {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, promptNames()) {
		t.Errorf("prompts = %v, want %v", names, promptNames())
	}
	gp, err := s.cs.GetPrompt(ctx, &mcpsdk.GetPromptParams{Name: "explore-fixes", Arguments: map[string]string{"task": "fix add", "image": "flow-env"}})
	if err != nil {
		t.Fatal(err)
	}
	msg := gp.Messages[0].Content.(*mcpsdk.TextContent).Text
	for _, want := range []string{"fix add", `image="flow-env"`, "3 candidate", "branch", "diff", "rollback"} {
		if !strings.Contains(msg, want) {
			t.Errorf("explore-fixes prompt lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "{") && strings.Contains(msg, "{task}") {
		t.Errorf("explore-fixes prompt has unfilled placeholders:\n%s", msg)
	}
	for _, p := range prompts {
		args := map[string]string{}
		for _, a := range p.args {
			args[a.Name] = "X"
		}
		if _, err := s.cs.GetPrompt(ctx, &mcpsdk.GetPromptParams{Name: p.name, Arguments: args}); err != nil {
			t.Errorf("GetPrompt(%s): %v", p.name, err)
		}
	}
	if _, err := s.cs.GetPrompt(ctx, &mcpsdk.GetPromptParams{Name: "debug-failure"}); err == nil {
		t.Errorf("GetPrompt(debug-failure) without operation_id succeeded")
	}
}

// TestStdio serves ServeStdio on pipes standing in for the process's
// stdin and stdout, and drives a run through the SDK's IOTransport.
func TestStdio(t *testing.T) {
	e := fakeEnv(t)
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	oldIn, oldOut := os.Stdin, os.Stdout
	os.Stdin, os.Stdout = inR, outW
	restore := func() { os.Stdin, os.Stdout = oldIn, oldOut }
	defer restore()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- ServeStdio(ctx, e.c) }()

	cs, err := mcpsdk.NewClient(&mcpsdk.Implementation{Name: "stdio-test", Version: "0"}, nil).
		Connect(ctx, &mcpsdk.IOTransport{Reader: outR, Writer: inW}, nil)
	restore() // the server holds its streams now
	if err != nil {
		t.Fatal(err)
	}
	s := newSession(t, cs)
	if _, ok := s.tools["sync"]; !ok {
		t.Errorf("stdio server lacks the local-file tool sync")
	}
	var r RunOut
	s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "echo over stdio", "disposable": true}, &r)
	if r.Stdout != "over stdio\n" {
		t.Errorf("run over stdio = %+v", r)
	}
	cs.Close()
	inW.Close() // the client went away: the server sees EOF
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeStdio after the client closed = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("ServeStdio did not return after its input closed")
	}
}

// TestServeIO checks the CLI's entry point ends cleanly when its context does.
func TestServeIO(t *testing.T) {
	e := fakeEnv(t)
	inR, inW := io.Pipe()
	defer inW.Close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ServeIO(ctx, e.c, inR, io.Discard) }()
	time.Sleep(50 * time.Millisecond) // deliberate: cancel while it serves
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeIO after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("ServeIO did not return after its context ended")
	}
}

// bearer adds a bearer token to every request.
type bearer struct {
	token string
	rt    http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}

// TestHTTP serves HTTPHandler with per-request authentication, as the
// daemon mounts it at /mcp (acting on the API handler in process), and
// drives it with the SDK's streamable client.
func TestHTTP(t *testing.T) {
	e := daemonEnv(t)
	if e.api == nil {
		t.Fatal("the test daemon has no in-process API handler")
	}
	asCaller := InProcess(e.api)
	newBackend := func(r *http.Request) (Backend, error) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok != e.token {
			return nil, errors.New("missing or unknown bearer token")
		}
		return asCaller(tok)
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", HTTPHandler(newBackend))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := ctxT(t)

	connectWith := func(token string) (*mcpsdk.ClientSession, error) {
		hc := &http.Client{Transport: bearer{token: token, rt: http.DefaultTransport}}
		return mcpsdk.NewClient(&mcpsdk.Implementation{Name: "http-test", Version: "0"}, nil).
			Connect(ctx, &mcpsdk.StreamableClientTransport{Endpoint: srv.URL + "/mcp", HTTPClient: hc}, nil)
	}
	if cs, err := connectWith("wrong"); err == nil {
		cs.Close()
		t.Errorf("connecting with a wrong token succeeded")
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/mcp", strings.NewReader(`{}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("POST /mcp without a token = %d %q, want 401 with a Bearer challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	cs, err := connectWith(e.token)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	s := newSession(t, cs)
	for _, local := range []string{"sync", "download"} {
		if _, ok := s.tools[local]; ok {
			t.Errorf("HTTP server offers %s, which touches the daemon's filesystem", local)
		}
	}
	s.callErr(t, "upload", map[string]any{"path": "/etc/shadow"}, "not available")
	var up UploadOut
	s.call(t, "upload", map[string]any{"content": "over http\n"}, &up)
	var r RunOut
	s.call(t, "run", map[string]any{"image": "busybox:latest", "command": "cat /root/f", "files": map[string]any{"/root/f": up.UUID}}, &r)
	if r.Stdout != "over http\n" || r.ResultImage == "" {
		t.Errorf("run over HTTP = %+v", r)
	}
	res, err := cs.ReadResource(ctx, &mcpsdk.ReadResourceParams{URI: "arbor://image/" + r.ResultImage + "/read/root/f"})
	if err != nil || res.Contents[0].Text != "over http\n" {
		t.Errorf("resource over HTTP = %+v, %v", res, err)
	}
}
