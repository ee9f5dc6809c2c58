package api_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestBadInput checks that malformed requests get a clear 4xx with a JSON
// error naming the problem, and leave the daemon serving.
func TestBadInput(t *testing.T) {
	d := sharedDaemon(t)
	zero := "00000000-0000-4000-8000-000000000000"
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		mention                  string
	}{
		{"malformed JSON", "POST", "/v1/instances", `{"command": "x",`, 400, "malformed JSON"},
		{"not JSON", "POST", "/v1/instances", `command=x`, 400, "malformed JSON"},
		{"empty body", "POST", "/v1/instances", ``, 400, "empty"},
		{"array body", "POST", "/v1/instances", `[1,2]`, 400, "JSON object"},
		{"trailing data", "POST", "/v1/instances", `{"command":"x","image":"y"} {}`, 400, "after the JSON object"},
		{"timeout as string", "POST", "/v1/instances", `{"command":"x","image":"busybox:latest","timeout":"60"}`, 400, `"timeout"`},
		{"uid as string", "POST", "/v1/instances", `{"command":"x","image":"busybox:latest","uid":"0"}`, 400, `"uid"`},
		{"shell as string", "POST", "/v1/instances", `{"command":"x","image":"busybox:latest","shell":"yes"}`, 400, `"shell"`},
		{"env values", "POST", "/v1/instances", `{"command":"x","image":"busybox:latest","env":{"A":1}}`, 400, `"env`},
		{"stdin value type", "POST", "/v1/instances", `{"command":"x","image":"busybox:latest","stdin":{"value":5}}`, 400, `"stdin.value"`},
		{"file mode", "POST", "/v1/instances", `{"command":"x","image":"busybox:latest","files":{"/a":{"uuid":"` + zero + `","mode":"rwx"}}}`, 400, "mode"},
		{"missing command", "POST", "/v1/instances", `{"image":"busybox:latest"}`, 400, "command"},
		{"missing image", "POST", "/v1/instances", `{"command":"true"}`, 400, "image"},
		{"unknown image", "POST", "/v1/instances", `{"command":"true","image":"tag:no-such"}`, 404, "no-such"},
		{"unknown file", "POST", "/v1/instances", `{"command":"true","image":"busybox:latest","files":{"/a":{"uuid":"` + zero + `"}}}`, 404, zero},
		{"negative timeout", "POST", "/v1/instances", `{"command":"true","image":"busybox:latest","timeout":-1}`, 400, "timeout"},
		{"relative cwd", "POST", "/v1/instances", `{"command":"true","image":"busybox:latest","cwd":"tmp"}`, 400, "cwd"},
		{"import without registry", "POST", "/v1/images/import", `{"tag":"x"}`, 400, "registry"},
		{"import registry type", "POST", "/v1/images/import", `{"registry":{"url":1}}`, 400, "registry.url"},
		{"import registry number", "POST", "/v1/images/import", `{"registry":5}`, 400, "registry"},
		{"import unknown upload", "POST", "/v1/images/import", `{"registry":{"url":"upload://` + zero + `"}}`, 404, ""},
		{"tag missing", "PATCH", "/v1/images/" + zero + "/tag", `{}`, 400, "tag is required"},
		{"tag type", "PATCH", "/v1/images/" + zero + "/tag", `{"tag":1}`, 400, `"tag"`},
		{"token ttl type", "POST", "/v1/tokens", `{"ttl_seconds":"1h"}`, 400, "ttl_seconds"},
		{"token ttl negative", "POST", "/v1/tokens", `{"ttl_seconds":-5}`, 400, "ttl_seconds"},
		{"invalid image uuid", "GET", "/v1/inspect/not-a-uuid/", "", 400, "UUID"},
		{"invalid image uuid in tag", "PATCH", "/v1/images/123/tag", `{"tag":"x"}`, 400, "UUID"},
		{"invalid image uuid delete", "DELETE", "/v1/images/123", "", 400, "UUID"},
		{"invalid operation uuid", "GET", "/v1/operations/123", "", 400, "UUID"},
		{"invalid operation uuid cancel", "DELETE", "/v1/operations/zzz", "", 400, "UUID"},
		{"invalid uuid filter", "GET", "/v1/images?uuid=nope", "", 400, "UUID"},
		{"invalid token uuid", "DELETE", "/v1/tokens/nope", "", 400, "UUID"},
		{"unknown operation", "GET", "/v1/operations/" + zero, "", 404, "not found"},
		{"unknown operation cancel", "DELETE", "/v1/operations/" + zero, "", 404, "not found"},
		{"unknown image", "GET", "/v1/inspect/" + zero, "", 404, "not found"},
		{"limit 0", "GET", "/v1/images?limit=0", "", 400, "limit must be between 1 and 1000"},
		{"limit 1001", "GET", "/v1/operations?limit=1001", "", 400, "limit must be between 1 and 1000"},
		{"limit not a number", "GET", "/v1/files?limit=ten", "", 400, "limit must be between 1 and 1000"},
		{"negative offset", "GET", "/v1/images?offset=-1", "", 400, "offset"},
		{"bad since", "GET", "/v1/images?since=yesterday", "", 400, "since"},
		{"bad until", "GET", "/v1/files?until=2026-13-45", "", 400, "until"},
		{"bad status", "GET", "/v1/operations?status=DONE", "", 400, "status"},
		{"bad kind", "GET", "/v1/operations?kind=vm", "", 400, "kind"},
		{"unknown endpoint", "GET", "/v1/nope", "", 404, "no such endpoint"},
		{"outside /v1", "GET", "/", "", 404, "no such endpoint"},
		{"wrong method", "PUT", "/v1/whoami", "", 405, "not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.path == "/" {
				singleNode(t, "a cluster's nodes are arbor serve's, which serves the web UI at /")
			}
			r := d.send(t, tc.method, tc.path, tc.body)
			wantError(t, r, tc.status, tc.mention)
			if tc.status == 405 && !strings.Contains(r.Header.Get("Allow"), "GET") {
				t.Errorf("405 without Allow: %q", r.Header.Get("Allow"))
			}
		})
	}

	t.Run("lenient parameters", func(t *testing.T) {
		for _, p := range []string{
			"/v1/images?limit=1000&offset=0&kind=0",
			"/v1/images?limit=&tagged=0&unknown=1",
			"/v1/images?since=2020-01-02T03:04:05+00:00",
			"/v1/images?since=2020-01-02T03:04:05%2B02:00",
			"/v1/images?since=2020-01-02T03:04:05.123456",
			"/v1/images?since=2020-01-02",
			"/v1/images?since=15m&until=0",
			"/v1/images?since=3d", "/v1/images?since=1w", "/v1/images?since=3600s", "/v1/images?since=1h30m",
			"/v1/operations?status=success,failed&status=cancelled&kind=INSTANCE",
			"/v1/files?since=3600",
		} {
			wantStatus(t, d.get(t, p), http.StatusOK)
		}
	})

	t.Run("authentication", func(t *testing.T) {
		for _, auth := range []string{"", "Authorization: Bearer", "Authorization: Bearer wrong-token-value", "Authorization: Basic " + d.token} {
			var hdrs []string
			if auth != "" {
				hdrs = append(hdrs, auth)
			}
			r := do(t, http.MethodGet, d.srv.URL+"/v1/whoami", "", nil, hdrs...)
			wantError(t, r, http.StatusUnauthorized, "token")
			if r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		}
		// The Project header of IAM-style clients is ignored; the scheme is case-insensitive.
		r := do(t, http.MethodGet, d.srv.URL+"/v1/whoami", "", nil, "Authorization: bearer "+d.token, "Project: NEBIUS_PROJECT_ID")
		wantStatus(t, r, http.StatusOK)
		wantStatus(t, do(t, http.MethodGet, d.srv.URL+"/v1/openapi.json", "", nil), http.StatusOK)
	})

	if _, err := d.c.WhoAmI(ctxT(t)); err != nil {
		t.Fatalf("daemon unhealthy after bad input: %v", err)
	}
}
