package mcp

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHandlerTransportStreams: a response streams as the handler writes and
// flushes it (the event stream and downloads need that), its status,
// header and Content-Length arrive, and closing the body early ends the
// handler's context.
func TestHandlerTransportStreams(t *testing.T) {
	ended := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/x" || r.URL.RawQuery != "a=b" || r.Header.Get("X-Test") != "1" {
			t.Errorf("handler got %s?%s with X-Test %q", r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Test"))
		}
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "first")
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done()
		close(ended)
	})
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://arbor.in-process/v1/x?a=b", nil)
	req.Header.Set("X-Test", "1")
	resp, err := handlerTransport{h}.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted || resp.ContentLength != 100 {
		t.Errorf("response %d with Content-Length %d, want 202 and 100", resp.StatusCode, resp.ContentLength)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("read %q, %v before the handler returned; want the flushed %q", buf, err, "first")
	}
	resp.Body.Close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("closing the body did not end the handler's context")
	}
}

// TestHandlerTransportPanic: a handler that panics before answering fails
// the round trip instead of the process.
func TestHandlerTransportPanic(t *testing.T) {
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })
	req, _ := http.NewRequest(http.MethodPost, "http://arbor.in-process/v1/x", strings.NewReader("body"))
	if _, err := (handlerTransport{h}).RoundTrip(req); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("RoundTrip = %v, want the panic as an error", err)
	}
}
