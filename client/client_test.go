package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
)

// These tests run the client against scripted servers; the end-to-end
// suite in internal/api runs it against the real daemon.

func newTest(t *testing.T, h http.HandlerFunc, opts ...Option) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, "tok", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestNew(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:7777":             "http://127.0.0.1:7777",
		"http://127.0.0.1:7777/":            "http://127.0.0.1:7777",
		"https://api.example/sandboxes/v1/": "https://api.example/sandboxes",
		"https://api.example/sandboxes":     "https://api.example/sandboxes",
		" http://h:1\n":                     "http://h:1",
	} {
		c, err := New(in, "t")
		if err != nil || c.BaseURL() != want {
			t.Errorf("New(%q).BaseURL() = %v, %v; want %q", in, c, err, want)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:7777", "ftp://h", "http://"} {
		if _, err := New(bad, "t"); err == nil {
			t.Errorf("New(%q) succeeded", bad)
		}
	}
}

func TestRequestsCarryTokenAndPath(t *testing.T) {
	var got *http.Request
	c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
		got = r
		fmt.Fprint(w, `{"uuid":"u","tag":"a/b","created_at":"2026-01-01T00:00:00Z","operation_uuid":null}`)
	})
	im, err := c.SetTag(ctx(t), "u", "a/b")
	if err != nil || deref(im.Tag) != "a/b" {
		t.Fatalf("SetTag = %+v, %v", im, err)
	}
	if got.Method != http.MethodPatch || got.URL.Path != "/v1/images/u/tag" || got.Header.Get("Authorization") != "Bearer tok" ||
		got.Header.Get("Content-Type") != "application/json" || !strings.HasPrefix(got.Header.Get("User-Agent"), "arbor-client-go") {
		t.Errorf("request = %s %s %v", got.Method, got.URL, got.Header)
	}
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		msg    string
		is     func(error) bool
	}{
		{404, `{"error":"image x not found","status":404}`, "image x not found", IsNotFound},
		{409, `{"error":"operation is not cancellable"}`, "operation is not cancellable", IsConflict},
		{401, `{"error":{"code":"bad"}}`, `{"code":"bad"}`, IsUnauthorized},
		{400, "plain text failure\n", "plain text failure", IsBadRequest},
		{403, ``, "Forbidden", IsForbidden},
		{413, `{"error":"too big"}`, "too big", IsTooLarge},
	} {
		c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Request-ID", "rid")
			w.WriteHeader(tc.status)
			io.WriteString(w, tc.body)
		})
		_, err := c.WhoAmI(ctx(t))
		var e *Error
		if !errors.As(err, &e) || e.Status != tc.status || e.Message != tc.msg || e.RequestID != "rid" || !tc.is(err) {
			t.Errorf("status %d body %q: err = %#v", tc.status, tc.body, err)
		}
	}
}

