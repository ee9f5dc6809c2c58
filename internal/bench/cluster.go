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
	b.progress("cluster: %d chained steps on one worker and on the single node", steps)
	var single, clustered []time.Duration
	for _, x := range []struct {
		d   *daemonConn
		out *[]time.Duration
	}{{b.cold, &single}, {api, &clustered}} {
		img := x.d.base
		for i := -1; i < steps; i++ { // i = -1 is the discarded warm-up
			s, err := b.runAPI(ctx, x.d, spawn{runtime: rt, image: img, shell: fmt.Sprintf("echo %d >> /root/log", i)})
			if err != nil {
				return err
			}
			op, err := x.d.c.Operation(ctx, s.op)
			if err != nil {
				return err
			}
			if op.ResultImageUUID == nil {
				return fmt.Errorf("cluster step %d made no image", i)
			}
			img = *op.ResultImageUUID
			if i >= 0 {
				*x.out = append(*x.out, s.wall)
			}
		}
	}
	sec.SingleNodeStep, sec.ClusterStep = dist(single), dist(clustered)
	if sec.SingleNodeStep.P50Ms > 0 {
		sec.StepRatio = round3(sec.ClusterStep.P50Ms / sec.SingleNodeStep.P50Ms)
	}
	b.rep.Cluster = sec
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
		{"ratio (p50)", fmt.Sprintf("%.2f×", c.StepRatio), ""}}
	table(rows)
}
