package api

import (
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/arborsh/arbor/internal/bearer"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
)

type ctxKey int

const (
	requestIDKey ctxKey = iota
	tokenKey
)

// serveHTTP is the outermost handler: request id, access log, panic
// recovery, content negotiation, then routing.
func (s *server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := requestID(r.Header.Get("X-Request-ID"))
	w.Header().Set("X-Request-ID", id)
	r = r.WithContext(context.WithValue(r.Context(), requestIDKey, id))
	rec := &recorder{ResponseWriter: w}
	var route string
	defer func() {
		if s.opts.Metrics != nil {
			s.opts.Metrics.Request(route, rec.status, time.Since(start))
		}
		s.log.LogAttrs(r.Context(), slog.LevelDebug, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", rec.status),
			slog.Duration("duration", time.Since(start)), slog.Int64("bytes", rec.bytes), slog.String("request_id", id))
	}()
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			panic(v) // a deliberate cut: net/http drops the connection
		}
		s.log.ErrorContext(r.Context(), "handler panic", "panic", v, "request_id", id, "stack", string(debug.Stack()))
		if rec.status == 0 {
			s.writeError(rec, r, fmt.Errorf("panic: %v", v))
			return
		}
		panic(http.ErrAbortHandler)
	}()

	var out http.ResponseWriter = rec
	w.Header().Add("Vary", "Accept-Encoding")
	var gz *gzipWriter
	if acceptsGzip(r.Header.Get("Accept-Encoding")) && r.Method != http.MethodHead {
		gz = &gzipWriter{ResponseWriter: rec}
		out = gz
	}
	if _, route = s.mux.Handler(r); route == "" {
		route = "unmatched" // the raw path would make a series per path
		s.noRoute(out, r)
	} else {
		s.mux.ServeHTTP(out, r)
	}
	// Not deferred: after a panic the gzip trailer must not be written, so
	// a cut stream never looks complete.
	if gz != nil {
		if err := gz.close(); err != nil {
			s.log.DebugContext(r.Context(), "finish gzip stream", "err", err, "request_id", id)
		}
	}
}

// noRoute answers unknown paths (404) and known paths with another method
// (405 + Allow) with JSON bodies instead of ServeMux's plain text.
func (s *server) noRoute(w http.ResponseWriter, r *http.Request) {
	probe := &headerProbe{header: http.Header{}}
	s.mux.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", probe.header.Get("Allow"))
		s.writeError(w, r, &httpError{status: http.StatusMethodNotAllowed,
			msg: fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, probe.header.Get("Allow"))})
		return
	}
	s.writeError(w, r, errdefs.NotFound("no such endpoint: %s %s (see GET /v1/openapi.json)", r.Method, r.URL.Path))
}

// headerProbe records what ServeMux's own not-found handlers would answer.
type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header         { return p.header }
func (p *headerProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *headerProbe) WriteHeader(code int)        { p.status = code }

// requestID returns the client's id when it is sane, else a new one.
func requestID(h string) string {
	if n := len(h); n > 0 && n <= 128 && !strings.ContainsFunc(h, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return h
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func requestIDOf(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// authenticate resolves the bearer token to an account, or answers 401.
// The Project header of IAM-style clients is ignored.
func (s *server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret, ok := bearer.FromRequest(r)
		if !ok {
			s.writeError(w, r, errdefs.Unauthorized("missing bearer token: send Authorization: Bearer <token> (the local token is in the daemon's token file, <home>/token)"))
			return
		}
		tok, err := s.e.Authenticate(r.Context(), secret)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenKey, tok)))
	})
}

// operatorOnly lets only tokens of the default account through: the
// operator's, whose token the daemon writes to <home>/token. Other
// accounts get 403, since what next serves spans every account.
func (s *server) operatorOnly(next http.Handler) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if a := accountOf(r); a != engine.DefaultAccount {
			return errdefs.Forbidden("%s is for the operator: use a token of the %q account (the daemon's token file, <home>/token); account %q may not read it",
				r.URL.Path, engine.DefaultAccount, a)
		}
		next.ServeHTTP(w, r)
		return nil
	}
}

