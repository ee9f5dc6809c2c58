package mcp

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/arborsh/arbor/client"
)

// InProcess returns backends that act on api, the daemon's /v1 handler, in
// this process: a client bound to a caller's bearer token whose requests
// are served by api directly, with no socket and no URL of the daemon's own
// (so /mcp works whatever address the daemon listens on or sits behind).
// Each API request's context is the MCP request's, so it ends with it.
func InProcess(api http.Handler) func(token string) (Backend, error) {
	hc := &http.Client{Transport: handlerTransport{api}}
	return func(token string) (Backend, error) {
		return client.New("http://arbor.in-process", token, client.WithHTTPClient(hc), client.WithUserAgent("arbor-mcp-http"))
	}
}

// handlerTransport is an http.RoundTripper that serves each request with h
// in this process. The response streams as h writes it (h may flush, as
// the event stream does), and closing its body cancels h's context.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	sreq := req.Clone(ctx)
	sreq.URL = &url.URL{Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery}
	sreq.RequestURI = sreq.URL.RequestURI()
	sreq.Host = req.URL.Host
	sreq.RemoteAddr = "127.0.0.1:0" // in-process: as trusted as loopback
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, body: pw, ready: make(chan struct{})}
	go func() {
		defer func() {
			if p := recover(); p != nil {
				w.fail(fmt.Errorf("mcp: API handler panicked: %v", p))
			}
		}()
		defer func() {
			if req.Body != nil {
				_ = req.Body.Close() // a RoundTripper must close it
			}
		}()
		t.h.ServeHTTP(w, sreq)
		w.WriteHeader(http.StatusOK) // a handler that wrote nothing answered 200
		_ = pw.Close()
	}()
	select {
	case <-w.ready:
	case <-ctx.Done(): // the caller gave up before an answer
		cancel()
		_ = pr.CloseWithError(ctx.Err())
		return nil, ctx.Err()
	}
	if w.err != nil {
		cancel()
		return nil, w.err
	}
	resp := &http.Response{
		Status: strconv.Itoa(w.status) + " " + http.StatusText(w.status), StatusCode: w.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: w.sent, Body: cancelBody{pr, cancel}, ContentLength: -1, Request: req,
	}
	if n, err := strconv.ParseInt(w.sent.Get("Content-Length"), 10, 64); err == nil {
		resp.ContentLength = n
	}
	return resp, nil
}

// pipeWriter is the handler's ResponseWriter: the status and a copy of
// the header are sent (ready closes) at the first write or flush, and the
// body goes through the pipe to the response's reader.
type pipeWriter struct {
	header http.Header
	body   *io.PipeWriter

	once   sync.Once
	ready  chan struct{}
	status int
	sent   http.Header
	err    error // the handler failed before it answered
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) {
	w.once.Do(func() {
		w.status, w.sent = code, w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// Flush sends the header if not yet sent; written bytes are already with
// the reader, the pipe holding none.
func (w *pipeWriter) Flush() { w.WriteHeader(http.StatusOK) }

// fail ends the response with err: as the round trip's error if nothing
// was answered yet, else as the body's read error.
func (w *pipeWriter) fail(err error) {
	w.once.Do(func() {
		w.err = err
		close(w.ready)
	})
	_ = w.body.CloseWithError(err)
}

// cancelBody ends the handler when the client closes the body early.
type cancelBody struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (b cancelBody) Close() error {
	b.cancel()
	return b.PipeReader.Close()
}
