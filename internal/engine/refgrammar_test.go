package engine

import (
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
)

// TestGrammarAgreesWithAPITypes: the engine's UUID pattern and tag rule
// accept exactly what the shared ones in client/apitypes (used by the
// client, CLI and MCP tools) accept, until the engine split leaves one copy.
func TestGrammarAgreesWithAPITypes(t *testing.T) {
	for _, s := range []string{
		"3f2a9c1e-0b7d-4e2a-9f00-1234567890ab", "3F2A9C1E-0B7D-4E2A-9F00-1234567890AB", "3f2a9c1e-0b7d-4e2a-9f00-1234567890a",
		"3f2a9c1e-0b7d-4e2a-9f00-1234567890abc", "3f2a9c1e-0b7d-4e2a-9f00-1234567890ag", "3f2a", "",
		"busybox", "busybox:latest", "common/python-ml/python:3.11-slim", "a@sha256+x_y.z", "0",
		strings.Repeat("a", 255), strings.Repeat("a", 256), "-x", ".x", "a b", "a\n", "é", "tag:x", "tag", "x!",
	} {
		if got, want := IsUUID(s), apitypes.IsUUID(s); got != want {
			t.Errorf("engine.IsUUID(%q) = %v, apitypes.IsUUID = %v", s, got, want)
		}
		if got, want := ValidateTag(s) == nil, apitypes.ValidTag(s) == nil; got != want {
			t.Errorf("engine.ValidateTag(%q) ok = %v, apitypes.ValidTag ok = %v", s, got, want)
		}
	}
}
