package api

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestOpenAPIListsEveryRoute keeps the served OpenAPI document and the
// registered routes in step, both ways.
func TestOpenAPIListsEveryRoute(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	registered := map[string]bool{}
	for _, rt := range append((&server{}).routes(), (&server{}).previewRoutes()...) {
		method, pattern, _ := strings.Cut(rt.pattern, " ")
		path := strings.ReplaceAll(pattern, "{$}", "")
		key := strings.ToLower(method) + " " + path
		registered[key] = true
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("route %q is not in openapi.json (want paths[%q].%s)", rt.pattern, path, strings.ToLower(method))
		}
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			if !registered[method+" "+path] {
				t.Errorf("openapi.json documents %s %s, which is not served", strings.ToUpper(method), path)
			}
		}
	}
}
