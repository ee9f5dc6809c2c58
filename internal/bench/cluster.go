package bench

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// ClusterOptions are the shared state of the cluster section's nodes: a
// PostgreSQL database and a bucket the benchmark may fill (it uses a
// prefix of its own in the bucket).
type ClusterOptions struct {
	DB            string // postgres://...
	Blobs         string // s3://bucket/prefix
	BlobsEndpoint string // optional S3 endpoint URL
	// Workers lists the worker counts measured (default 1, 2, 4).
	Workers []int
}

// ClusterNode is a private daemon's part in the cluster section.
type ClusterNode struct {
	Role, DB, Blobs, BlobsEndpoint, WorkerID string
}

// ClusterSection is section 8: throughput and step latency of API nodes
// and workers sharing PostgreSQL and S3, against the single-node daemon.
type ClusterSection struct {
	Runtime string `json:"runtime"`
	// Throughput: `sleep 1` disposable runs, one slot per worker, all
	// submitted at once through one API node.
	Throughput []ClusterThroughput `json:"throughput"`
	// Steps: each non-disposable step on the image the previous one made,
	// on one worker that holds the chain in its cache, and on the
	// single-node cold daemon; the ratio is cluster ÷ single node (p50).
	SingleNodeStep Dist    `json:"single_node_step"`
	ClusterStep    Dist    `json:"cluster_step"`
	StepRatio      float64 `json:"step_ratio"`
	// ClaimWait is the chained steps' time from the API node's insert to
	// the worker's claim (the database's started_at − created_at): the
	// NOTIFY wake-up and the claim.
	ClaimWait Dist `json:"claim_wait"`
	// SinglePhases and ClusterPhases split the chained steps (p50).
	SinglePhases  Phases `json:"single_node_phases"`
	ClusterPhases Phases `json:"cluster_phases"`
	// Upload: the layer objects the chained steps stored in the bucket.
	Upload *ClusterUpload `json:"upload,omitempty"`
	// Cold: a step on the tip of a ColdDepth-step chain by a worker with
	// an empty cache.
	Cold *ClusterCold `json:"cold,omitempty"`
}

// ClusterUpload is what the chained steps uploaded.
type ClusterUpload struct {
	Objects int `json:"objects"`
	// BytesP50 is the median object (compressed tar) per step.
	BytesP50 int64 `json:"bytes_p50"`
	// ChangeBytes is the size of the file a median step rewrote
	// (/root/log, copied up whole by overlayfs); LayerBytes is its layer
	// on disk as the API reports it (p50).
	ChangeBytes int64 `json:"change_bytes"`
	LayerBytes  int64 `json:"layer_bytes_p50"`
}

// ClusterCold is a step on a deep chain's tip by a fresh worker.
type ClusterCold struct {
	Depth int `json:"depth"`
	// BuildSeconds is how long the chain took to build on one worker.
	BuildSeconds float64 `json:"build_seconds"`
	// Trials fresh workers each ran StepMs, their first step (it fetches
	// the chain), then WarmMs, their next step on its result (cached);
	// SetupMs and WarmSetupMs are those steps' setup phases (submit → init
	// event: claim, plan, fetch, mount). FetchShare is (SetupMs −
	// WarmSetupMs) ÷ StepMs. All p50.
	Trials      int     `json:"trials"`
	StepMs      float64 `json:"step_ms"`
	SetupMs     float64 `json:"setup_ms"`
	WarmMs      float64 `json:"warm_ms"`
	WarmSetupMs float64 `json:"warm_setup_ms"`
	FetchShare  float64 `json:"fetch_share"`
}

