package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// families lists every metric family arbor exports (README: Operating
// arbor → Metrics).
var families = []string{
	"arbor_operations_total", "arbor_operation_duration_seconds", "arbor_operation_queue_wait_seconds",
	"arbor_warm_pool_enabled", "arbor_warm_pool_sandboxes", "arbor_warm_pool_max_sandboxes",
	"arbor_warm_pool_hits_total", "arbor_warm_pool_misses_total", "arbor_warm_pool_boots_total",
	"arbor_commits_total", "arbor_committed_bytes_total",
	"arbor_gc_runs_total", "arbor_gc_layers_removed_total",
	"arbor_layer_store_bytes", "arbor_layer_store_layers", "arbor_layer_store_size_errors",
	"arbor_http_requests_total", "arbor_http_request_duration_seconds",
	"go_goroutines", "process_resident_memory_bytes",
}

// TestMetricsAfterRuns runs the product's daemon (Run) with runc, makes
// runs of every outcome, an import, a delete and a collection, then scrapes
// /metrics with the operator's token and parses it with Prometheus' own
// text-format parser: every family is there and the counters match what
// was done.
func TestMetricsAfterRuns(t *testing.T) {
	d := testdaemon.New(t, testdaemon.Options{Busybox: "busybox",
		Serve: func(ctx context.Context, home string, cfg engine.Config, ready func(string)) error {
			return Run(ctx, Config{Home: home, Listen: "127.0.0.1:0", Engine: cfg, Logger: slog.New(slog.DiscardHandler),
				Ready: ready})
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := d.Client

	run := func(cmd string, disposable bool) *apitypes.OperationResponse {
		t.Helper()
		sh := true
		op, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Image: d.Busybox, Command: cmd, Shell: &sh, Disposable: &disposable})
		if err != nil {
			t.Fatalf("run %q: %v", cmd, err)
		}
		if op.Status != apitypes.StatusSuccess {
			t.Fatalf("run %q: %s", cmd, op.Status)
		}
		return op
	}
	a := run("echo a > /a", false) // commits
	b := run("echo b > /b", false) // commits
	run("true", false)             // changes nothing: keeps its input image
	run("exit 3", true)            // disposable, a failing command: still SUCCESS

	// A run cancelled once its command is running.
	sh := true
	sp, err := c.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: d.Busybox, Command: "echo started; sleep 60", Shell: &sh})
	if err != nil {
		t.Fatal(err)
	}
	errStarted := errors.New("started")
	err = c.FollowEvents(ctx, sp.UUID, -1, func(ev apitypes.OperationEvent) error {
		if ev.Type == apitypes.EventStdout {
			return errStarted
		}
		return nil
	})
	if !errors.Is(err, errStarted) {
		t.Fatalf("follow the run to be cancelled: %v", err)
	}
	if err := c.Cancel(ctx, sp.UUID); err != nil {
		t.Fatal(err)
	}
	if op, err := c.Wait(ctx, sp.UUID); err != nil || op.Status != apitypes.StatusCancelled {
		t.Fatalf("cancelled run: %v %v", op, err)
	}

	// Each delete runs the collector and removes the image's layer.
	for _, im := range []string{*a.ResultImageUUID, *b.ResultImageUUID} {
		if err := c.DeleteImage(ctx, im); err != nil {
			t.Fatal(err)
		}
	}
	// Requests whose route labels are checked below.
	if _, err := c.Lineage(ctx, d.Busybox); err != nil {
		t.Fatal(err)
	}
	if code := get(t, d.URL+"/v1/no-such-endpoint/"+d.Busybox, d.Token); code != http.StatusNotFound {
		t.Fatalf("unknown path: %d", code)
	}
	if code := get(t, d.URL+"/v2/", d.Token); code != http.StatusOK {
		t.Fatalf("GET /v2/: %d", code)
	}

	mf := scrape(t, d.URL, d.Token)
	for _, name := range families {
		if mf[name] == nil {
			t.Errorf("metric family %s missing", name)
		}
	}
	ops := map[string]float64{}
	for _, m := range mf["arbor_operations_total"].GetMetric() {
		ops[labels(m)] = m.GetCounter().GetValue()
	}
	want := map[string]float64{
		"kind=image_import,runtime=,status=SUCCESS":   1,
		"kind=instance,runtime=runc,status=SUCCESS":   4,
		"kind=instance,runtime=runc,status=CANCELLED": 1,
	}
	if fmt.Sprint(ops) != fmt.Sprint(want) {
		t.Errorf("arbor_operations_total = %v, want %v", ops, want)
	}
	hist := func(name, lbls string) uint64 {
		for _, m := range mf[name].GetMetric() {
			if labels(m) == lbls {
				return m.GetHistogram().GetSampleCount()
			}
		}
		return 0
	}
	if n := hist("arbor_operation_duration_seconds", "kind=instance,status=SUCCESS"); n != 4 {
		t.Errorf("time to result of successful runs: %d samples, want 4", n)
	}
	if n := hist("arbor_operation_queue_wait_seconds", "kind=instance"); n != 5 {
		t.Errorf("queue wait of runs: %d samples, want 5 (every run executed)", n)
	}
	if n := hist("arbor_operation_queue_wait_seconds", "kind=image_import"); n != 1 {
		t.Errorf("queue wait of imports: %d samples, want 1", n)
	}
	value := func(name, lbls string) float64 {
		for _, m := range mf[name].GetMetric() {
			if labels(m) == lbls {
				switch {
				case m.Counter != nil:
					return m.GetCounter().GetValue()
				case m.Gauge != nil:
					return m.GetGauge().GetValue()
				}
			}
		}
		t.Errorf("%s{%s} missing", name, lbls)
		return -1
	}
	// The import and the two runs that wrote a file.
	if v := value("arbor_commits_total", ""); v != 3 {
		t.Errorf("arbor_commits_total = %v, want 3", v)
	}
	if v := value("arbor_committed_bytes_total", ""); v <= 0 {
		t.Errorf("arbor_committed_bytes_total = %v, want > 0", v)
	}
	if v := value("arbor_gc_runs_total", "result=ok"); v < 2 {
		t.Errorf("arbor_gc_runs_total{result=ok} = %v, want >= 2 (one per delete)", v)
	}
	if v := value("arbor_gc_layers_removed_total", ""); v < 1 {
		t.Errorf("arbor_gc_layers_removed_total = %v, want >= 1 (the deleted image's layer)", v)
	}
	if v := value("arbor_layer_store_bytes", ""); v <= 0 {
		t.Errorf("arbor_layer_store_bytes = %v, want > 0", v)
	}
	if v := value("arbor_layer_store_layers", ""); v != 1 {
		t.Errorf("arbor_layer_store_layers = %v, want 1 (busybox; both runs' images were deleted)", v)
	}
	// The test daemon runs without a warm pool.
	if v := value("arbor_warm_pool_enabled", ""); v != 0 {
		t.Errorf("arbor_warm_pool_enabled = %v, want 0", v)
	}
	if v := value("arbor_warm_pool_misses_total", ""); v != 0 {
		t.Errorf("arbor_warm_pool_misses_total = %v, want 0 with the pool off", v)
	}

	// HTTP requests are counted by route pattern, never by raw path.
	if v := value("arbor_http_requests_total", "code=201,route=POST /v1/instances"); v != 5 {
		t.Errorf("spawns counted: %v, want 5", v)
	}
	value("arbor_http_requests_total", "code=200,route=GET /v1/images/{uuid}/lineage")
	value("arbor_http_requests_total", "code=404,route=unmatched")
	value("arbor_http_requests_total", "code=200,route=/v2/")
	for _, m := range mf["arbor_http_requests_total"].GetMetric() {
		if l := labels(m); strings.Contains(l, d.Busybox) || strings.Contains(l, sp.UUID) {
			t.Errorf("a route label holds an id: %s", l)
		}
	}
}

