package api

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestAcceptsGzip(t *testing.T) {
	for h, want := range map[string]bool{
		"":                      false,
		"identity":              false,
		"gzip":                  true,
		"GZIP":                  true,
		"gzip, deflate":         true,
		"deflate, gzip;q=0.5":   true,
		"gzip;q=0":              false,
		"gzip; q=0.0, identity": false,
		"x-gzip":                true,
		"*":                     true,
		"*;q=0":                 false,
		"gzip;q=0, *":           false,
		"br;q=1.0, *;q=0.1":     true,
		"deflate, br":           false,
	} {
		if got := acceptsGzip(h); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", h, got, want)
		}
	}
}

// TestAbortedStreamIsTruncated checks that a response failing after its
// headers went out never looks complete: no gzip trailer, no final chunk.
func TestAbortedStreamIsTruncated(t *testing.T) {
	s := &server{log: slog.New(slog.DiscardHandler), mux: http.NewServeMux()}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	s.mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-tar")
		fw := newFlushWriter(w)
		fw.Write(payload)
		if r.URL.Query().Get("fail") != "" {
			s.abort(r, "test stream", errors.New("disk on fire"))
		}
	})
	srv := httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	defer srv.Close()
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	get := func(query, encoding string) (*http.Response, []byte, error) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/stream"+query, nil)
		req.Header.Set("Accept-Encoding", encoding)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body io.Reader = resp.Body
		if resp.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				return resp, nil, err
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		return resp, b, err
	}
	for _, enc := range []string{"gzip", "identity"} {
		if _, b, err := get("", enc); err != nil || !bytes.Equal(b, payload) {
			t.Errorf("%s: complete stream: %d bytes, %v", enc, len(b), err)
		}
		resp, b, err := get("?fail=1", enc)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", enc, resp.StatusCode)
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: cut stream read %d bytes with error %v, want io.ErrUnexpectedEOF", enc, len(b), err)
		}
	}
}

// TestFlushWriterFlushes checks that streamed bodies reach the client
// before the handler ends.
func TestFlushWriterFlushes(t *testing.T) {
	s := &server{log: slog.New(slog.DiscardHandler), mux: http.NewServeMux()}
	release := make(chan struct{})
	s.mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		fw := newFlushWriter(w)
		fw.Write(bytes.Repeat([]byte("x"), 70<<10)) // past the flush threshold
		<-release
	})
	srv := httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	defer srv.Close()
	defer close(release)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/slow", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() {
		b := make([]byte, 70<<10)
		n, _ := io.ReadFull(zr, b)
		got <- n
	}()
	select {
	case n := <-got:
		if n != 70<<10 {
			t.Errorf("read %d bytes before the handler ended", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("flushed gzip data did not reach the client while the handler was running")
	}
}

func TestNoRouteIsJSON(t *testing.T) {
	s := &server{log: slog.New(slog.DiscardHandler), mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /v1/thing", func(http.ResponseWriter, *http.Request) {})
	for _, tc := range []struct {
		method, path string
		status       int
	}{{"GET", "/v1/other", 404}, {"POST", "/v1/thing", 405}} {
		rec := httptest.NewRecorder()
		s.serveHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.status || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") ||
			!strings.Contains(rec.Body.String(), `"status":`) {
			t.Errorf("%s %s = %d %s %q", tc.method, tc.path, rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
	}
}