// ClusterThroughput is the throughput with Workers workers.
type ClusterThroughput struct {
	Workers int     `json:"workers"`
	Runs    int     `json:"runs"`
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"runs_per_second"`
	// Linear is PerSec ÷ (Workers × the one-worker rate).
	Linear float64 `json:"linear"`
}

// cluster measures section 8 on nodes started in this process: one API
// node and up to the largest worker count of workers, each with one slot
// and its own home, sharing Options.Cluster's database and bucket.
func (b *bench) cluster(ctx context.Context) error {
	co := b.o.Cluster
	if co.DB == "" || co.Blobs == "" {
		b.note("cluster section not measured: give a PostgreSQL database and a bucket (arbor bench --cluster-db postgres://... --cluster-blobs s3://...)")
		return nil
	}
	if len(co.Workers) == 0 {
		co.Workers = []int{1, 2, 4}
	}
	blobs := fmt.Sprintf("%s/bench-%d", co.Blobs, time.Now().UnixNano())
	b.tweak = func(name string, dc *DaemonConfig) {
		role := "worker"
		if name == "cluster-api" {
			role = "api"
		}
		dc.Cluster = ClusterNode{Role: role, DB: co.DB, Blobs: blobs, BlobsEndpoint: co.BlobsEndpoint, WorkerID: name}
		dc.Slots, dc.WarmPerImage = 1, -1
	}
	defer func() { b.tweak = nil }()
	rt := b.chainRT
	sec := &ClusterSection{Runtime: rt}
	b.progress("cluster: starting the API node")
	api, err := b.startDaemon(ctx, "cluster-api", false)
	if err != nil {
		return err
	}
	nodes := []*daemonConn{api}
	defer func() {
		for i := len(nodes) - 1; i >= 0; i-- {
			_ = nodes[i].stop()
		}
	}()
	tar, err := busyboxTar()
	if err != nil {
		return err
	}
	if api.base, err = api.importTar(ctx, tar); err != nil {
		return err
	}
	workers := 0
	var one float64
	for _, n := range co.Workers {
		for workers < n {
			workers++
			b.progress("cluster: starting worker %d", workers)
			w, err := b.startDaemon(ctx, fmt.Sprintf("cluster-w%d", workers), false)
			if err != nil {
				return err
			}
			nodes = append(nodes, w)
		}
		if n == co.Workers[0] {
			// A warm-up round: every worker fetches the base layers once.
			if err := b.clusterBurst(ctx, api, rt, n, nil); err != nil {
				return err
			}
		}
		runs := 4 * n
		if !b.o.Quick {
			runs = 8 * n
		}
		b.progress("cluster: %d `sleep 1` runs on %d workers", runs, n)
		var t ClusterThroughput
		if err := b.clusterBurst(ctx, api, rt, runs, &t); err != nil {
			return err
		}
		t.Workers = n
		if n == 1 {
			one = t.PerSec
		}
		if one > 0 {
			t.Linear = round3(t.PerSec / (float64(n) * one))
		}
		sec.Throughput = append(sec.Throughput, t)
	}

	// Step latency: a chain on one worker (the others stopped, so every
	// step stays on the worker that made its input) against the
	// single-node daemon.
	for len(nodes) > 2 {
		if err := nodes[len(nodes)-1].stop(); err != nil {
			return err
		}
		nodes = nodes[:len(nodes)-1]
	}
	steps := b.o.Iterations
	b.progress("cluster: %d chained steps on one worker and on the single node, interleaved", steps)
	bucket, err := newBucketLister(ctx, blobs, co.BlobsEndpoint)
	if err != nil {
		return err
	}
	var single, clustered []time.Duration
	var singleS, clusterS []sample
	var clusterOps []string
	var layerBytes []int64
	var before map[string]int64
	imgs := map[*daemonConn]string{b.cold: b.cold.base, api: api.base}
	for i := -1; i < steps; i++ { // i = -1 is the discarded warm-up
		if i == 0 {
			if before, err = bucket.objects(ctx); err != nil {
				return err
			}
		}
		for _, d := range []*daemonConn{b.cold, api} {
			s, err := b.runAPI(ctx, d, spawn{runtime: rt, image: imgs[d], shell: fmt.Sprintf("echo %d >> /root/log", i)})
			if err != nil {
				return err
			}
			imgs[d] = s.image
			if i < 0 {
				continue
			}
			if d == b.cold {
				single, singleS = append(single, s.wall), append(singleS, s)
				continue
			}
			clustered, clusterS = append(clustered, s.wall), append(clusterS, s)
			clusterOps = append(clusterOps, s.op)
			im, err := api.c.Image(ctx, s.image)
			if err != nil {
				return err
			}
			layerBytes = append(layerBytes, im.LayerBytes)
		}
	}
	sec.SingleNodeStep, sec.ClusterStep = dist(single), dist(clustered)
	if sec.SingleNodeStep.P50Ms > 0 {
		sec.StepRatio = round3(sec.ClusterStep.P50Ms / sec.SingleNodeStep.P50Ms)
	}
	for _, x := range []struct {
		d  *daemonConn
		ss []sample
		to *Phases
	}{{b.cold, singleS, &sec.SinglePhases}, {api, clusterS, &sec.ClusterPhases}} {
		var ps []phaseSample
		for _, s := range x.ss {
			p, err := b.phases(ctx, x.d, s)
			if err != nil {
				return err
			}
			ps = append(ps, p)
		}
		*x.to = summarize(ps)
	}
	after, err := bucket.objects(ctx)
	if err != nil {
		return err
	}
	sec.Upload = uploaded(before, after, steps, layerBytes)
	if sec.ClaimWait, err = claimWaits(ctx, co.DB, clusterOps); err != nil {
		return err
	}
	b.rep.Cluster = sec
	if err := b.clusterCold(ctx, api, &nodes, rt, imgs[api], steps+1); err != nil {
		return err
	}
	return nil
}

// clusterBurst submits runs `sleep 1` runs at once through the API node
// and waits for them all; t, if set, gets the throughput.
func (b *bench) clusterBurst(ctx context.Context, api *daemonConn, rt string, runs int, t *ClusterThroughput) error {
	var wg sync.WaitGroup
	errs := make(chan error, runs)
	start := time.Now()
	for range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.runAPI(ctx, api, spawn{runtime: rt, image: api.base, argv: []string{"sleep", "1"}, disposable: true}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if t != nil {
		el := time.Since(start)
		t.Runs, t.Seconds, t.PerSec = runs, round3(el.Seconds()), round3(float64(runs)/el.Seconds())
	}
	return nil
}

func writeCluster(p func(string, ...any), table func([][]string), r Report) {
	c := r.Cluster
	if c == nil {
		return
	}
	p("\n8. Cluster (one API node, workers with one slot each, PostgreSQL + S3; %s)", c.Runtime)
	rows := [][]string{{"workers", "`sleep 1` runs", "seconds", "runs/s", "÷ linear"}}
	for _, t := range c.Throughput {
		rows = append(rows, []string{fmt.Sprint(t.Workers), fmt.Sprint(t.Runs), fmt.Sprintf("%.2f", t.Seconds), fmt.Sprintf("%.2f", t.PerSec), fmt.Sprintf("%.2f×", t.Linear)})
	}
	table(rows)
	rows = [][]string{{"chained step", "p50", "p95"},
		{"single node (cold daemon)", fmtMs(c.SingleNodeStep.P50Ms), fmtMs(c.SingleNodeStep.P95Ms)},
		{"cluster, warm worker", fmtMs(c.ClusterStep.P50Ms), fmtMs(c.ClusterStep.P95Ms)},
		{"ratio (p50)", fmt.Sprintf("%.2f×", c.StepRatio), ""},
		{"  of which insert → claim", fmtMs(c.ClaimWait.P50Ms), fmtMs(c.ClaimWait.P95Ms)}}
	table(rows)
	p("   single node, p50 phases: %s", fmtPhases(c.SinglePhases))
	p("   cluster, p50 phases: %s", fmtPhases(c.ClusterPhases))
	if u := c.Upload; u != nil {
		p("   uploaded per step: %d objects for the chained steps, %d B each (p50); the change: a %d B file (layer %d B on disk)",
			u.Objects, u.BytesP50, u.ChangeBytes, u.LayerBytes)
	}
	if k := c.Cold; k != nil {
		p("   cold worker: a step on the tip of a %d-step chain (built in %.1f s) by a fresh worker with an empty cache, p50 of %d: %s (setup %s); its next step %s (setup %s); fetch share %.0f%%",
			k.Depth, k.BuildSeconds, k.Trials, fmtMs(k.StepMs), fmtMs(k.SetupMs), fmtMs(k.WarmMs), fmtMs(k.WarmSetupMs), 100*k.FetchShare)
	}
}