// TestMetricsForOperatorOnly: /metrics answers the default account's
// tokens only: no token is 401, another account's token 403.
func TestMetricsForOperatorOnly(t *testing.T) {
	d := testdaemon.New(t, testdaemon.Options{Serve: func(ctx context.Context, home string, cfg engine.Config, ready func(string)) error {
		return Run(ctx, Config{Home: home, Listen: "127.0.0.1:0", Engine: cfg, Logger: slog.New(slog.DiscardHandler), Ready: ready})
	}})
	ctx := context.Background()
	alice := "alice"
	tok, err := d.Client.CreateToken(ctx, apitypes.TokenCreateRequest{Account: &alice})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"not-a-token", http.StatusUnauthorized}, {tok.Secret, http.StatusForbidden}, {d.Token, http.StatusOK}} {
		if code := get(t, d.URL+"/metrics", tc.token); code != tc.want {
			t.Errorf("GET /metrics with token %q: %d, want %d", tc.token, code, tc.want)
		}
	}
	// Alice's own API works: the refusal is about /metrics only.
	ac, err := client.New(d.URL, tok.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ac.WhoAmI(ctx); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// scrape reads /metrics as Prometheus does and parses it with the
// library's own text-format parser.
func scrape(t *testing.T, base, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	if f := expfmt.ResponseFormat(resp.Header); f.FormatType() != expfmt.TypeTextPlain {
		t.Fatalf("GET /metrics: format %q, want text", f)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mf
}

// labels renders a metric's labels as sorted k=v pairs.
func labels(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(parts, ",")
}
