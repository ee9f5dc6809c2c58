// Package webui serves arbor's web UI: a single-page app of plain HTML, CSS
// and JavaScript embedded in the binary (no build step, nothing fetched at
// run time) that shows the lineage tree of an account's images, each node's
// output, files and diffs, the operations list, and tags.
//
// The app talks only to the daemon's REST API under /v1 on its own origin,
// with the bearer token the user enters once (kept in sessionStorage), so it
// sees exactly what that token's account sees.
//
// Mount [Handler] at "/" next to the API:
//
//	mux.Handle("/v1/", apiHandler)
//	mux.Handle("/", webui.Handler())
package webui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Prefix is the path under which the app's assets are served; "/" and any
// other path below Prefix without a file extension serve the app itself.
const Prefix = "/ui/"

// contentTypes maps the asset extensions the app uses to their types. An
// asset of another kind is not served.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// csp allows the app's own scripts, styles and API calls and nothing else:
// no inline script, no other origin, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type asset struct {
	body  []byte
	ctype string
	etag  string
}

type handler struct {
	assets map[string]asset // by name below static/, e.g. "app.js"
}

// Handler returns the web UI's handler. It answers GET and HEAD for "/",
// "/ui" and everything below [Prefix], and 404 for anything else, so it can
// be mounted at "/" beside the API.
func Handler() http.Handler {
	h := &handler{assets: map[string]asset{}}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return nil
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		h.assets[strings.TrimPrefix(p, "static/")] = asset{body: b, ctype: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("webui: embedded assets: " + err.Error()) // a build defect, not a run-time condition
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ok := h.route(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	a := h.assets[name]
	hd := w.Header()
	hd.Set("Content-Type", a.ctype)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-cache") // revalidate: the ETag makes that cheap
	hd.Set("ETag", a.etag)
	if name == "index.html" {
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Frame-Options", "DENY")
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}

// route maps a request path to an asset name: the app's entry points to
// index.html, an asset path to that asset.
func (h *handler) route(p string) (string, bool) {
	if p == "/" || p == "/ui" || p == Prefix || p == "/index.html" {
		return "index.html", true
	}
	rest, ok := strings.CutPrefix(p, Prefix)
	if !ok {
		return "", false
	}
	if _, ok := h.assets[rest]; ok {
		return rest, true
	}
	if path.Ext(rest) == "" {
		return "index.html", true // an app route such as /ui/images/<uuid>
	}
	return "", false
}