// tokenOf returns the authenticated token of r.
func tokenOf(r *http.Request) engine.Token {
	t, _ := r.Context().Value(tokenKey).(engine.Token)
	return t
}

// accountOf returns the account every call of r is scoped to.
func accountOf(r *http.Request) string { return tokenOf(r).Account }

// recorder notes the status and size of a response for the access log.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *recorder) FlushError() error {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// acceptsGzip reports whether an Accept-Encoding value allows gzip: "gzip"
// (or "x-gzip", or failing both "*") listed with a non-zero q-value.
func acceptsGzip(h string) bool {
	q := map[string]float64{}
	for part := range strings.SplitSeq(h, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		v := 1.0
		for p := range strings.SplitSeq(params, ";") {
			k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
					v = f
				}
			}
		}
		q[strings.ToLower(strings.TrimSpace(name))] = v
	}
	for _, name := range []string{"gzip", "x-gzip", "*"} {
		if v, ok := q[name]; ok {
			return v > 0
		}
	}
	return false
}

var gzipPool = sync.Pool{New: func() any {
	// BestSpeed: archives and downloads can be large, and the link to a
	// local daemon is rarely the bottleneck.
	w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return w
}}

// gzipMin is the smallest body worth compressing: below it (most JSON
// answers) gzip's header and trailer and its work at both ends (a
// compressor reset here, a decompressor the client allocates for each
// response) cost more than the bytes saved.
const gzipMin = 1024

// gzipWriter compresses a response whose body is gzipMin bytes or more, or
// that is flushed (a stream). The decision waits for either, so body-less
// answers such as 302 and 204 and small ones go out plain. Flush is a sync
// flush: every frame or chunk flushed reaches the client at once.
type gzipWriter struct {
	http.ResponseWriter
	gz      *gzip.Writer
	code    int    // status set by the handler, not yet sent
	started bool   // headers sent
	held    []byte // the body so far, until the decision
}

func (w *gzipWriter) WriteHeader(code int) {
	if code < 200 {
		w.ResponseWriter.WriteHeader(code) // informational: pass through
		return
	}
	if w.code == 0 {
		w.code = code
	}
}

// begin sends the headers, compressing if asked and the answer allows,
// then what was held of the body.
func (w *gzipWriter) begin(compress bool) error {
	if w.started {
		return nil
	}
	w.started = true
	if w.code == 0 {
		w.code = http.StatusOK
	}
	h := w.Header()
	if compress && w.code != http.StatusNoContent && w.code != http.StatusNotModified && h.Get("Content-Encoding") == "" {
		h.Set("Content-Encoding", "gzip")
		h.Del("Content-Length")
		w.gz = gzipPool.Get().(*gzip.Writer)
		w.gz.Reset(w.ResponseWriter)
	}
	w.ResponseWriter.WriteHeader(w.code)
	held := w.held
	w.held = nil
	if len(held) == 0 {
		return nil
	}
	_, err := w.body().Write(held)
	return err
}

// body is where the body goes once the headers are out.
func (w *gzipWriter) body() io.Writer {
	if w.gz != nil {
		return w.gz
	}
	return w.ResponseWriter
}

func (w *gzipWriter) Write(b []byte) (int, error) {
	if !w.started {
		if len(w.held)+len(b) < gzipMin {
			w.held = append(w.held, b...)
			return len(b), nil
		}
		if err := w.begin(true); err != nil {
			return 0, err
		}
	}
	return w.body().Write(b)
}

func (w *gzipWriter) FlushError() error {
	if err := w.begin(true); err != nil {
		return err
	}
	if w.gz != nil {
		if err := w.gz.Flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *gzipWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// close ends a complete response: headers and a small body (plain) if
// none went out yet, then the gzip trailer.
func (w *gzipWriter) close() error {
	if err := w.begin(false); err != nil {
		return err
	}
	if w.gz == nil {
		return nil
	}
	err := w.gz.Close()
	w.gz.Reset(nil)
	gzipPool.Put(w.gz)
	w.gz = nil
	return err
}

// httpError is an error with an explicit status, for the few answers that
// have no errdefs class (405).
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }
