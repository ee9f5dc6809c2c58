package api

import (
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/metrics"
)

// Options configures the API handler. Zero values take the defaults noted.
type Options struct {
	// Logger receives one Debug record per request and the details of
	// internal errors; nil discards.
	Logger *slog.Logger
	// MaxBodyBytes bounds JSON request bodies; default 4 MiB.
	MaxBodyBytes int64
	// MaxUploadBytes bounds one uploaded file (POST /v1/files); default
	// 16 GiB. Uploads stream to disk, so this is a disk budget, not memory.
	MaxUploadBytes int64
	// Keepalive is the quiet time after which an event stream sends a
	// ": keepalive" comment; default 15 s.
	Keepalive time.Duration
	// MaxGrepBytes bounds the JSON answer of one grep: the search stops
	// (truncated: true) before the answer would grow past it; default 16 MiB.
	MaxGrepBytes int64
	// BodyIdleTimeout abandons a request whose body stalls this long, so a
	// stuck client cannot hold an upload open forever; default 2 min.
	BodyIdleTimeout time.Duration
	// Metrics, if set, counts every request by route and code, and is
	// served at GET /metrics to tokens of the default (operator) account.
	Metrics *metrics.Metrics
	// RateLimit is the requests per second each token may make on
	// average, RateBurst how many at once above it (default 2 × RateLimit);
	// over it a request gets 429 with Retry-After. 0: unlimited.
	RateLimit float64
	RateBurst int
	// PreviewBase, if set (http://host:port), is where port previews are
	// served, on a listener of their own; the links expose answers point
	// there. Empty: under /preview/ of the request's own host.
	PreviewBase string
	// PreviewBaseHeader, if set, names a request header that, when
	// present, gives the preview base instead: a cluster's API node
	// forwards an expose to the worker running the instance with its own
	// base there (and drops the header from clients' requests).
	PreviewBaseHeader string
	// ForwardedBy, if set, reports whether a preview request was proxied
	// by a node of this cluster, whose X-Forwarded-For, -Host and -Proto
	// the server in the sandbox then gets as they are (else they are set
	// from the request's own connection).
	ForwardedBy func(r *http.Request) bool
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 4 << 20
	}
	if o.MaxUploadBytes <= 0 {
		o.MaxUploadBytes = 16 << 30
	}
	if o.Keepalive <= 0 {
		o.Keepalive = 15 * time.Second
	}
	if o.MaxGrepBytes <= 0 {
		o.MaxGrepBytes = 16 << 20
	}
	if o.BodyIdleTimeout <= 0 {
		o.BodyIdleTimeout = 2 * time.Minute
	}
}

// server holds what every handler needs.
type server struct {
	e    *engine.Engine
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
	// limits is nil without Options.RateLimit.
	limits *rateLimits
}

// New returns the HTTP handler of API v1 backed by e.
func New(e *engine.Engine, opts Options) http.Handler {
	opts.setDefaults()
	s := &server{e: e, opts: opts, log: opts.Logger, mux: http.NewServeMux(), limits: newRateLimits(opts.RateLimit, opts.RateBurst)}
	for _, rt := range append(s.routes(), s.previewRoutes()...) {
		h := s.handle(rt.h)
		if !rt.public {
			h = s.authenticate(s.rateLimit(h))
		}
		s.mux.Handle(rt.pattern, h)
	}
	if opts.Metrics != nil {
		// Not in routes(): it is no part of API v1 (nor of its OpenAPI
		// document), and the daemon mounts it at the root.
		s.mux.Handle("GET /metrics", s.authenticate(s.handle(s.operatorOnly(opts.Metrics.Handler()))))
	}
	return http.HandlerFunc(s.serveHTTP)
}

// route is one registered pattern. The table is also what the OpenAPI test
// checks the served document against.
type route struct {
	pattern string // ServeMux pattern: "METHOD /path"
	h       handlerFunc
	public  bool // served without a token
}

