package bench_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/bench"
	"github.com/arborsh/arbor/internal/cli"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
	"github.com/arborsh/arbor/internal/testutil/s3server"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestCluster runs the cluster section on a throwaway PostgreSQL database
// and a versitygw bucket with one and two workers: every figure is there
// and positive (the chained steps' uploads, claim waits and phases, a
// fresh worker's step on a chain's tip), and the table shows it. It
// asserts nothing about speed.
func TestCluster(t *testing.T) {
	testutil.RequiresRoot(t)
	dsn := pgtest.DSN(t)
	srv := s3server.Start(t)
	srv.SetEnv(t)
	bucket := srv.Bucket(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	opts := bench.Options{Serve: cli.BenchServe, Quick: true, Iterations: 2, Home: testutil.Home(t), Sections: []string{bench.SectionCluster},
		Cluster: bench.ClusterOptions{DB: dsn, Blobs: "s3://" + bucket + "/bench", BlobsEndpoint: srv.Endpoint, Workers: []int{1, 2}}}
	if testing.Verbose() {
		opts.Progress = os.Stderr
	}
	r, err := bench.Run(ctx, opts, &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("\n%s", out.String())
	c := r.Cluster
	if c == nil || len(c.Throughput) != 2 {
		t.Fatalf("cluster section: %+v", c)
	}
	for i, th := range c.Throughput {
		if th.Workers != i+1 || th.Runs < 4*th.Workers || th.PerSec <= 0 || th.Linear <= 0 {
			t.Errorf("throughput row %d: %+v", i, th)
		}
	}
	if c.SingleNodeStep.P50Ms <= 0 || c.ClusterStep.P50Ms <= 0 || c.StepRatio <= 0 {
		t.Errorf("step latency: %+v", c)
	}
	if u := c.Upload; u == nil || u.Objects != 2 || u.BytesP50 <= 0 || u.ChangeBytes <= 0 || c.ClaimWait.N != 2 || c.ClaimWait.P50Ms <= 0 {
		t.Errorf("uploads and claim waits of the chained steps: %+v %+v", u, c.ClaimWait)
	}
	if k := c.Cold; k == nil || k.Depth != 10 || k.Trials != 1 || k.StepMs <= 0 || k.SetupMs <= 0 || k.WarmMs <= 0 {
		t.Errorf("cold worker: %+v", k)
	}
	if c.ClusterPhases.SetupMs <= 0 || c.SinglePhases.SetupMs <= 0 {
		t.Errorf("phases: %+v %+v", c.ClusterPhases, c.SinglePhases)
	}
	if !strings.Contains(out.String(), "8. Cluster") {
		t.Error("the table lacks the cluster section")
	}
}
