package cli

import (
	"context"
	"fmt"

	"github.com/arborsh/arbor/internal/bench"
	"github.com/arborsh/arbor/internal/daemon"
	"github.com/spf13/cobra"
)

func newBench(g *globals) *cobra.Command {
	opts := bench.Options{Serve: BenchServe, HardenedBundle: daemon.HardenedBundle}
	var verbose bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure arbor against the raw runtime on this machine",
		Long: `Measure, side by side in one run on this machine, arbor and the raw runtime
floor (runsc run / runc run on a prepared bundle, without arbor): time to result
(warm, cold, raw), fan-out, commit cost on a small and a 1 GiB image, deep-chain
step latency, inspect latency, storage per snapshot, the agent loop, and live
forks of a python3 (--section fork: into 1, 4 and 8 copies, against a fresh
start and a cold runsc run). It starts a private
daemon on a temporary home (needs root) and prints a table, or JSON with --json.
Numbers are ratios within one run because shared machines are noisy; see
BENCHMARKS.md for recorded results and targets.`,
		Example: `  sudo arbor bench --quick
  sudo arbor bench --runtime runsc --json > bench.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.JSON = g.json
			if verbose {
				opts.Progress = g.stderr
			}
			_, err := bench.Run(cmd.Context(), opts, g.stdout)
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.Quick, "quick", false, "a short smoke run (fewer samples, smaller sizes)")
	f.StringSliceVar(&opts.Runtimes, "runtime", nil, "runtimes to compare (default: runsc and runc)")
	f.IntVar(&opts.Iterations, "iterations", 0, "samples per latency point (default 20, quick 3)")
	f.StringVar(&opts.Home, "bench-home", "", "state directory for the private daemon (default: a temporary one)")
	f.StringSliceVar(&opts.Sections, "section", nil, "only these sections")
	f.IntSliceVar(&opts.FanOut, "fan-out", nil, "fan-out widths, pool off (default 1,4,16,64; quick 1,4); the widest up to 16 also with the pool on")
	f.StringVar(&opts.Cluster.DB, "cluster-db", "", "section cluster: the PostgreSQL database its nodes share (postgres://...)")
	f.StringVar(&opts.Cluster.Blobs, "cluster-blobs", "", "section cluster: the bucket its nodes share (s3://bucket/prefix; a fresh prefix below it is used)")
	f.StringVar(&opts.Cluster.BlobsEndpoint, "cluster-blobs-endpoint", "", "section cluster: the S3 endpoint URL (default: the AWS environment's)")
	f.IntSliceVar(&opts.Cluster.Workers, "cluster-workers", nil, "section cluster: worker counts measured (default 1,2,4)")
	f.BoolVarP(&verbose, "verbose", "v", false, "print progress to stderr")
	return cmd
}

// BenchServe runs one of arbor bench's private daemons: the daemon of
// `arbor serve`, in this process, so the benchmark counts its CPU. The
// benchmark itself sees only the daemon's API.
func BenchServe(ctx context.Context, c bench.DaemonConfig) error {
	cfg := daemon.Config{Home: c.Home, Listen: c.Listen, Logger: c.Logger, Ready: c.Ready}
	cfg.Engine.Runtime, cfg.Engine.AllowedRuntimes = c.Runtime, c.AllowedRuntimes
	cfg.Engine.Slots, cfg.Engine.SquashDepth, cfg.Engine.MaxConcurrentOps = c.Slots, c.SquashDepth, c.MaxConcurrentOps
	cfg.Engine.WarmPerImage, cfg.Engine.WarmMax, cfg.Engine.InitBinary = c.WarmPerImage, c.WarmMax, c.InitBinary
	if cl := c.Cluster; cl.DB != "" {
		cfg.Role, cfg.DB, cfg.Blobs, cfg.BlobsEndpoint, cfg.WorkerID = cl.Role, cl.DB, cl.Blobs, cl.BlobsEndpoint, cl.WorkerID
	}
	return daemon.Run(ctx, cfg)
}
