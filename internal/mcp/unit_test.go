package mcp

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// These tests need no daemon.

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		in      string
		max     int
		want    string
		wantCut bool
	}{
		{"short", 10, "short", false},
		{"0123456789", 10, "0123456789", false},
		{"abcdefghijklmnopqrstuvwxyz", 8, "ab\n…[18 bytes omitted]…\nuvwxyz", true},
		{"bad \xff byte", 100, "bad \uFFFD byte", false},
	} {
		got, cut := clip([]byte(tc.in), tc.max)
		if got != tc.want || cut != tc.wantCut {
			t.Errorf("clip(%q, %d) = %q, %v; want %q, %v", tc.in, tc.max, got, cut, tc.want, tc.wantCut)
		}
	}
	// Multi-byte characters are never split.
	s := strings.Repeat("é", 100)
	got, cut := clip([]byte(s), 33)
	if !cut || !utf8.ValidString(got) || strings.Contains(got, "\uFFFD") {
		t.Errorf("clip of 2-byte runes = %q", got)
	}
}

func TestNormalizeRegistryURL(t *testing.T) {
	for in, want := range map[string]string{
		"alpine":                             "docker://docker.io/library/alpine:latest",
		"python:3.12-slim":                   "docker://docker.io/library/python:3.12-slim",
		"user/img":                           "docker://docker.io/user/img:latest",
		"ghcr.io/o/i:t":                      "docker://ghcr.io/o/i:t",
		"localhost:5000/x":                   "docker://localhost:5000/x:latest",
		"alpine@sha256:abc":                  "docker://docker.io/library/alpine@sha256:abc",
		"docker://docker.io/library/busybox": "docker://docker.io/library/busybox",
		"upload://1234":                      "upload://1234",
		"":                                   "",
	} {
		if got := normalizeRegistryURL(in); got != want {
			t.Errorf("normalizeRegistryURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExcluded(t *testing.T) {
	pats := []string{".git", "*.pyc", "build/out"}
	for rel, want := range map[string]bool{
		".git": true, "sub/.git": true, "a.pyc": true, "x/a.pyc": true, "build/out": true,
		"src/main.go": false, "build": false, "gitx": false,
	} {
		if got := excluded(rel, pats); got != want {
			t.Errorf("excluded(%q) = %v, want %v", rel, got, want)
		}
	}
}

func TestInputSchemaDefaults(t *testing.T) {
	s := inputSchema[RunIn](nil) // memoized by the server's registration
	for name, want := range map[string]string{"shell": "true", "disposable": "false", "cwd": `"/root"`, "timeout": "60", "wait": "true"} {
		p := s.Properties[name]
		if p == nil || string(p.Default) != want {
			t.Errorf("run %s default = %s, want %s", name, p.Default, want)
		}
		for _, r := range s.Required {
			if r == name {
				t.Errorf("run %s has a default but is required", name)
			}
		}
	}
}

// TestNullArguments checks that tools/call with "arguments": null (which
// go-sdk v1.8.0 would crash on) reaches the tool as {}.
func TestNullArguments(t *testing.T) {
	ctx := context.Background()
	st, ct := mcpsdk.NewInMemoryTransports()
	ss, err := NewServer(nil, Options{}).Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := mcpsdk.NewClient(&mcpsdk.Implementation{Name: "t", Version: "0"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcpsdk.CallToolParams{Name: "get_guide", Arguments: json.RawMessage("null")})
	if err != nil || res.IsError {
		t.Fatalf("get_guide(null) = %v, %v", res, err)
	}
	var out GuideOut
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &out); err != nil || out.Section != "workflow" {
		t.Errorf("get_guide(null) = %s", b)
	}
}
