package api_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/api"
)

// onlyReader hides every method but Read, so uploads go out chunked.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// randomReader returns n deterministic pseudo-random bytes.
func randomReader(n int64, seed uint64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), n)
}

// countingTransport counts requests by "METHOD path".
type countingTransport struct {
	n map[string]*atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if n, ok := c.n[r.Method+" "+r.URL.Path]; ok {
		n.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestFiles(t *testing.T) {
	d := realDaemon(t) // places files owned by root
	ctx := ctxT(t)
	content := "content-addressed " + t.Name()
	sum := sha256.Sum256([]byte(content))
	hexSum := hex.EncodeToString(sum[:])

	// Chunked upload (no Content-Length), as the contree CLI streams files.
	up, err := d.c.UploadFile(ctx, onlyReader{strings.NewReader(content)})
	if err != nil {
		t.Fatal(err)
	}
	if up.SHA256 != hexSum || up.Size != int64(len(content)) {
		t.Fatalf("UploadFile = %+v, want sha256 %s size %d", up, hexSum, len(content))
	}
	again, err := d.c.UploadFile(ctx, strings.NewReader(content))
	if err != nil || again.UUID != up.UUID {
		t.Errorf("identical upload = %+v, %v; want the same uuid %s", again, err, up.UUID)
	}

	for _, tc := range []struct {
		name, method, path string
		status             int
	}{
		{"get by sha256", http.MethodGet, "/v1/files/" + hexSum, 200},
		{"get by uuid", http.MethodGet, "/v1/files/" + up.UUID, 200},
		{"head by sha256", http.MethodHead, "/v1/files/" + hexSum, 200},
		{"legacy get ?sha256=", http.MethodGet, "/v1/files?sha256=" + hexSum, 200},
		{"legacy get ?uuid=", http.MethodGet, "/v1/files?uuid=" + up.UUID, 200},
		{"legacy head ?sha256=", http.MethodHead, "/v1/files?sha256=" + hexSum, 200},
		{"legacy head ?uuid=", http.MethodHead, "/v1/files?uuid=" + up.UUID, 200},
		{"unknown sha256", http.MethodGet, "/v1/files/" + strings.Repeat("ab", 32), 404},
		{"head unknown sha256", http.MethodHead, "/v1/files/" + strings.Repeat("ab", 32), 404},
		{"legacy unknown", http.MethodGet, "/v1/files?sha256=" + strings.Repeat("cd", 32), 404},
		{"legacy head unknown", http.MethodHead, "/v1/files?uuid=00000000-0000-4000-8000-000000000000", 404},
		{"not a digest", http.MethodGet, "/v1/files/xyz", 400},
	} {
		r := do(t, tc.method, d.srv.URL+tc.path, d.token, nil)
		if r.StatusCode != tc.status {
			t.Errorf("%s: %s %s = %d %q, want %d", tc.name, tc.method, tc.path, r.StatusCode, r.body, tc.status)
			continue
		}
		if tc.method == http.MethodGet && tc.status == 200 {
			f := r.object(t)
			if f["uuid"] != up.UUID || f["sha256"] != hexSum {
				t.Errorf("%s: got %v", tc.name, f)
			}
		}
		if tc.method == http.MethodHead && len(r.body) != 0 {
			t.Errorf("%s: HEAD answered a body", tc.name)
		}
	}
	if ok, err := d.c.FileExists(ctx, hexSum); !ok || err != nil {
		t.Errorf("FileExists = %v, %v", ok, err)
	}
	files, err := d.c.ListFiles(ctx, client.Page{Limit: 1000})
	if err != nil || !fileListed(files, up.UUID) {
		t.Errorf("ListFiles does not list the upload: %v", err)
	}

	t.Run("EnsureFile uploads only new content", func(t *testing.T) {
		posts := &atomic.Int64{}
		c, err := client.New(d.srv.URL, d.token, client.WithHTTPClient(&http.Client{
			Transport: countingTransport{n: map[string]*atomic.Int64{"POST /v1/files": posts}}}))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(p, []byte("ensure "+time.Now().String()), 0o644); err != nil {
			t.Fatal(err)
		}
		a, err := c.EnsureFile(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.EnsureFile(ctx, p)
		if err != nil || b.UUID != a.UUID {
			t.Fatalf("second EnsureFile = %+v, %v", b, err)
		}
		if eb, err := c.EnsureBytes(ctx, []byte(content)); err != nil || eb.UUID != up.UUID {
			t.Errorf("EnsureBytes(known content) = %+v, %v", eb, err)
		}
		if posts.Load() != 1 {
			t.Errorf("EnsureFile/EnsureBytes uploaded %d times, want once", posts.Load())
		}
	})

	t.Run("upload larger than memory streams to disk", func(t *testing.T) {
		const size = 96 << 20
		h := sha256.New()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		big, err := d.c.UploadFile(ctx, onlyReader{io.TeeReader(randomReader(size, 1), h)})
		if err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		if big.Size != size || big.SHA256 != hex.EncodeToString(h.Sum(nil)) {
			t.Fatalf("big upload = %+v, want %d bytes with the streamed sha256", big, size)
		}
		// Client and server share this process: together they allocated far
		// less than the file, so neither held it in memory.
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("uploading %d MiB allocated %.1f MiB", size>>20, float64(alloc)/(1<<20))
		if alloc > size/2 {
			t.Errorf("uploading %d MiB allocated %d MiB", size>>20, alloc>>20)
		}
		op := d.run(t, d.c, d.base, "sha256sum /root/big", func(r *apitypes.InstanceSpawnRequest) {
			r.Disposable = ptr(true)
			r.Files = map[string]apitypes.FileSpec{"/root/big": {UUID: big.UUID, Mode: 0o600}}
		})
		if got := stdoutOf(t, op); !strings.HasPrefix(got, big.SHA256) {
			t.Errorf("sha256sum inside the sandbox = %q, want %s", got, big.SHA256)
		}
	})

	limited := httptest.NewServer(api.New(d.e, api.Options{MaxUploadBytes: 1 << 20, MaxBodyBytes: 1 << 10}))
	defer limited.Close()
	lc, err := client.New(limited.URL, d.token, client.WithRetries(0, 0))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("oversized bodies are 413", func(t *testing.T) {
		d.needsEngine(t, "serve with lower upload and body limits")
		n := len(d.tmpUploads(t))
		r := do(t, http.MethodPost, limited.URL+"/v1/files", d.token, bytes.NewReader(make([]byte, 2<<20))) // Content-Length
		wantError(t, r, http.StatusRequestEntityTooLarge, "limit")
		_, err := lc.UploadFile(ctx, onlyReader{randomReader(3<<20, 3)})
		if !client.IsTooLarge(err) {
			t.Errorf("chunked upload over the limit = %v, want 413", err)
		}
		body := fmt.Sprintf(`{"command":"true","image":%q,"env":{"X":%q}}`, d.base, strings.Repeat("x", 2<<10))
		r = do(t, http.MethodPost, limited.URL+"/v1/instances", d.token, strings.NewReader(body), "Content-Type: application/json")
		wantError(t, r, http.StatusRequestEntityTooLarge, "limit")
		if got := len(d.tmpUploads(t)); got > n {
			t.Errorf("rejected uploads left %d staging files", got-n)
		}
		if up, err := lc.UploadFile(ctx, strings.NewReader("small")); err != nil || up.Size != 5 {
			t.Errorf("upload under the limit = %+v, %v", up, err)
		}
	})

	impatient := httptest.NewServer(api.New(d.e, api.Options{BodyIdleTimeout: 200 * time.Millisecond}))
	defer impatient.Close()

	t.Run("client leaving or stalling mid-upload", func(t *testing.T) {
		d.needsEngine(t, "serve with a short body idle timeout")
		before, err := d.c.ListFiles(ctx, client.Page{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, framing string
			srv           *httptest.Server
			stall         bool
		}{
			{"chunked, then gone", "Transfer-Encoding: chunked", d.srv, false},
			{"Content-Length, then gone", "Content-Length: 10485760", d.srv, false},
			{"stalled", "Content-Length: 10485760", impatient, true},
		} {
			framing := tc.framing
			conn, err := net.Dial("tcp", strings.TrimPrefix(tc.srv.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			w := bufio.NewWriter(conn)
			fmt.Fprintf(w, "POST /v1/files HTTP/1.1\r\nHost: arbor\r\nAuthorization: Bearer %s\r\n%s\r\n\r\n", d.token, framing)
			chunk := make([]byte, 256<<10)
			if strings.HasPrefix(framing, "Transfer") {
				fmt.Fprintf(w, "%x\r\n", 1<<20) // announce 1 MiB, send a quarter
			}
			w.Write(chunk)
			w.Flush()
			// The upload is being written to disk before the client leaves.
			for start := time.Now(); len(d.tmpUploads(t)) == 0; time.Sleep(5 * time.Millisecond) {
				if time.Since(start) > 10*time.Second {
					t.Fatal("upload never reached the staging directory")
				}
			}
			if tc.stall {
				// Keep the connection open but send nothing: the server gives up.
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil || resp.StatusCode != http.StatusBadRequest {
					t.Errorf("%s: answer %v, %v; want 400 upload interrupted", tc.name, resp, err)
				}
			}
			conn.Close()
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(d.tmpUploads(t)) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond) // no event for the staging file removal: poll
		}
		if left := d.tmpUploads(t); len(left) > 0 {
			t.Errorf("interrupted uploads left staging files %v", left)
		}
		after, err := d.c.ListFiles(ctx, client.Page{Limit: 1000})
		if err != nil || len(after) != len(before) {
			t.Errorf("interrupted uploads changed the file list: %d -> %d (%v)", len(before), len(after), err)
		}
		if _, err := d.c.WhoAmI(ctx); err != nil {
			t.Errorf("daemon unhealthy after interrupted uploads: %v", err)
		}
	})
}

func fileListed(files []apitypes.File, id string) bool {
	for _, f := range files {
		if f.UUID == id {
			return true
		}
	}
	return false
}
