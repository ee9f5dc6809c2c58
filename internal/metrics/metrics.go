// Package metrics holds arbor's Prometheus metrics: one registry of its
// own (not the process-wide default, so nothing a library registers leaks
// into the scrape), with every collector registered in [New].
//
// The engine reports through [engine.Observer], which *Metrics implements;
// the API counts requests by route pattern (never the raw path, so the
// number of series stays bounded); the warm pool and the layer store are
// read when scraped.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/arborsh/arbor/internal/engine"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	opsFinished  *prometheus.CounterVec
	opDuration   *prometheus.HistogramVec
	queueWait    *prometheus.HistogramVec
	commits      prometheus.Counter
	commitBytes  prometheus.Counter
	gcRuns       *prometheus.CounterVec
	gcLayers     prometheus.Counter
	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec

	engine *engineCollector

	mu     sync.Mutex
	source Source
}

// Source is what the metrics read from the engine when scraped.
type Source interface {
	WarmStatus() engine.WarmStatus
	LayerStats() (layers int, bytes int64, err error)
}

// runBuckets span a quick command (tens of ms) to the longest timeout (an hour).
var runBuckets = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// New returns arbor's metrics with every collector registered.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		opsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arbor_operations_total",
			Help: "Operations finished, by kind (instance, image_import), terminal status and sandbox runtime (empty for imports).",
		}, []string{"kind", "status", "runtime"}),
		opDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "arbor_operation_duration_seconds",
			Help:    "Time to result: from an operation's acceptance (PENDING) to its terminal status.",
			Buckets: runBuckets,
		}, []string{"kind", "status"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "arbor_operation_queue_wait_seconds",
			Help:    "Time an operation waited from PENDING to EXECUTING (slot, memory budget, mount or warm sandbox).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"kind"}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arbor_commits_total",
			Help: "Images recorded with a layer of their own: a run's result, an imported archive, each layer of a registry import.",
		}),
		commitBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arbor_committed_bytes_total",
			Help: "Bytes of the layers of the images committed (disk blocks plus 4 KiB per inode, as quotas count them).",
		}),
		gcRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arbor_gc_runs_total",
			Help: "Garbage collections of the layer store, by result (ok, error).",
		}, []string{"result"}),
		gcLayers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arbor_gc_layers_removed_total",
			Help: "Layers removed by garbage collection.",
		}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arbor_http_requests_total",
			Help: `HTTP requests by route (the API's pattern such as "GET /v1/images/{uuid}", or the surface: /v2/, /mcp, /; "unmatched" for unknown paths) and status code.`,
		}, []string{"route", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "arbor_http_request_duration_seconds",
			Help:    "HTTP request latency by route (streams count until they end).",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	m.engine = &engineCollector{m: m}
	m.reg.MustRegister(m.opsFinished, m.opDuration, m.queueWait, m.commits, m.commitBytes, m.gcRuns, m.gcLayers,
		m.httpRequests, m.httpDuration, m.engine,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Present from the first scrape, so a dashboard sees 0, not "no data".
	for _, r := range []string{"ok", "error"} {
		m.gcRuns.WithLabelValues(r)
	}
	return m
}

// Registry returns the registry every arbor metric is in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Watch makes scrapes read the warm pool and the layer store from s.
func (m *Metrics) Watch(s Source) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.source = s
}

// Handler serves the metrics in Prometheus' text (or negotiated) format.
// It does not authenticate: the caller mounts it behind its own check.
func (m *Metrics) Handler() http.Handler {
	// DisableCompression: the API compresses what it serves.
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError, DisableCompression: true})
}

// OperationFinished implements engine.Observer.
func (m *Metrics) OperationFinished(kind, status, runtime string, elapsed time.Duration) {
	m.opsFinished.WithLabelValues(kind, status, runtime).Inc()
	m.opDuration.WithLabelValues(kind, status).Observe(elapsed.Seconds())
}

// OperationExecuting implements engine.Observer.
func (m *Metrics) OperationExecuting(kind string, waited time.Duration) {
	m.queueWait.WithLabelValues(kind).Observe(waited.Seconds())
}

// Committed implements engine.Observer.
func (m *Metrics) Committed(bytes int64) {
	m.commits.Inc()
	m.commitBytes.Add(float64(max(bytes, 0)))
}

// GarbageCollected implements engine.Observer.
func (m *Metrics) GarbageCollected(layers int, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.gcRuns.WithLabelValues(result).Inc()
	m.gcLayers.Add(float64(max(layers, 0)))
}

