package webui

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestServesAppWithContentTypes(t *testing.T) {
	h := Handler()
	tests := []struct {
		path  string
		ctype string
		want  string // a substring of the body
	}{
		{"/", "text/html; charset=utf-8", `<script type="module" src="/ui/app.js">`},
		{"/ui", "text/html; charset=utf-8", "<title>arbor</title>"},
		{"/ui/", "text/html; charset=utf-8", "<title>arbor</title>"},
		{"/ui/images/0123", "text/html; charset=utf-8", "<title>arbor</title>"}, // an app route
		{"/ui/app.js", "text/javascript; charset=utf-8", "import"},
		{"/ui/api.js", "text/javascript; charset=utf-8", "followEvents"},
		{"/ui/tree.js", "text/javascript; charset=utf-8", "ArrowLeft"},
		{"/ui/app.css", "text/css; charset=utf-8", ":root"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp := get(t, h, "GET", tc.path, nil)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s = %d, want 200", tc.path, resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("GET %s Content-Type = %q, want %q", tc.path, got, tc.ctype)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("GET %s X-Content-Type-Options = %q, want nosniff", tc.path, got)
			}
			if !strings.Contains(string(body), tc.want) {
				t.Errorf("GET %s body lacks %q", tc.path, tc.want)
			}
		})
	}
}

func TestIndexHasStrictCSP(t *testing.T) {
	resp := get(t, Handler(), "GET", "/", nil)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy = %q, want it to contain %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-") {
		t.Errorf("Content-Security-Policy = %q allows unsafe sources", csp)
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/v1/images", "/favicon.ico", "/ui/nope.js", "/other"} {
		if resp := get(t, h, "GET", p, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", p, resp.StatusCode)
		}
	}
	resp := get(t, h, "POST", "/", nil)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST / = %d (Allow %q), want 405 with Allow: GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}
	resp = get(t, h, "HEAD", "/ui/app.css", nil)
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || len(b) != 0 {
		t.Errorf("HEAD /ui/app.css = %d with %d body bytes, want 200 and none", resp.StatusCode, len(b))
	}
}

func TestETagRevalidation(t *testing.T) {
	h := Handler()
	resp := get(t, h, "GET", "/ui/app.js", nil)
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("GET /ui/app.js has no ETag")
	}
	resp = get(t, h, "GET", "/ui/app.js", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("GET /ui/app.js If-None-Match: %s = %d, want 304", etag, resp.StatusCode)
	}
}

// Identifiers that look like URLs but are never fetched: XML namespaces.
var allowedURLs = map[string]bool{
	"http://www.w3.org/2000/svg": true,
}

var urlRE = regexp.MustCompile(`(?i)\b(?:https?|wss?|ftp):(?://)?[^\s"'()<>\x60]*|(?:src|href|action)\s*=\s*["']//[^"']*|url\(\s*["']?//[^)]*|@import`)

// TestNoExternalURLs keeps the app self-contained: it loads nothing from
// another origin (no CDN, fonts or analytics), so it works offline and its
// CSP can stay 'self'.
func TestNoExternalURLs(t *testing.T) {
	n := 0
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		if _, ok := contentTypes[path.Ext(p)]; !ok {
			t.Errorf("%s: unexpected asset type (not served): add it to contentTypes or remove it", p)
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range urlRE.FindAllString(string(b), -1) {
			if !allowedURLs[m] {
				t.Errorf("%s references an external URL: %q", p, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("embedded %d assets, want the whole app", n)
	}
}

func TestURLPattern(t *testing.T) {
	for _, s := range []string{`<script src="https://cdn.example/x.js">`, `<link href="//fonts.example/css">`,
		`@import "x.css";`, `background: url(//img.example/a.png)`, `fetch('http://example.com/api')`, `new WebSocket("wss://x")`} {
		if urlRE.FindString(s) == "" {
			t.Errorf("urlRE does not catch %s", s)
		}
	}
	for _, s := range []string{`fetch('/v1/images')`, `<script src="/ui/app.js">`, `url("data:,")`} {
		if m := urlRE.FindString(s); m != "" {
			t.Errorf("urlRE flags %s (%q)", s, m)
		}
	}
}

// TestIndexReferencesExist checks that every asset index.html and the
// modules import is embedded.
func TestIndexReferencesExist(t *testing.T) {
	h := Handler().(*handler)
	refRE := regexp.MustCompile(`(?:src|href)="(/ui/[^"]+)"|from '\./([^']+)'`)
	for name, a := range h.assets {
		if !strings.HasSuffix(name, ".html") && !strings.HasSuffix(name, ".js") {
			continue
		}
		for _, m := range refRE.FindAllStringSubmatch(string(a.body), -1) {
			ref := strings.TrimPrefix(m[1], Prefix) + m[2]
			if _, ok := h.assets[ref]; !ok {
				t.Errorf("%s references %q, which is not embedded", name, ref)
			}
		}
	}
}
