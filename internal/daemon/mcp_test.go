package daemon_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/arborsh/arbor/internal/daemon"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

type bearer struct {
	token string
	rt    http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}

// TestMCPOverHTTP: the daemon's /mcp acts as the caller on its own API
// (in process, see mcp.InProcess): a run through it streams to completion
// and its output comes back.
func TestMCPOverHTTP(t *testing.T) {
	d := testdaemon.New(t, testdaemon.Options{Busybox: "busybox:latest", Serve: func(ctx context.Context, home string, cfg engine.Config, ready func(string)) error {
		return daemon.Run(ctx, daemon.Config{Home: home, Listen: "127.0.0.1:0", Engine: cfg, Logger: slog.New(slog.DiscardHandler), Ready: ready})
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hc := &http.Client{Transport: bearer{token: d.Token, rt: http.DefaultTransport}}
	cs, err := mcpsdk.NewClient(&mcpsdk.Implementation{Name: "daemon-test", Version: "0"}, nil).
		Connect(ctx, &mcpsdk.StreamableClientTransport{Endpoint: d.URL + "/mcp", HTTPClient: hc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcpsdk.CallToolParams{Name: "run", Arguments: map[string]any{"image": "busybox:latest", "command": "echo over mcp"}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(res.StructuredContent)
	if res.IsError || !strings.Contains(string(out), `"stdout":"over mcp\n"`) {
		t.Errorf("run through /mcp = error %v, %s", res.IsError, out)
	}
}
