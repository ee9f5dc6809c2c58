package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/bearer"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
)

// previewRoutes are the management endpoints of port previews (an arbor
// extension); the proxy itself is [PreviewHandler].
func (s *server) previewRoutes() []route {
	return []route{
		{pattern: "POST /v1/operations/{id}/previews", h: s.expose},
		{pattern: "GET /v1/operations/{id}/previews", h: s.listPreviews},
		{pattern: "DELETE /v1/operations/{id}/previews/{port}", h: s.unexpose},
	}
}

func previewOf(base string, p engine.Preview) apitypes.Preview {
	out := apitypes.Preview{Operation: p.Operation, Port: p.Port, ExpiresAt: p.ExpiresAt.UTC().Format(time.RFC3339), Path: p.Path, Token: p.Token}
	if p.Path != "" {
		out.URL = base + p.Path
	}
	return out
}

// previewBase is the scheme and host of preview links: Options.PreviewBase,
// else the request's own.
func (s *server) previewBase(r *http.Request) string {
	if h := s.opts.PreviewBaseHeader; h != "" && r.Header.Get(h) != "" {
		return strings.TrimSuffix(r.Header.Get(h), "/")
	}
	if s.opts.PreviewBase != "" {
		return strings.TrimSuffix(s.opts.PreviewBase, "/")
	}
	if r.TLS != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

// expose answers POST /v1/operations/{id}/previews with 201 and a signed
// link to the port.
func (s *server) expose(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("operation", r.PathValue("id"))
	if err != nil {
		return err
	}
	var req apitypes.PreviewRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	p, err := s.e.Expose(r.Context(), accountOf(r), id, req.Port, time.Duration(req.TTLSeconds)*time.Second)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, previewOf(s.previewBase(r), p))
	return nil
}

func (s *server) listPreviews(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("operation", r.PathValue("id"))
	if err != nil {
		return err
	}
	ps, err := s.e.Previews(r.Context(), accountOf(r), id)
	if err != nil {
		return err
	}
	out := apitypes.PreviewList{Previews: []apitypes.Preview{}}
	for _, p := range ps {
		out.Previews = append(out.Previews, previewOf("", p))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) unexpose(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("operation", r.PathValue("id"))
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil {
		return errdefs.InvalidArgument("port %q is not a number", r.PathValue("port"))
	}
	if err := s.e.Unexpose(r.Context(), accountOf(r), id, port); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// bearerSegment is the token segment of a preview path that asks for the
// account's bearer token instead of a signed link.
const bearerSegment = "_"

// previewTarget carries the operation and port a proxied request is for,
// from the handler to the transport's dial.
type previewTarget struct {
	op   string
	port int
}

type previewTargetKey struct{}

// PreviewHandler serves /preview/{operation}/{port}/{token}/...: it
// proxies HTTP and WebSocket requests to the port inside the running
// instance, after checking token (a signed link from an expose), or, with
// token "_", the bearer token of the account that owns the operation. The
// request reaches the port without the prefix, the bearer token or the
// link; X-Forwarded-Prefix names the prefix.
func PreviewHandler(e *engine.Engine, opts Options) http.Handler {
	opts.setDefaults()
	s := &server{e: e, opts: opts, log: opts.Logger}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			t, ok := ctx.Value(previewTargetKey{}).(previewTarget)
			if !ok {
				return nil, errors.New("preview dial without a target")
			}
			return e.DialPreview(ctx, t.op, t.port)
		},
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	proxy := &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			if opts.ForwardedBy != nil && opts.ForwardedBy(pr.In) {
				// A node of this cluster proxied it: its X-Forwarded-*
				// name the client.
				for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
					pr.Out.Header[h] = pr.In.Header.Values(h)
				}
			} else {
				pr.SetXForwarded()
			}
			pr.Out.Host = pr.In.Host
		},
		FlushInterval: -1, // stream: event streams and long polls pass at once
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			status, msg := statusOf(err)
			if errors.Is(err, errdefs.ErrUnavailable) {
				status = http.StatusBadGateway
			} else if status == http.StatusInternalServerError {
				status, msg = http.StatusBadGateway, "the server in the sandbox broke the connection: "+err.Error()
			}
			s.log.DebugContext(r.Context(), "preview proxy", "path", r.URL.Path, "err", err)
			writeJSON(w, status, apitypes.Error{Error: msg, Status: status})
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.preview(w, r, proxy); err != nil {
			s.writeError(w, r, err)
		}
	})
}

func (s *server) preview(w http.ResponseWriter, r *http.Request, proxy *httputil.ReverseProxy) error {
	// The escaped path, so the server gets the path as the client sent it
	// (an escaped slash stays one).
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/preview/")
	parts := strings.SplitN(rest, "/", 4)
	if !ok || len(parts) < 3 {
		return errdefs.NotFound("a preview path is /preview/{operation}/{port}/{token}/...: expose a port (POST /v1/operations/{id}/previews) for one")
	}
	op, err := uuidParam("operation", parts[0])
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(parts[1])
	if err != nil || port < 1 || port > 65535 {
		return errdefs.NotFound("%q is not a port", parts[1])
	}
	token, account := parts[2], ""
	if token == bearerSegment {
		secret, ok := bearer.FromRequest(r)
		if !ok {
			return errdefs.Unauthorized("missing bearer token: send Authorization: Bearer <token>, or open the signed link an expose returns")
		}
		tok, err := s.e.Authenticate(r.Context(), secret)
		if err != nil {
			return err
		}
		token, account = "", tok.Account
	}
	if err := s.e.AuthorizePreview(op, port, token, account); err != nil {
		return err
	}
	prefix := "/preview/" + parts[0] + "/" + parts[1] + "/" + parts[2]
	if len(parts) == 3 { // relative links resolve against a directory
		u := *r.URL
		u.Path = prefix + "/"
		http.Redirect(w, r, u.String(), http.StatusFound)
		return nil
	}
	out := r.Clone(context.WithValue(r.Context(), previewTargetKey{}, previewTarget{op: op, port: port}))
	out.Header.Del("Authorization") // the account's token is not the app's business
	out.Header.Set("X-Forwarded-Prefix", prefix)
	out.URL.Scheme, out.URL.Host = "http", op+"."+strconv.Itoa(port)
	out.URL.RawPath = "/" + parts[3]
	if out.URL.Path, err = url.PathUnescape(out.URL.RawPath); err != nil {
		return errdefs.InvalidArgument("path %q: %v", r.URL.EscapedPath(), err)
	}
	proxy.ServeHTTP(w, out)
	return nil
}
