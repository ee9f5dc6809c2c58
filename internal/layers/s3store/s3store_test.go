package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layers"
	"github.com/arborsh/arbor/internal/layers/storagetest"
	"github.com/arborsh/arbor/internal/testutil/s3server"
)

// node is one machine's view of a bucket: its own home (cache and staging).
type node struct {
	st      *Store
	staging string
}

func newNode(t *testing.T, srv *s3server.Server, url string, mod func(*Config)) node {
	t.Helper()
	home := t.TempDir()
	cfg := Config{URL: url, Endpoint: srv.Endpoint, CacheDir: filepath.Join(home, "layer-cache"), Staging: filepath.Join(home, "tmp")}
	if mod != nil {
		mod(&cfg)
	}
	st, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return node{st, cfg.Staging}
}

// layer makes a directory with files of the given sizes, ready to be put.
func layer(t *testing.T, staging string, sizes ...int) string {
	t.Helper()
	dir, err := os.MkdirTemp(staging, "layer-*")
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range sizes {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(j*7 + i) // little to compress away
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestConformance(t *testing.T) {
	srv := s3server.Start(t)
	srv.SetEnv(t)
	storagetest.RunShared(t, func(t *testing.T) (layers.Storage, string) {
		n := newNode(t, srv, "s3://"+srv.Bucket(t)+"/some/prefix", nil)
		return n.st, n.staging
	}, func(t *testing.T, st layers.Storage) layers.Storage {
		return newNode(t, srv, st.(*Store).url, nil).st
	})
}

// TestFreshNodeReadsLayers: a layer put by one node is read by another
// with an empty cache, fetched from the bucket.
func TestFreshNodeReadsLayers(t *testing.T) {
	srv := s3server.Start(t)
	srv.SetEnv(t)
	url := "s3://" + srv.Bucket(t)
	a := newNode(t, srv, url, nil)
	if err := a.st.Put(context.Background(), "l1", layer(t, a.staging, 1000)); err != nil {
		t.Fatal(err)
	}
	b := newNode(t, srv, url, nil)
	p, err := b.st.Get(context.Background(), "l1")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(p, "f0")); err != nil || fi.Size() != 1000 {
		t.Fatalf("fetched layer's f0: %v, %v", fi, err)
	}
	if b.st.Fetches() != 1 || a.st.Fetches() != 0 {
		t.Errorf("fetches: putter %d, reader %d; want 0 and 1", a.st.Fetches(), b.st.Fetches())
	}
}

// TestDigestMismatch: an object whose bytes do not match its digest fails
// the Get clearly, and nothing of it is cached.
func TestDigestMismatch(t *testing.T) {
	srv := s3server.Start(t)
	srv.SetEnv(t)
	bucket := srv.Bucket(t)
	url := "s3://" + bucket + "/p"
	a := newNode(t, srv, url, nil)
	ctx := context.Background()
	if err := a.st.Put(ctx, "bad", layer(t, a.staging, 100_000)); err != nil {
		t.Fatal(err)
	}
	// versitygw keeps the object as a plain file: flip one byte of it.
	obj := filepath.Join(srv.Dir, bucket, "p", "layers", "bad")
	f, err := os.OpenFile(obj, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	f.Close()

	n := newNode(t, srv, url, nil)
	for range 2 { // and again: no half-fetched copy answers the second time
		_, err := n.st.Get(ctx, "bad")
		if err == nil || !strings.Contains(err.Error(), "is corrupt") || !strings.Contains(err.Error(), "sha256") {
			t.Fatalf("Get of a corrupted layer = %v, want a digest error", err)
		}
	}
	if n.st.Fetches() != 2 || n.st.CachedBytes() != 0 {
		t.Errorf("after two failed Gets: %d fetches, %d cached bytes; want 2 and 0", n.st.Fetches(), n.st.CachedBytes())
	}
	for _, d := range []string{n.st.cacheDir, n.staging} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.Name() != ".trash" && e.Name() != bootFile {
				t.Errorf("%s holds %s after a failed fetch", d, e.Name())
			}
		}
	}
}

