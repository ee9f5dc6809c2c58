package metrics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/engine"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeSource counts how often the layer store is walked.
type fakeSource struct {
	walks int
	err   error
}

func (f *fakeSource) WarmStatus() engine.WarmStatus {
	s := engine.WarmStatus{Enabled: true, Max: 8}
	s.Idle, s.Booting, s.Hits, s.Misses, s.Boots, s.BootFailures = 2, 1, 5, 3, 4, 1
	return s
}

func (f *fakeSource) LayerStats() (int, int64, error) {
	f.walks++
	return 3, 4096, f.err
}

// TestEngineCollector: the warm pool is read at each scrape, the layer
// store walked at most once per layerStatsEvery however often Prometheus
// scrapes.
func TestEngineCollector(t *testing.T) {
	m := New()
	src := &fakeSource{}
	m.Watch(src)
	want := `
# HELP arbor_warm_pool_boots_total Warm sandbox boots, by result (ok, error).
# TYPE arbor_warm_pool_boots_total counter
arbor_warm_pool_boots_total{result="error"} 1
arbor_warm_pool_boots_total{result="ok"} 4
# HELP arbor_warm_pool_sandboxes Warm sandboxes by state (idle, booting).
# TYPE arbor_warm_pool_sandboxes gauge
arbor_warm_pool_sandboxes{state="booting"} 1
arbor_warm_pool_sandboxes{state="idle"} 2
# HELP arbor_layer_store_bytes Bytes of the layer directories in the layer store (recounted at most once a minute).
# TYPE arbor_layer_store_bytes gauge
arbor_layer_store_bytes 4096
`
	for range 3 {
		if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
			"arbor_warm_pool_boots_total", "arbor_warm_pool_sandboxes", "arbor_layer_store_bytes"); err != nil {
			t.Fatal(err)
		}
	}
	if src.walks != 1 {
		t.Errorf("layer store walked %d times in 3 scrapes, want 1", src.walks)
	}
	// A failed recount says so.
	c := m.engine
	c.mu.Lock()
	c.sizedAt = time.Now().Add(-layerStatsEvery)
	c.mu.Unlock()
	src.err = errors.New("boom")
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(`
# HELP arbor_layer_store_size_errors 1 when the last recount of the layer store failed (the daemon log has why).
# TYPE arbor_layer_store_size_errors gauge
arbor_layer_store_size_errors 1
`), "arbor_layer_store_size_errors"); err != nil {
		t.Fatal(err)
	}
}

// TestInstrumentUsesFixedRoute: a surface mounted with Instrument counts
// under its route whatever path was asked for.
func TestInstrumentUsesFixedRoute(t *testing.T) {
	m := New()
	h := m.Instrument("/v2/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }))
	for _, p := range []string{"/v2/a/manifests/1", "/v2/b/blobs/sha256:x"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, p, nil))
	}
	if n := testutil.ToFloat64(m.httpRequests.WithLabelValues("/v2/", "404")); n != 2 {
		t.Errorf("/v2/ 404s = %v, want 2", n)
	}
	if n := testutil.CollectAndCount(m.httpRequests); n != 1 {
		t.Errorf("%d series, want 1", n)
	}
}