// Request counts one HTTP request answered on route with code.
func (m *Metrics) Request(route string, code int, elapsed time.Duration) {
	if code == 0 {
		code = http.StatusOK // nothing written: net/http answers 200
	}
	m.httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.httpDuration.WithLabelValues(route).Observe(elapsed.Seconds())
}

// Instrument counts the requests h answers under the fixed route label.
func (m *Metrics) Instrument(route string, h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerDuration(m.httpDuration.MustCurryWith(prometheus.Labels{"route": route}),
		promhttp.InstrumentHandlerCounter(m.httpRequests.MustCurryWith(prometheus.Labels{"route": route}), h))
}

var _ engine.Observer = (*Metrics)(nil)

// engineCollector reads the warm pool's state and the layer store's size
// at scrape time.
type engineCollector struct {
	m *Metrics

	mu      sync.Mutex
	sizedAt time.Time // of the last count
	layers  int
	bytes   int64
	sizeErr error
}

var (
	warmEnabledDesc  = prometheus.NewDesc("arbor_warm_pool_enabled", "1 when the warm sandbox pool is on (see GET /v1/status for why it is off).", nil, nil)
	warmSizeDesc     = prometheus.NewDesc("arbor_warm_pool_sandboxes", "Warm sandboxes by state (idle, booting).", []string{"state"}, nil)
	warmMaxDesc      = prometheus.NewDesc("arbor_warm_pool_max_sandboxes", "Most idle and booting warm sandboxes at once.", nil, nil)
	warmHitsDesc     = prometheus.NewDesc("arbor_warm_pool_hits_total", "Runs served by a warm sandbox.", nil, nil)
	warmMissesDesc   = prometheus.NewDesc("arbor_warm_pool_misses_total", "Runs that booted a sandbox of their own.", nil, nil)
	warmBootsDesc    = prometheus.NewDesc("arbor_warm_pool_boots_total", "Warm sandbox boots, by result (ok, error).", []string{"result"}, nil)
	layerBytesDesc   = prometheus.NewDesc("arbor_layer_store_bytes", "Bytes of the layer directories in the layer store (recounted at most once a minute).", nil, nil)
	layerCountDesc   = prometheus.NewDesc("arbor_layer_store_layers", "Layer directories in the layer store (recounted at most once a minute).", nil, nil)
	layerSizeErrDesc = prometheus.NewDesc("arbor_layer_store_size_errors", "1 when the last recount of the layer store failed (the daemon log has why).", nil, nil)
)

// layerStatsEvery bounds how often a scrape walks the layer store: the
// walk reads every directory, so it is not done for each scrape.
const layerStatsEvery = time.Minute

func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{warmEnabledDesc, warmSizeDesc, warmMaxDesc, warmHitsDesc, warmMissesDesc, warmBootsDesc,
		layerBytesDesc, layerCountDesc, layerSizeErrDesc} {
		ch <- d
	}
}

func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	s := c.m.source
	c.m.mu.Unlock()
	var ws engine.WarmStatus
	layers, bytes, sizeErr := 0, int64(0), 0.0
	if s != nil {
		ws = s.WarmStatus()
		var err error
		layers, bytes, err = c.layerStats(s)
		if err != nil {
			sizeErr = 1
		}
	}
	enabled := 0.0
	if ws.Enabled {
		enabled = 1
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(warmEnabledDesc, enabled)
	gauge(warmSizeDesc, float64(ws.Idle), "idle")
	gauge(warmSizeDesc, float64(ws.Booting), "booting")
	gauge(warmMaxDesc, float64(ws.Max))
	counter(warmHitsDesc, float64(ws.Hits))
	counter(warmMissesDesc, float64(ws.Misses))
	counter(warmBootsDesc, float64(ws.Boots), "ok")
	counter(warmBootsDesc, float64(ws.BootFailures), "error")
	gauge(layerBytesDesc, float64(bytes))
	gauge(layerCountDesc, float64(layers))
	gauge(layerSizeErrDesc, sizeErr)
}

// layerStats returns the layer store's size, recounted when the last
// count is older than layerStatsEvery.
func (c *engineCollector) layerStats(s Source) (int, int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sizedAt.IsZero() || time.Since(c.sizedAt) >= layerStatsEvery {
		c.layers, c.bytes, c.sizeErr = s.LayerStats()
		c.sizedAt = time.Now()
	}
	return c.layers, c.bytes, c.sizeErr
}