// TestPutWhileS3Down: when S3 goes away during the upload, Put fails
// with an unavailable error naming the fix, its directory stays, and no
// layer is visible once S3 is back.
func TestPutWhileS3Down(t *testing.T) {
	srv := s3server.Start(t)
	srv.SetEnv(t)
	url := "s3://" + srv.Bucket(t)
	var once sync.Once
	killOnPut := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodPut && !isProbe(r) {
			once.Do(srv.Stop)
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	n := newNode(t, srv, url, func(c *Config) { c.HTTPClient = killOnPut; c.RetryFor = -1 })
	dir := layer(t, n.staging, 5000)
	err := n.st.Put(context.Background(), "x", dir)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "upload layer x") {
		t.Fatalf("Put with S3 down = %v, want unavailable", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "f0")); err != nil || fi.Size() != 5000 {
		t.Errorf("failed Put consumed its directory: %v", err)
	}
	srv.Restart(t)
	if ids, err := n.st.List(context.Background()); err != nil || len(ids) != 0 {
		t.Errorf("List after the failed Put = %q, %v; want nothing", ids, err)
	}
	if _, err := n.st.Get(context.Background(), "x"); !errdefs.IsNotFound(err) {
		t.Errorf("Get after the failed Put = %v, want not found", err)
	}
	// The directory can still be put once S3 is back.
	if err := n.st.Put(context.Background(), "x", dir); err != nil {
		t.Fatal(err)
	}
}

