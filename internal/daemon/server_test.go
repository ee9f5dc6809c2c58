package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serve runs newHTTPServer with short timeouts on a loopback port.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(context.Background(), h, slog.New(slog.DiscardHandler),
		serverTimeouts{readHeader: 200 * time.Millisecond, idle: 300 * time.Millisecond})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// closedWithin reports whether the server closes conn within d (reads
// return EOF or a reset), failing the test if it sends data instead.
func closedWithin(t *testing.T, conn net.Conn, r io.Reader, d time.Duration) bool {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	n, err := r.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	if n > 0 {
		t.Fatalf("server sent data on a connection that should be idle")
	}
	return err != nil
}

func TestServerClosesIdleAndStalledConnections(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	for _, tc := range []struct {
		name string
		send string // what the client writes before going quiet
	}{
		{"idle keep-alive after a request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"headers never finished", "GET / HTTP/1.1\r\nHost: x\r\n"},
		{"nothing sent", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			if tc.send != "" {
				io.WriteString(conn, tc.send)
			}
			if strings.HasSuffix(tc.send, "\r\n\r\n") {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if !closedWithin(t, conn, br, 5*time.Second) {
				t.Errorf("connection still open 5 s after going quiet (timeouts 200-300 ms)")
			}
		})
	}
}

// TestServerKeepsLongStreams: a response streamed and a body uploaded for
// longer than every server timeout both complete (no Read/WriteTimeout).
func TestServerKeepsLongStreams(t *testing.T) {
	const chunks, gap = 8, 100 * time.Millisecond // 0.8 s, longer than the 0.2/0.3 s timeouts
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			n, err := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%d %v", n, err)
			return
		}
		rc := http.NewResponseController(w)
		for i := range chunks {
			fmt.Fprintf(w, "data: %d\n\n", i)
			rc.Flush()
			time.Sleep(gap) // deliberate: a slow stream
		}
	}))
	resp, err := http.Get("http://" + addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || strings.Count(string(b), "data:") != chunks {
		t.Errorf("stream = %q, %v; want %d frames", b, err, chunks)
	}

	pr, pw := io.Pipe()
	go func() {
		for range chunks {
			pw.Write([]byte("0123456789"))
			time.Sleep(gap) // deliberate: a slow stream
		}
		pw.Close()
	}()
	resp, err = http.Post("http://"+addr+"/upload", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d <nil>", chunks*10); string(b) != want {
		t.Errorf("slow upload answer = %q, want %q", b, want)
	}
}
