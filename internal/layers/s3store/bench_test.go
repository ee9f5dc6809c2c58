package s3store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/layers"
	"github.com/arborsh/arbor/internal/testutil/s3server"
)

// change is what one step writes: the layer a run commits.
type change struct {
	name  string
	write func(dir string) error
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// text is source-like content: words from a small vocabulary.
func text(n int, seed uint64) []byte {
	words := strings.Fields("func return if err != nil { } package import for range := the a of to in and value string int error context")
	r := rand.New(rand.NewPCG(seed, seed))
	var sb strings.Builder
	for sb.Len() < n {
		sb.WriteString(words[r.IntN(len(words))])
		if r.IntN(8) == 0 {
			sb.WriteByte('\n')
		} else {
			sb.WriteByte(' ')
		}
	}
	return []byte(sb.String()[:n])
}

func writeFiles(dir string, n, size int, content func(int, uint64) []byte) error {
	if err := os.MkdirAll(filepath.Join(dir, "work"), 0o755); err != nil {
		return err
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, "work", fmt.Sprintf("f%04d", i)), content(size, uint64(i)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

var changes = []change{
	{"echo-one-line", func(d string) error {
		return os.WriteFile(filepath.Join(d, "log"), []byte("step done\n"), 0o644)
	}},
	{"text-100KiB", func(d string) error { return writeFiles(d, 1, 100<<10, text) }},
	{"source-tree-200x4KiB", func(d string) error { return writeFiles(d, 200, 4<<10, text) }},
	{"random-1MiB", func(d string) error { return writeFiles(d, 1, 1<<20, randomBytes) }},
	{"text-10MiB", func(d string) error { return writeFiles(d, 1, 10<<20, text) }},
	{"random-10MiB", func(d string) error { return writeFiles(d, 1, 10<<20, randomBytes) }},
}

// countingClient counts the request body bytes sent with PUTs.
func countingClient(n *atomic.Int64) *http.Client {
	return &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodPut && r.ContentLength > 0 && !isProbe(r) {
			n.Add(r.ContentLength)
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
}

// BenchmarkPutStep: bytes uploaded per step against the size of what the
// step changed (the layer's file contents), and the time Put takes.
//
//	go test -run '^$' -bench BenchmarkPutStep -benchtime 20x ./internal/layers/s3store/
func BenchmarkPutStep(b *testing.B) {
	srv := s3server.Start(b)
	srv.SetEnv(b)
	url := "s3://" + srv.Bucket(b)
	var sent atomic.Int64
	home := b.TempDir()
	st, err := New(context.Background(), Config{URL: url, Endpoint: srv.Endpoint, CacheDir: filepath.Join(home, "cache"),
		Staging: filepath.Join(home, "tmp"), HTTPClient: countingClient(&sent)})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range changes {
		b.Run(c.name, func(b *testing.B) {
			var changed int64
			sent.Store(0)
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				dir, err := os.MkdirTemp(st.staging, "step-*")
				if err == nil {
					err = c.write(dir)
				}
				if err != nil {
					b.Fatal(err)
				}
				changed, _ = contentBytes(dir)
				b.StartTimer()
				if err := st.Put(context.Background(), fmt.Sprintf("%s-%d-%d", c.name, b.N, i), dir); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(changed), "changed-B")
			b.ReportMetric(float64(sent.Load())/float64(b.N), "uploaded-B/step")
		})
	}
}

// contentBytes adds up the sizes of the regular files under dir.
func contentBytes(dir string) (int64, error) {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	})
	return n, err
}

// TestColdChainFetch measures a cold worker: a chain of 100 step layers
// put by one node, then viewed by a node with an empty cache, as a run on
// the chain's top image does (Snapshotter.View of the whole chain).
//
//	ARBOR_MEASURE=1 go test -count=1 -v -run TestColdChainFetch ./internal/layers/s3store/
func TestColdChainFetch(t *testing.T) {
	if os.Getenv("ARBOR_MEASURE") == "" {
		t.Skip("a measurement: set ARBOR_MEASURE=1")
	}
	srv := s3server.Start(t)
	srv.SetEnv(t)
	url := "s3://" + srv.Bucket(t)
	a := newNode(t, srv, url, nil)
	ctx := context.Background()
	const depth = 100
	chain := make([]string, depth)
	var stored int64
	for i := range depth {
		dir, err := os.MkdirTemp(a.staging, "step-*")
		if err != nil {
			t.Fatal(err)
		}
		// A typical agent step: a log line, a few edited source files,
		// and a base layer of a source tree at the bottom.
		files, size := 5, 4<<10
		if i == 0 {
			files, size = 2000, 4<<10
		}
		if err := writeFiles(dir, files, size, func(n int, seed uint64) []byte { return text(n, seed+uint64(i)*7919) }); err != nil {
			t.Fatal(err)
		}
		n, _ := contentBytes(dir)
		stored += n
		chain[depth-1-i] = fmt.Sprintf("step-%03d", i)
		if err := a.st.Put(ctx, chain[depth-1-i], dir); err != nil {
			t.Fatal(err)
		}
	}
	_, objBytes, err := a.st.StoredBytes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("chain: %d layers, %d content bytes, %d bytes in the bucket", depth, stored, objBytes)
	// Alternately, so both see the same load: one Get after the other,
	// and Snapshotter.View (its Gets side by side).
	for run := range 5 {
		b := newNode(t, srv, url, nil)
		start := time.Now()
		for _, id := range chain {
			if _, err := b.st.Get(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		seq := time.Since(start)
		b = newNode(t, srv, url, nil)
		s := layers.New(b.st, b.staging, nil)
		start = time.Now()
		_, release, err := s.View(ctx, chain)
		if err != nil {
			t.Fatal(err)
		}
		cold := time.Since(start)
		release()
		start = time.Now()
		_, release, err = s.View(ctx, chain)
		if err != nil {
			t.Fatal(err)
		}
		warm := time.Since(start)
		release()
		t.Logf("run %d: cold %d-layer chain: one Get at a time %v, View %v (%d fetches); warm View %v", run, depth,
			seq.Round(time.Millisecond), cold.Round(time.Millisecond), b.st.Fetches(), warm.Round(time.Microsecond))
	}
}