// TestPutWaitsForS3: an upload that finds S3 down is retried, and
// succeeds once S3 is back within Config.RetryFor.
func TestPutWaitsForS3(t *testing.T) {
	srv := s3server.Start(t)
	srv.SetEnv(t)
	url := "s3://" + srv.Bucket(t)
	var puts atomic.Int32
	flaky := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodPut && !isProbe(r) {
			switch puts.Add(1) {
			case 1:
				srv.Stop() // this attempt fails
			case 2:
				srv.Restart(t) // S3 is back for the retry
			}
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	n := newNode(t, srv, url, func(c *Config) { c.HTTPClient = flaky; c.RetryFor = time.Minute })
	if err := n.st.Put(context.Background(), "x", layer(t, n.staging, 5000)); err != nil {
		t.Fatalf("Put across a short S3 outage: %v", err)
	}
	if puts.Load() < 2 {
		t.Fatalf("%d PUTs: the upload was not retried", puts.Load())
	}
	if ids, err := newNode(t, srv, url, nil).st.List(context.Background()); err != nil || !slices.Equal(ids, []string{"x"}) {
		t.Errorf("List after the retried Put = %q, %v", ids, err)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

// isProbe tells New's conditional PUT probe from a layer's requests.
func isProbe(r *http.Request) bool { return strings.Contains(r.URL.Path, "/.probe-") }

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestCacheBound: the cache stays within its bound by evicting the least
// recently used layers, but never a pinned one; an evicted layer is
// fetched again.
func TestCacheBound(t *testing.T) {
	srv := s3server.Start(t)
	srv.SetEnv(t)
	url := "s3://" + srv.Bucket(t)
	const layerSize = 100 << 10
	limit := int64(3*layerSize + 3*4096) // three layers with their tar overhead
	n := newNode(t, srv, url, func(c *Config) { c.CacheBytes = limit })
	ctx := context.Background()
	ids := []string{"l0", "l1", "l2", "l3", "l4", "l5"}
	n.st.Pin("l0")
	for _, id := range ids {
		if err := n.st.Put(ctx, id, layer(t, n.staging, layerSize)); err != nil {
			t.Fatal(err)
		}
		if _, err := n.st.Get(ctx, "l0"); err != nil {
			t.Fatal(err)
		}
		if got := n.st.CachedBytes(); got > limit {
			t.Fatalf("after putting %s the cache holds %d bytes, over its bound %d", id, got, limit)
		}
	}
	cached := func() []string {
		ents, _ := os.ReadDir(n.st.cacheDir)
		var out []string
		for _, e := range ents {
			if e.Name() != ".trash" && e.Name() != bootFile {
				out = append(out, e.Name())
			}
		}
		return out
	}
	if got := cached(); !slices.Equal(got, []string{"l0", "l4", "l5"}) {
		t.Errorf("cached layers = %q, want the pinned l0 and the two newest", got)
	}
	if n.st.Fetches() != 0 {
		t.Errorf("%d fetches; Put keeps its directory as the cached copy", n.st.Fetches())
	}
	if ents, _ := os.ReadDir(n.st.trash); len(ents) != 0 {
		t.Errorf("evicted layers left on disk: %d in the trash", len(ents))
	}
	p, err := n.st.Get(ctx, "l1")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(p, "f0")); err != nil || fi.Size() != layerSize || n.st.Fetches() != 1 {
		t.Errorf("evicted l1 read back: %v %v after %d fetches", fi, err, n.st.Fetches())
	}
	if got := cached(); !slices.Contains(got, "l0") || len(got) != 3 {
		t.Errorf("cached layers after fetching l1 = %q", got)
	}
	n.st.Unpin("l0")
}

// TestConcurrentGetsFetchOnce: Gets of one missing layer at once download
// it once.
func TestConcurrentGetsFetchOnce(t *testing.T) {
	srv := s3server.Start(t)
	srv.SetEnv(t)
	url := "s3://" + srv.Bucket(t)
	a := newNode(t, srv, url, nil)
	if err := a.st.Put(context.Background(), "c", layer(t, a.staging, 1<<20, 1<<20)); err != nil {
		t.Fatal(err)
	}
	b := newNode(t, srv, url, nil)
	var wg sync.WaitGroup
	paths := make([]string, 16)
	for i := range paths {
		wg.Go(func() {
			p, err := b.st.Get(context.Background(), "c")
			if err != nil {
				t.Error(err)
			}
			paths[i] = p
		})
	}
	wg.Wait()
	if b.st.Fetches() != 1 {
		t.Errorf("16 concurrent Gets fetched %d times, want once", b.st.Fetches())
	}
	for _, p := range paths {
		if p != paths[0] {
			t.Errorf("Gets returned %q and %q", paths[0], p)
		}
	}
}

func TestParseURL(t *testing.T) {
	for raw, want := range map[string][2]string{
		"s3://b":           {"b", ""},
		"s3://b/":          {"b", ""},
		"s3://b/x/y/":      {"b", "x/y/"},
		"s3://b/x":         {"b", "x/"},
		"https://b/x":      {},
		"s3:///x":          {},
		"s3://b/x?region=": {},
	} {
		bucket, prefix, err := ParseURL(raw)
		if want == ([2]string{}) {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("ParseURL(%q) = %v, want invalid argument", raw, err)
			}
			continue
		}
		if err != nil || bucket != want[0] || prefix != want[1] {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q", raw, bucket, prefix, err, want)
		}
	}
}

// TestMultipartUpload: a layer above the part size goes up in parts and
// reads back whole on another node.
func TestMultipartUpload(t *testing.T) {
	srv := s3server.Start(t)
	srv.SetEnv(t)
	url := "s3://" + srv.Bucket(t)
	var mu sync.Mutex
	var parts []string
	record := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodPut && !isProbe(r) {
			mu.Lock()
			parts = append(parts, r.URL.Query().Get("partNumber"))
			mu.Unlock()
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	a := newNode(t, srv, url, func(c *Config) { c.HTTPClient = record })
	a.st.partSize = 5 << 20 // S3's smallest
	dir, err := os.MkdirTemp(a.staging, "big-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "random"), randomBytes(12<<20, 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.st.Put(context.Background(), "big", dir); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(parts, []string{"1", "2", "3"}) {
		t.Errorf("PUTs by part number: %q, want parts 1-3", parts)
	}
	b := newNode(t, srv, url, nil)
	p, err := b.st.Get(context.Background(), "big")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(p, "random")); err != nil || !bytes.Equal(got, randomBytes(12<<20, 1)) {
		t.Errorf("the multipart layer reads back %d bytes (%v), not what was put", len(got), err)
	}
	// Write-once holds for multipart too.
	if err := a.st.Put(context.Background(), "big", layer(t, a.staging, 1)); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("second Put of big = %v, want a conflict", err)
	}
}

// TestNewErrors: a bucket that does not exist or an endpoint that does not
// answer fails New with a message that names the fix.
func TestNewErrors(t *testing.T) {
	srv := s3server.Start(t)
	srv.SetEnv(t)
	home := t.TempDir()
	cfg := Config{URL: "s3://no-such-bucket/x", Endpoint: srv.Endpoint, CacheDir: filepath.Join(home, "c"), Staging: filepath.Join(home, "tmp")}
	if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "check the bucket exists") {
		t.Errorf("New on a missing bucket = %v, want an error naming the fix", err)
	}
	srv.Stop()
	cfg.URL = "s3://any"
	if _, err := New(context.Background(), cfg); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "--blobs-endpoint") {
		t.Errorf("New with S3 down = %v, want unavailable naming --blobs-endpoint", err)
	}
	cfg.URL = "https://bucket"
	if _, err := New(context.Background(), cfg); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "fix --blobs") {
		t.Errorf("New with a non-s3 URL = %v, want invalid argument", err)
	}
}

