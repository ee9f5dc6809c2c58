package mcp

import (
	"context"

	"github.com/arborsh/arbor/client/apitypes"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// ExposeIn is the input of expose_port.
type ExposeIn struct {
	OperationID string `json:"operation_id" jsonschema:"a running instance with a server listening inside it"`
	Port        int    `json:"port" jsonschema:"the TCP port the server listens on inside the sandbox (127.0.0.1 or 0.0.0.0)"`
	TTLSeconds  int    `json:"ttl_seconds,omitempty" jsonschema:"how long the link works, 1 to 86400 (default 3600)"`
}

// ExposeOut is the output of expose_port.
type ExposeOut struct {
	URL       string `json:"url" jsonschema:"the signed link: open it (browser, curl, a WebSocket client) with no other credential"`
	Path      string `json:"path" jsonschema:"the link's path on the daemon, if url's host is not the one you reach the daemon at"`
	ExpiresAt string `json:"expires_at" jsonschema:"when the link stops working (RFC 3339); it also stops when the instance ends"`
}

func (s *server) addPreviewTools(ms *mcpsdk.Server) {
	addTool(ms, &mcpsdk.Tool{
		Name:        "expose_port",
		Annotations: additive,
		Description: "Give a person or a test harness a URL to a web app or API running INSIDE a running instance: the daemon proxies HTTP and WebSocket " +
			"requests from a signed, expiring link to the port in the sandbox (which keeps no network of its own; nothing else can reach the port). " +
			"Start the server in an instance that keeps running (e.g. started by run keep_stdin=true), then call this. A port nothing listens on answers 502.",
	}, nil, onInstance(s, func(in ExposeIn) string { return in.OperationID }, s.expose))
}

func (s *server) expose(ctx context.Context, op string, in ExposeIn) (ExposeOut, error) {
	p, err := s.b.Expose(ctx, op, in.Port, in.TTLSeconds)
	if err != nil {
		return ExposeOut{}, err
	}
	return exposeOut(p), nil
}

func exposeOut(p *apitypes.Preview) ExposeOut {
	return ExposeOut{URL: p.URL, Path: p.Path, ExpiresAt: p.ExpiresAt}
}