// handlerFunc is a handler that reports failure by returning an error,
// which [server.handle] renders. A handler that has started its response
// must not return an error.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// routes lists every endpoint. GET patterns also answer HEAD unless a HEAD
// pattern is listed, as net/http's ServeMux does.
func (s *server) routes() []route {
	return []route{
		{pattern: "GET /v1/openapi.json", h: s.openAPI, public: true},
		{pattern: "GET /v1/whoami", h: s.whoami},
		{pattern: "GET /v1/status", h: s.status},
		{pattern: "POST /v1/gc", h: s.gc},
		{pattern: "GET /v1/df", h: s.df},

		{pattern: "GET /v1/images", h: s.listImages},
		{pattern: "POST /v1/images/import", h: s.importImage},
		{pattern: "PATCH /v1/images/{uuid}/tag", h: s.setTag},
		{pattern: "DELETE /v1/images/{uuid}/tag", h: s.removeTag},
		{pattern: "DELETE /v1/images/{uuid}", h: s.deleteImage},
		{pattern: "GET /v1/images/{uuid}/lineage", h: s.lineage},
		{pattern: "GET /v1/images/{uuid}/diff", h: s.diff},
		{pattern: "POST /v1/images/{uuid}/restore", h: s.restore},

		{pattern: "POST /v1/files", h: s.uploadFile},
		{pattern: "GET /v1/files", h: s.listFiles},
		{pattern: "GET /v1/files/{sha256}", h: s.getFile},
		{pattern: "HEAD /v1/files/{sha256}", h: s.headFile},

		{pattern: "POST /v1/instances", h: s.spawn},

		{pattern: "GET /v1/operations", h: s.listOperations},
		{pattern: "GET /v1/operations/{id}", h: s.getOperation},
		{pattern: "DELETE /v1/operations/{id}", h: s.cancelOperation},
		{pattern: "GET /v1/operations/{id}/events", h: s.events},
		{pattern: "POST /v1/operations/{id}/subprocesses", h: s.createSubprocess},
		{pattern: "GET /v1/operations/{id}/subprocesses/{spid}", h: s.getSubprocess},
		{pattern: "DELETE /v1/operations/{id}/subprocesses/{spid}", h: s.killSubprocess},
		{pattern: "POST /v1/operations/{id}/subprocesses/{spid}/stdin", h: s.writeStdin},
		{pattern: "POST /v1/operations/{id}/fork", h: s.fork},
		{pattern: "POST /v1/operations/{id}/checkpoint", h: s.checkpoint},

		{pattern: "GET /v1/inspect/{$}", h: s.findByTag},
		{pattern: "GET /v1/inspect", h: s.findByTag},
		{pattern: "GET /v1/inspect/{uuid}/{$}", h: s.inspectImage},
		{pattern: "GET /v1/inspect/{uuid}", h: s.inspectImage},
		{pattern: "GET /v1/inspect/{uuid}/download", h: s.download},
		{pattern: "HEAD /v1/inspect/{uuid}/download", h: s.download},
		{pattern: "GET /v1/inspect/{uuid}/archive", h: s.archive},
		{pattern: "HEAD /v1/inspect/{uuid}/archive", h: s.archive},
		{pattern: "GET /v1/inspect/{uuid}/list", h: s.list},
		{pattern: "GET /v1/inspect/{uuid}/grep", h: s.grep},

		{pattern: "POST /v1/tokens", h: s.createToken},
		{pattern: "GET /v1/tokens", h: s.listTokens},
		{pattern: "DELETE /v1/tokens/{uuid}", h: s.revokeToken},
	}
}

// handle adapts a handlerFunc, rendering its error.
func (s *server) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// apiPath returns p (an absolute API path such as /v1/operations/X) as the
// client must request it: when the API is mounted under a prefix (a reverse
// proxy path or http.StripPrefix), the prefix of the request URI is kept.
func apiPath(r *http.Request, p string) string {
	uri := r.RequestURI
	if u, err := url.ParseRequestURI(uri); err == nil {
		uri = u.EscapedPath()
	}
	if esc := r.URL.EscapedPath(); strings.HasSuffix(uri, esc) {
		return uri[:len(uri)-len(esc)] + p
	}
	return p
}