// TestConditionalPutProbe: on a server that refuses a PUT over an existing
// key, Put sends no HEAD before its upload and still fails a second Put of
// an id with a conflict; on one that would overwrite (the header dropped
// on its way), the HEAD is kept and answers the same.
func TestConditionalPutProbe(t *testing.T) {
	srv := s3server.Start(t)
	srv.SetEnv(t)
	for _, tc := range []struct {
		name      string
		overwrite bool // answer the probe's second PUT with 200, as a server that ignores If-None-Match would
		wantCond  bool
		wantHeads int64
	}{
		{"refuses", false, true, 0},
		{"overwrites", true, false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var heads, probes atomic.Int64
			hc := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
				if tc.overwrite && r.Method == http.MethodPut && isProbe(r) && probes.Add(1) == 2 {
					return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Etag": {`"0"`}},
						Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
				}
				if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/l1") {
					heads.Add(1)
				}
				return http.DefaultTransport.RoundTrip(r)
			})}
			n := newNode(t, srv, "s3://"+srv.Bucket(t), func(c *Config) { c.HTTPClient = hc })
			if n.st.condPut != tc.wantCond {
				t.Fatalf("probe: conditional PUT %v, want %v", n.st.condPut, tc.wantCond)
			}
			ctx := context.Background()
			if err := n.st.Put(ctx, "l1", layer(t, n.staging, 100)); err != nil {
				t.Fatal(err)
			}
			if err := n.st.Put(ctx, "l1", layer(t, n.staging, 200)); !errdefs.IsConflict(err) {
				t.Fatalf("second Put of l1 = %v, want a conflict", err)
			}
			if got := heads.Load(); got != tc.wantHeads {
				t.Errorf("%d HEAD requests for two Puts, want %d", got, tc.wantHeads)
			}
			if objs, err := n.st.List(ctx); err != nil || !slices.Equal(objs, []string{"l1"}) {
				t.Errorf("List = %q, %v; want only l1 (no probe left)", objs, err)
			}
		})
	}
}

// TestCacheAcrossBoots: the cache is not synced as layers enter it, so a
// cache written in another boot is kept only if its store was closed
// (synced) in that boot; in the same boot (arbor crashed, the machine did
// not) it is kept as it is.
func TestCacheAcrossBoots(t *testing.T) {
	srv := s3server.Start(t)
	srv.SetEnv(t)
	url := "s3://" + srv.Bucket(t)
	real := bootID
	t.Cleanup(func() { bootID = real })
	for _, tc := range []struct {
		name      string
		closed    bool // the store was closed before the "reboot"
		newBoot   bool
		wantFetch int64
	}{
		{"arbor crashed", false, false, 0},
		{"clean stop, reboot", true, true, 0},
		{"machine crashed", false, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bootID = func() (string, error) { return "boot-1", nil }
			home := t.TempDir()
			mod := func(c *Config) {
				c.CacheDir, c.Staging = filepath.Join(home, "layer-cache"), filepath.Join(home, "tmp")
			}
			a := newNode(t, srv, url, mod)
			id := strings.ReplaceAll(tc.name, " ", "-")
			if err := a.st.Put(context.Background(), id, layer(t, a.staging, 1000)); err != nil {
				t.Fatal(err)
			}
			if tc.closed {
				if err := a.st.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if tc.newBoot {
				bootID = func() (string, error) { return "boot-2", nil }
			}
			b := newNode(t, srv, url, mod)
			p, err := b.st.Get(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(filepath.Join(p, "f0")); err != nil || fi.Size() != 1000 {
				t.Fatalf("layer's f0 after reopening: %v, %v", fi, err)
			}
			if got := b.st.Fetches(); got != tc.wantFetch {
				t.Errorf("%d fetches after reopening, want %d", got, tc.wantFetch)
			}
			// A layer entering the cache of a closed store makes it
			// untrusted again in the next boot.
			if tc.closed {
				if err := a.st.Put(context.Background(), id+"-late", layer(t, a.staging, 10)); err != nil {
					t.Fatal(err)
				}
				bootID = func() (string, error) { return "boot-3", nil }
				if c := newNode(t, srv, url, mod); len(c.st.cached) != 0 {
					t.Errorf("cache kept after a write past the clean stop: %d layers", len(c.st.cached))
				}
			}
		})
	}
}