func TestRetries(t *testing.T) {
	t.Run("425, 429 and 503 are retried with the body replayed", func(t *testing.T) {
		var calls atomic.Int32
		var bodies []string
		var mu sync.Mutex
		c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			bodies = append(bodies, string(b))
			mu.Unlock()
			switch calls.Add(1) {
			case 1:
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(http.StatusTooEarly)
			case 2:
				w.Header().Set("Retry-After", time.Now().UTC().Format(http.TimeFormat))
				w.WriteHeader(http.StatusTooManyRequests)
			case 3:
				w.WriteHeader(http.StatusServiceUnavailable)
			default:
				w.WriteHeader(http.StatusCreated)
				fmt.Fprint(w, `{"uuid":"op"}`)
			}
		})
		sp, err := c.Spawn(ctx(t), apitypes.InstanceSpawnRequest{Command: "true", Image: "i"})
		if err != nil || sp.UUID != "op" || calls.Load() != 4 {
			t.Fatalf("Spawn = %+v, %v after %d calls", sp, err, calls.Load())
		}
		for _, b := range bodies {
			if b != bodies[0] || !strings.Contains(b, `"command":"true"`) {
				t.Errorf("replayed bodies differ: %q", bodies)
			}
		}
	})
	t.Run("Retry-After is honoured", func(t *testing.T) {
		var first time.Time
		var gap time.Duration
		c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
			if first.IsZero() {
				first = time.Now()
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooEarly)
				return
			}
			gap = time.Since(first)
			fmt.Fprint(w, `{}`)
		})
		if _, err := c.WhoAmI(ctx(t)); err != nil {
			t.Fatal(err)
		}
		if gap < 900*time.Millisecond {
			t.Errorf("retried after %v, want >= 1 s (Retry-After: 1)", gap)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		var calls atomic.Int32
		c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":"slow down"}`)
		}, WithRetries(2, time.Second))
		_, err := c.WhoAmI(ctx(t))
		if !IsRateLimited(err) || calls.Load() != 3 {
			t.Errorf("err = %v after %d calls, want 429 after 3", err, calls.Load())
		}
	})
	t.Run("other statuses are not retried", func(t *testing.T) {
		var calls atomic.Int32
		c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.WriteHeader(http.StatusInternalServerError)
		})
		if _, err := c.WhoAmI(ctx(t)); StatusCode(err) != 500 || calls.Load() != 1 {
			t.Errorf("err = %v after %d calls", err, calls.Load())
		}
	})
	t.Run("a consumed stream is not replayed", func(t *testing.T) {
		var calls atomic.Int32
		c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		})
		pr, pw := io.Pipe()
		go func() { pw.Write([]byte("data")); pw.Close() }()
		if _, err := c.UploadFile(ctx(t), pr); !IsUnavailable(err) || calls.Load() != 1 {
			t.Errorf("err = %v after %d calls, want one 503", err, calls.Load())
		}
	})
	t.Run("a seekable upload is replayed", func(t *testing.T) {
		var calls atomic.Int32
		c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			if calls.Add(1) == 1 {
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			if string(b) != "file content" || r.ContentLength != 12 {
				t.Errorf("replayed upload = %q (Content-Length %d)", b, r.ContentLength)
			}
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"uuid":"f","sha256":"s","size":12}`)
		})
		p := filepath.Join(t.TempDir(), "f")
		os.WriteFile(p, []byte("file content"), 0o644)
		f, _ := os.Open(p)
		defer f.Close()
		if up, err := c.UploadFile(ctx(t), f); err != nil || up.Size != 12 || calls.Load() != 2 {
			t.Errorf("UploadFile = %+v, %v after %d calls", up, err, calls.Load())
		}
	})
}

// eventServer serves a scripted event log, dropping the connection after
// dropAfter frames on the first n connections.
type eventServer struct {
	mu        sync.Mutex
	log       []string // event types; ids are indexes
	dropAfter int
	drops     int
	resumes   []string // Last-Event-Id of each connection
	sseError  bool
}

func (s *eventServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.resumes = append(s.resumes, r.Header.Get("Last-Event-Id"))
	drop := s.drops > 0
	s.drops--
	s.mu.Unlock()
	after := int64(-1)
	fmt.Sscan(r.URL.Query().Get("since"), &after)
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprint(w, ": keepalive\n\n")
	sent := 0
	for id := after + 1; id < int64(len(s.log)); id++ {
		if drop && sent == s.dropAfter {
			if s.sseError {
				fmt.Fprint(w, "event: sse_error\ndata: upstream event source closed unexpectedly\n\n")
				return
			}
			// Cut the connection mid-frame.
			fmt.Fprintf(w, "id: %d\nevent: %s\n", id, s.log[id])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		fmt.Fprintf(w, "id: %d\r\nevent: %s\r\ndata: {\"id\":%d,\"ts\":\"2026-01-01T00:00:00Z\",\"spid\":0,\"type\":%q,\"data\":{}}\r\n\r\n",
			id, s.log[id], id, s.log[id])
		w.(http.Flusher).Flush()
		sent++
	}
}

func TestFollowEvents(t *testing.T) {
	log := []string{"init", "spawn", "stdout", "stdout", "exit", "completion"}
	for _, tc := range []struct {
		name    string
		srv     *eventServer
		after   int64
		want    []int64
		resumes []string
	}{
		{"clean", &eventServer{log: log}, -1, []int64{0, 1, 2, 3, 4, 5}, []string{""}},
		{"dropped twice", &eventServer{log: log, drops: 2, dropAfter: 2}, -1, []int64{0, 1, 2, 3, 4, 5}, []string{"", "1", "3"}},
		{"sse_error", &eventServer{log: log, drops: 1, dropAfter: 3, sseError: true}, -1, []int64{0, 1, 2, 3, 4, 5}, []string{"", "2"}},
		{"resume point", &eventServer{log: log}, 3, []int64{4, 5}, []string{"3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTest(t, tc.srv.ServeHTTP, WithRetries(5, 10*time.Millisecond))
			var got []int64
			err := c.FollowEvents(ctx(t), "op", tc.after, func(ev apitypes.OperationEvent) error {
				got = append(got, ev.ID)
				return nil
			})
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("FollowEvents = %v, %v; want %v", got, err, tc.want)
			}
			if fmt.Sprint(tc.srv.resumes) != fmt.Sprint(tc.resumes) {
				t.Errorf("Last-Event-Id per connection = %q, want %q", tc.srv.resumes, tc.resumes)
			}
		})
	}
	t.Run("gives up without progress", func(t *testing.T) {
		c := newTest(t, (&eventServer{log: []string{"init"}}).ServeHTTP, WithRetries(5, 10*time.Millisecond)) // never completes
		err := c.FollowEvents(ctx(t), "op", -1, func(apitypes.OperationEvent) error { return nil })
		if !errors.Is(err, errEndedEarly) {
			t.Errorf("err = %v, want it to end with %v", err, errEndedEarly)
		}
	})
	t.Run("callback error stops", func(t *testing.T) {
		c := newTest(t, (&eventServer{log: log}).ServeHTTP)
		stop := errors.New("stop")
		if err := c.FollowEvents(ctx(t), "op", -1, func(apitypes.OperationEvent) error { return stop }); err != stop {
			t.Errorf("err = %v, want the callback's", err)
		}
	})
	t.Run("404 is final", func(t *testing.T) {
		var calls atomic.Int32
		c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.WriteHeader(http.StatusNotFound)
		})
		if err := c.FollowEvents(ctx(t), "op", -1, func(apitypes.OperationEvent) error { return nil }); !IsNotFound(err) || calls.Load() != 1 {
			t.Errorf("err = %v after %d calls", err, calls.Load())
		}
	})
}

func TestFindImageByTag(t *testing.T) {
	for loc, want := range map[string]string{"abc/": "abc", "inspect/abc/": "abc", "/v1/inspect/abc/": "abc", "abc": "abc"} {
		c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/inspect/" || r.URL.Query().Get("tag") != "ubuntu:latest" {
				t.Errorf("request %s", r.URL)
			}
			w.Header().Set("Location", loc)
			w.WriteHeader(http.StatusFound)
		})
		if got, err := c.FindImageByTag(ctx(t), "tag:ubuntu:latest"); err != nil || got != want {
			t.Errorf("Location %q: FindImageByTag = %q, %v", loc, got, err)
		}
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, _ := New("http://"+addr, "t")
	_, err = c.WhoAmI(ctx(t))
	if !errors.Is(err, ErrUnreachable) || !IsUnavailable(err) || !strings.Contains(err.Error(), "arbor serve") {
		t.Errorf("err = %v, want ErrUnreachable naming `arbor serve`", err)
	}
}

func TestDiscover(t *testing.T) {
	home := t.TempDir()
	t.Setenv("ARBOR_HOME", home)
	t.Setenv("ARBOR_URL", "")
	t.Setenv("ARBOR_TOKEN", "")
	if _, err := Discover(); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "arbor serve") {
		t.Errorf("Discover without a daemon = %v, want a hint to start it", err)
	}
	os.WriteFile(filepath.Join(home, "url"), []byte("http://127.0.0.1:7777\n"), 0o644)
	if _, err := Discover(); err == nil || !strings.Contains(err.Error(), "ARBOR_TOKEN") {
		t.Errorf("Discover without a token = %v", err)
	}
	os.WriteFile(filepath.Join(home, "token"), []byte("secret\n"), 0o600)
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		fmt.Fprint(w, `{"token_uuid":"t","token_expiration":null,"permissions":{},"operations_stat":{}}`)
	}))
	defer srv.Close()
	c, err := Discover()
	if err != nil || c.BaseURL() != "http://127.0.0.1:7777" {
		t.Fatalf("Discover from files = %v, %v", c, err)
	}
	t.Setenv("ARBOR_URL", srv.URL)
	t.Setenv("ARBOR_TOKEN", "from-env")
	c, err = Discover()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WhoAmI(ctx(t)); err != nil || auth != "Bearer from-env" {
		t.Errorf("environment did not win: %v, Authorization %q", err, auth)
	}
}

func TestReadEvents(t *testing.T) {
	stream := ": keepalive\n\n" +
		"retry: 1000\n\n" +
		"id: 0\nevent: custom\ndata: {\"id\":0,\"type\":\"custom\",\"data\":{\"x\":1}}\n\n" +
		"id: 1\nevent: completion\ndata: {\"id\":1,\n" + "data: \"type\":\"completion\",\"data\":{}}\n\n" +
		"id: 2\nevent: stdout\ndata: {\"id\":2}\n\n"
	var got []string
	err := readEvents(strings.NewReader(stream), func(ev apitypes.OperationEvent) error {
		got = append(got, ev.Type)
		return nil
	})
	if err != nil || fmt.Sprint(got) != "[custom completion]" {
		t.Errorf("readEvents = %v, %v; want unknown types delivered, multi-line data joined, stop at completion", got, err)
	}
	err = readEvents(strings.NewReader("id: 0\ndata: {\"id\":0"), func(apitypes.OperationEvent) error { return nil })
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated stream = %v, want io.ErrUnexpectedEOF", err)
	}
}

// TestWait: Wait asks once with a long poll; a server that answers it
// unfinished (one that ignores wait) or refuses it gets the event stream
// and a read after; a missing operation ends it at once.
func TestWait(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pollStatus int    // answer to GET ?wait=
		pollOp     string // its status, when 200
		want       []string
		wantErr    bool
	}{
		{"long poll", http.StatusOK, "SUCCESS", []string{"GET wait=50s"}, false},
		{"server ignores wait", http.StatusOK, "EXECUTING", []string{"GET wait=50s", "events", "GET"}, false},
		{"server refuses wait", http.StatusBadRequest, "", []string{"GET wait=50s", "events", "GET"}, false},
		{"not found", http.StatusNotFound, "", []string{"GET wait=50s"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []string
			events := &eventServer{log: []string{"init", "exit", "completion"}}
			c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case strings.HasSuffix(r.URL.Path, "/events"):
					seen = append(seen, "events")
					mu.Unlock()
					events.ServeHTTP(w, r)
					mu.Lock()
				case r.URL.Query().Get("wait") != "":
					seen = append(seen, "GET wait="+r.URL.Query().Get("wait"))
					w.WriteHeader(tc.pollStatus)
					if tc.pollStatus == http.StatusOK {
						fmt.Fprintf(w, `{"uuid":"op","status":%q}`, tc.pollOp)
					} else {
						fmt.Fprintf(w, `{"error":"no","status":%d}`, tc.pollStatus)
					}
				default:
					seen = append(seen, "GET")
					fmt.Fprint(w, `{"uuid":"op","status":"SUCCESS"}`)
				}
			})
			op, err := c.Wait(ctx(t), "op")
			if tc.wantErr != (err != nil) || (err == nil && op.Status != "SUCCESS") {
				t.Errorf("Wait = %+v, %v", op, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if fmt.Sprint(seen) != fmt.Sprint(tc.want) {
				t.Errorf("requests %q, want %q", seen, tc.want)
			}
		})
	}
}

// TestRunOneRequest: Run asks the daemon to answer the spawn once the
// operation has finished, and makes no other request when it does; it
// waits further when the answer is the spawn's own (a server that ignores
// wait) or an operation still in flight, spawns again without wait when
// the server refuses it (nothing was spawned), and cancels the operation
// named by the answer's Location when ctx ends while the body waits.
func TestRunOneRequest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		post    func(w http.ResponseWriter, r *http.Request) // answer to POST /instances?wait=
		want    []string
		wantErr bool
	}{
		{"daemon waits", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", "/v1/operations/op")
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"uuid":"op","status":"SUCCESS","metadata":{"command":"x"}}`)
		}, []string{"POST wait=50s"}, false},
		{"server ignores wait", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"uuid":"op","command":"x","image":"i"}`)
		}, []string{"POST wait=50s", "GET wait=50s"}, false},
		{"wait ends first", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"uuid":"op","status":"EXECUTING"}`)
		}, []string{"POST wait=50s", "GET wait=50s"}, false},
		{"server refuses wait", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"unknown parameter wait","status":400}`)
		}, []string{"POST wait=50s", "POST", "GET wait=50s"}, false},
		{"bad body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"command is required","status":400}`)
		}, []string{"POST wait=50s", "POST"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []string
			c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				wait := r.URL.Query().Get("wait")
				switch {
				case r.Method == http.MethodPost && wait != "":
					seen = append(seen, "POST wait="+wait)
					tc.post(w, r)
				case r.Method == http.MethodPost:
					seen = append(seen, "POST")
					if tc.wantErr {
						w.WriteHeader(http.StatusBadRequest)
						fmt.Fprint(w, `{"error":"command is required","status":400}`)
						return
					}
					w.WriteHeader(http.StatusCreated)
					fmt.Fprint(w, `{"uuid":"op"}`)
				default:
					seen = append(seen, "GET wait="+wait)
					fmt.Fprint(w, `{"uuid":"op","status":"SUCCESS"}`)
				}
			})
			op, err := c.Run(ctx(t), apitypes.InstanceSpawnRequest{Command: "x"})
			if tc.wantErr != (err != nil) || (err == nil && (op.Status != "SUCCESS" || op.UUID != "op")) {
				t.Errorf("Run = %+v, %v", op, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if fmt.Sprint(seen) != fmt.Sprint(tc.want) {
				t.Errorf("requests %q, want %q", seen, tc.want)
			}
		})
	}

	t.Run("ctx ends while the body waits", func(t *testing.T) {
		cancelled := make(chan string, 1)
		release := make(chan struct{})
		defer close(release)
		c := newTest(t, func(w http.ResponseWriter, r *http.Request) {
			switch r.Method {
			case http.MethodPost:
				w.Header().Set("Location", "/v1/operations/op7")
				w.WriteHeader(http.StatusCreated)
				http.NewResponseController(w).Flush()
				select { // the body would come once the operation ends
				case <-release:
				case <-r.Context().Done():
				}
			case http.MethodDelete:
				cancelled <- r.URL.Path
				w.WriteHeader(http.StatusAccepted)
			}
		})
		rctx, cancel := context.WithTimeout(ctx(t), 300*time.Millisecond)
		defer cancel()
		if _, err := c.Run(rctx, apitypes.InstanceSpawnRequest{Command: "x"}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run = %v, want the context's end", err)
		}
		select {
		case p := <-cancelled:
			if p != "/v1/operations/op7" {
				t.Errorf("cancelled %s, want the operation of the Location", p)
			}
		case <-time.After(10 * time.Second):
			t.Error("the operation was not cancelled")
		}
	})
}
