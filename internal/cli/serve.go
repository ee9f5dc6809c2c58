package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/arborsh/arbor/internal/daemon"
	"github.com/spf13/cobra"
)

func newServe(g *globals) *cobra.Command {
	var cfg daemon.Config
	var verbose, printConfig bool
	var configFile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the arbor daemon",
		Long: `Run the arbor daemon with its embedded store (SQLite) under --home.

It binds loopback by default and writes <home>/url and <home>/token (0600),
which local tools (the arbor CLI, the Python SDK) read, so they need no flags.

Every flag is also a key of a TOML config file (--config, $ARBOR_CONFIG, or
/etc/arbor/arbor.toml if it exists) and a variable ARBOR_<FLAG NAME>
(ARBOR_MAX_TIMEOUT; lists comma-separated; the token has no variable, as
ARBOR_TOKEN is the clients'). A flag wins over the variable, the variable
over the file, the file over the default; --print-config shows the result.

On SIGTERM or interrupt the daemon refuses new operations (503), lets the
running ones finish for up to --shutdown-timeout, then fails the rest.`,
		Example: `  sudo arbor serve
  sudo arbor serve --config /etc/arbor/arbor.toml --print-config
  sudo arbor serve --home /srv/arbor --listen 127.0.0.1:8080 --runtime runc
  sudo arbor serve --allow-runtime runc   # gVisor by default; runs may ask for runc`,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := configPath(configFile, os.Getenv)
			if err != nil {
				return err
			}
			src, err := resolveSettings(cmd.LocalFlags(), os.Getenv, path)
			if err != nil {
				return err
			}
			if printConfig {
				return printSettings(g.stdout, cmd.LocalFlags(), src, path)
			}
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			cfg.Logger = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
			if cfg.Home == "" {
				cfg.Home = daemon.DefaultHome
			}
			cfg.Ready = func(url string) {
				fmt.Fprintf(g.stdout, "arbor listening on %s\ntoken file: %s\n", url, filepath.Join(cfg.Home, "token"))
			}
			return daemon.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "TOML config file whose keys are these flags' names (default $ARBOR_CONFIG, else "+DefaultConfigFile+" if it exists); precedence: flag > $ARBOR_<NAME> > config file > default")
	f.BoolVar(&printConfig, "print-config", false, "print the resolved settings as a config file, each with where it came from, and exit")
	f.StringVar(&cfg.Home, "home", daemon.DefaultHome, "state directory")
	f.StringVar(&cfg.Listen, "listen", daemon.DefaultListen, "address to listen on (keep it loopback unless you put TLS in front)")
	f.StringVar(&cfg.Token, "token", "", "use this secret as the local token instead of a generated one")
	f.StringVar(&cfg.DB, "db", "", "keep the metadata in this PostgreSQL database (postgres://user:password@host/db) instead of <home>/arbor.db; with --blobs, any number of nodes share it (--role; README \"Scale-out\")")
	f.StringVar(&cfg.Role, "role", "all", "with --db postgres:// and --blobs s3://, this node's part in the cluster: api (serves clients, queues runs), worker (claims and runs them) or all (both); README \"Scale-out\"")
	f.StringVar(&cfg.WorkerID, "worker-id", "", "this node's ID in the cluster (default: the host name and a hash of --home)")
	f.StringVar(&cfg.Advertise, "advertise", "", "URL other nodes of the cluster reach this node's --listen at (default http://<--listen>, with the host name for an unspecified address)")
	durationVar(f, &cfg.LeaseTTL, "lease-ttl", 0, "how long a worker's claim on a run holds without a heartbeat: a dead worker's runs fail within it (default 15s)")
	f.StringVar(&cfg.Engine.Runtime, "runtime", "runsc", "default sandbox runtime: runsc (gVisor), runc or crun (a default other than runsc is allowed for every account)")
	f.StringSliceVar(&cfg.Engine.AllowedRuntimes, "allow-runtime", nil, "also allow runs to ask for these runtimes (runc, crun: shared kernel, hardened; see README \"Runtime security\"); runsc is always allowed")
	f.IntVar(&cfg.Engine.Slots, "slots", 0, "runs executing at once (default max(8, 4 per CPU, memory budget / 128 MiB)); beyond them, and beyond the memory budget, runs wait in order")
	f.IntVar(&cfg.Engine.MaxTimeout, "max-timeout", 3600, "longest run timeout clients may ask for, in seconds")
	f.Int64Var(&cfg.Engine.MaxStorageBytes, "max-storage-bytes", 0, "per-account storage quota in bytes (0: unlimited)")
	f.IntVar(&cfg.Engine.MaxConcurrentOps, "max-concurrent", 64, "per-account operations in flight")
	f.StringSliceVar(&cfg.AllowRegistries, "allow-registry", nil, "let imports reach registries on loopback or private addresses: CIDR ranges, addresses or HOST[:PORT] names, repeatable or comma-separated (default: public addresses only)")
	f.Int64Var(&cfg.Engine.MaxLayerBytes, "max-layer-bytes", 10<<30, "most a run may write (disk blocks plus 4 KiB per inode); runs may ask for less")
	f.Int64Var(&cfg.Engine.DiskReserveBytes, "disk-reserve", 0, "bytes kept free on the home's filesystem: below it, runs that save an image and imports get 507 (default 5% of the filesystem, at least 1 GiB, at most a quarter of it; negative: no check)")
	f.Int64Var(&cfg.Engine.MemoryBudget, "memory-budget", 0, "bytes the memory limits of executing runs may add up to, and the largest memory_bytes a run may ask for (default 3/4 of the host's RAM)")
	f.Int64Var(&cfg.Engine.DefaultMemoryBytes, "default-memory-bytes", 0, "memory limit of a run that asks for none (default memory budget / slots, at most 4 GiB)")
	f.IntVar(&cfg.Engine.MaxSubprocesses, "max-subprocesses", 16, "subprocesses running at once in one run")
	f.IntVar(&cfg.Engine.MaxAccountSubprocesses, "max-account-subprocesses", 64, "subprocesses running at once over all of an account's runs")
	f.StringSliceVar(&cfg.Engine.NetAllow, "net-allow", nil, "let networked sandboxes reach this range although it is denied by default (private, link-local, CGNAT, ...): a CIDR or an address, repeatable, e.g. --net-allow 10.1.2.0/24")
	f.StringArrayVar(&cfg.Engine.EgressAllow, "egress-allow", nil, "egress policy of networked runs, a ceiling their own may narrow but not widen: allow only this name (pypi.org, *.pythonhosted.org), CIDR or port (tcp:443); ACCOUNT=ENTRY for one account's own, which replaces the daemon-wide one; repeatable (see README \"Egress policies\")")
	f.StringArrayVar(&cfg.Engine.EgressDeny, "egress-deny", nil, "egress policy of networked runs (a ceiling, as --egress-allow): deny this name, CIDR or port; ACCOUNT=ENTRY for one account's; repeatable")
	f.StringVar(&cfg.Engine.EgressDNS, "egress-dns", "", "resolver (host[:port]) that egress policies forward allowed names to (default: the first nameserver of the host's /etc/resolv.conf)")
	durationVar(f, &cfg.ShutdownTimeout, "shutdown-timeout", daemon.DefaultShutdownTimeout, "on SIGTERM, how long running operations may go on finishing (new ones are refused) before they are failed")
	f.Float64Var(&cfg.RateLimit, "rate-limit", 0, "API requests per second each token may make on average (0: unlimited); beyond it requests get 429 with Retry-After")
	f.IntVar(&cfg.RateBurst, "rate-burst", 0, "API requests a token may make at once above --rate-limit (default 2 × the rate, at least 1)")
	f.StringSliceVar(&cfg.ImageTTL, "image-ttl", nil, "delete untagged images older than this that no tagged, younger or in-use image descends from: TTL (seconds such as 86400, or 72h, 30d, 2w) or ACCOUNT:TTL, repeatable; default off (see README \"Retention and disk\")")
	f.StringSliceVar(&cfg.OperationTTL, "operation-ttl", nil, "delete finished operations and their logs this long after they finished: TTL or ACCOUNT:TTL, repeatable; default 30d, off keeps them")
	f.StringSliceVar(&cfg.UploadTTL, "upload-ttl", nil, "delete uploaded files this long after their last use (upload, re-upload, or a run naming them): TTL or ACCOUNT:TTL, repeatable; default 180d (ConTree's CLI reuses an upload's uuid for 90 days), off keeps them")
	f.StringVar(&cfg.CheckpointTTL, "checkpoint-ttl", "", "remove memory checkpoints kept with images (arbor checkpoint) this long after they were made, keeping the images: TTL (seconds such as 86400, or 72h, 30d, 2w); default off: a checkpoint lives as long as its image")
	durationVar(f, &cfg.Engine.GCInterval, "gc-interval", time.Hour, "how often retention and garbage collection run in the background (negative: never; arbor gc runs them now)")
	f.StringVar(&cfg.Blobs, "blobs", "", "keep layers in S3 (s3://bucket/prefix), uploaded before their image is visible, with a local cache under the home; credentials from the AWS environment and files (default: plain directories under the home)")
	f.StringVar(&cfg.BlobsEndpoint, "blobs-endpoint", "", "S3 endpoint URL for --blobs, e.g. http://127.0.0.1:7070 (default: AWS, or $AWS_ENDPOINT_URL_S3)")
	f.StringVar(&cfg.BlobsRegion, "blobs-region", "", "S3 region for --blobs (default: $AWS_REGION or the AWS config, else us-east-1)")
	f.Int64Var(&cfg.BlobsCacheBytes, "blobs-cache-bytes", 0, "bound of the local layer cache of --blobs in bytes; layers in use may exceed it (default 20 GiB)")
	durationVar(f, &cfg.BlobsGrace, "blobs-grace", 0, "with --db postgres:// too (a bucket nodes share), how long layers and uploaded files stay in the bucket once nothing names them: a collection spares younger objects (default 15m)")
	f.StringVar(&cfg.PreviewListen, "preview-listen", "", "serve port previews (arbor expose) on this address, another origin than the API and web UI, instead of under /preview/ of --listen (README \"Port previews\")")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	return cmd
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
