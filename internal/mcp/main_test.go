package mcp

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/runtime/fakeruntime"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// env is a daemon on a temporary home, a client of its default account,
// and a busybox base image tagged "busybox:latest".
type env struct {
	url, token, home string
	c                *client.Client
	base             string
	api              http.Handler // the daemon's /v1 handler, in this process
}

func TestMain(m *testing.M) { os.Exit(testdaemon.Main(m)) }

// daemonEnv returns the daemon with real sandboxes (runc) the package's
// tests share, starting it on first use: the tools' flows run real shell
// scripts, place files owned by root and import root's busybox, so it
// needs root. It is wired in process rather than through internal/daemon,
// which imports this package (an import cycle in tests).
func daemonEnv(t *testing.T) *env { return sharedEnv(t, "mcp", nil) }

// fakeEnv returns the shared daemon over the fake runtime (testdaemon.Shell
// plays the commands) with copied roots, for tests of the transports
// rather than of the tools' runs; it runs without root.
func fakeEnv(t *testing.T) *env { return sharedEnv(t, "mcp-fake", testdaemon.Shell) }

func sharedEnv(t *testing.T, name string, fake fakeruntime.Handler) *env {
	t.Helper()
	cfg := engine.Config{Logger: slog.New(slog.DiscardHandler)}
	if fake == nil {
		// Real sandboxes run the static init, as in production
		// (fork_instance needs it).
		init, err := testdaemon.StaticInit()
		if err != nil {
			t.Fatal(err)
		}
		cfg.InitBinary = init
	}
	d := testdaemon.Shared(t, name, testdaemon.Options{
		Engine:  cfg,
		API:     api.Options{Logger: slog.New(slog.DiscardHandler)},
		Busybox: "busybox:latest",
		Fake:    fake,
	})
	e := &env{url: d.URL, token: d.Token, home: d.Home, c: d.Client, base: d.Busybox}
	if d.Server != nil {
		e.api = d.Server.Config.Handler
	}
	return e
}

// session is an MCP client session connected to a server, with the
// output schemas of the server's tools for validating every answer, and a
// record of which tools were called successfully and with errors.
type session struct {
	cs      *mcpsdk.ClientSession
	tools   map[string]*mcpsdk.Tool
	schemas map[string]*jsonschema.Resolved
	mu      sync.Mutex
	ok, bad map[string]bool
}

// connect serves NewServer(b, opts) over in-memory transports.
func connect(t *testing.T, b Backend, opts Options) *session {
	t.Helper()
	ctx := context.Background()
	st, ct := mcpsdk.NewInMemoryTransports()
	ss, err := NewServer(b, opts).Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := mcpsdk.NewClient(&mcpsdk.Implementation{Name: "arbor-test", Version: "0"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close(); ss.Close() })
	return newSession(t, cs)
}

// newSession lists cs's tools and resolves their output schemas.
func newSession(t *testing.T, cs *mcpsdk.ClientSession) *session {
	t.Helper()
	s := &session{cs: cs, tools: map[string]*mcpsdk.Tool{}, schemas: map[string]*jsonschema.Resolved{}, ok: map[string]bool{}, bad: map[string]bool{}}
	lt, err := cs.ListTools(ctxT(t), nil)
	if err != nil {
		t.Fatalf("ListTools: %v", err)
	}
	for _, tool := range lt.Tools {
		s.tools[tool.Name] = tool
		if tool.OutputSchema == nil {
			t.Errorf("tool %s declares no output schema", tool.Name)
			continue
		}
		var sch jsonschema.Schema
		remarshal(t, tool.OutputSchema, &sch)
		r, err := sch.Resolve(nil)
		if err != nil {
			t.Fatalf("tool %s: output schema does not resolve: %v", tool.Name, err)
		}
		s.schemas[tool.Name] = r
	}
	return s
}

func remarshal(t *testing.T, from, to any) {
	t.Helper()
	b, err := json.Marshal(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, to); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

// callRaw calls a tool and returns its result, failing only on protocol errors.
func (s *session) callRaw(t *testing.T, name string, args map[string]any) *mcpsdk.CallToolResult {
	t.Helper()
	res, err := s.cs.CallTool(ctxT(t), &mcpsdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s(%v): protocol error %v", name, args, err)
	}
	return res
}

// call calls a tool that must succeed, validates its structured output
// against the tool's declared output schema and decodes it into out.
func (s *session) call(t *testing.T, name string, args map[string]any, out any) *mcpsdk.CallToolResult {
	t.Helper()
	res := s.callRaw(t, name, args)
	if res.IsError {
		t.Fatalf("%s(%v) failed: %s", name, args, text(res))
	}
	if res.StructuredContent == nil {
		t.Fatalf("%s(%v): no structured content", name, args)
	}
	var v any
	remarshal(t, res.StructuredContent, &v)
	r, ok := s.schemas[name]
	if !ok {
		t.Fatalf("%s: not in tools/list", name)
	}
	if err := r.Validate(v); err != nil {
		t.Errorf("%s output does not match its schema: %v\n%s", name, err, mustJSON(v))
	}
	if out != nil {
		reflect.ValueOf(out).Elem().SetZero() // fields the answer omits must not keep old values
		remarshal(t, res.StructuredContent, out)
	}
	s.mu.Lock()
	s.ok[name] = true
	s.mu.Unlock()
	return res
}

// callErr calls a tool that must fail and checks that its message holds
// every one of want (case-insensitive); it returns the message.
func (s *session) callErr(t *testing.T, name string, args map[string]any, want ...string) string {
	t.Helper()
	res := s.callRaw(t, name, args)
	msg := text(res)
	if !res.IsError {
		t.Fatalf("%s(%v) succeeded, want an error containing %q; got %s", name, args, want, msg)
	}
	for _, w := range want {
		if !strings.Contains(strings.ToLower(msg), strings.ToLower(w)) {
			t.Errorf("%s(%v) error = %q, want it to contain %q", name, args, msg, w)
		}
	}
	s.mu.Lock()
	s.bad[name] = true
	s.mu.Unlock()
	return msg
}

// text joins a result's text content.
func text(res *mcpsdk.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcpsdk.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func mustJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}
