package mcp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
)

// testExposePort exposes a port of a running instance through the tool:
// the answer is a signed link to that operation and port; a port out of
// range and an unknown operation are errors that say what to fix.
func testExposePort(t *testing.T, e *env, s *session) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	keep := false
	sp, err := e.c.Spawn(ctx, apitypes.InstanceSpawnRequest{Command: "cat", Image: e.base, Disposable: &keep,
		Stdin: &apitypes.ClosableStreamRepr{Value: "", Close: &keep}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.c.Cancel(ctx, sp.UUID) }()
	var out ExposeOut
	s.call(t, "expose_port", map[string]any{"operation_id": sp.UUID, "port": 8080, "ttl_seconds": 60}, &out)
	if !strings.HasPrefix(out.Path, "/preview/"+sp.UUID+"/8080/") || !strings.HasSuffix(out.URL, out.Path) || out.ExpiresAt == "" {
		t.Errorf("expose_port = %+v, want a link to /preview/%s/8080/", out, sp.UUID)
	}
	s.callErr(t, "expose_port", map[string]any{"operation_id": sp.UUID, "port": 70000}, "1 to 65535")
	s.callErr(t, "expose_port", map[string]any{"operation_id": "00000000-0000-0000-0000-000000000000", "port": 80}, "not found")
}
