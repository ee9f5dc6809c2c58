package api

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
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

// TestOpenAPIExtensionSchemas: the schemas of arbor's extensions name the
// same fields as the wire types, so the document cannot drift from them.
func TestOpenAPIExtensionSchemas(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	for name, v := range map[string]any{
		"Egress":                apitypes.Egress{},
		"EventDataEgressDenied": apitypes.EventDataEgressDenied{},
		"ForkRequest":           apitypes.ForkRequest{},
		"ForkResponse":          apitypes.ForkResponse{},
		"CheckpointResponse":    apitypes.CheckpointResponse{},
		"RestoreRequest":        apitypes.RestoreRequest{},
		"RestoreResponse":       apitypes.RestoreResponse{},
		"PreviewRequest":        apitypes.PreviewRequest{},
		"Preview":               apitypes.Preview{},
	} {
		s, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("openapi.json has no schema %s", name)
			continue
		}
		var want, got []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			if tag, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ","); tag != "" && tag != "-" {
				want = append(want, tag)
			}
		}
		for p := range s.Properties {
			got = append(got, p)
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("openapi.json schema %s has properties %v; %T has %v", name, got, v, want)
		}
	}
}
