// Package daemon is arbor's composition root: it builds the engine, the HTTP
// API and the listener, writes the local discovery files (url, token), and
// runs until its context ends.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/bearer"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layers/s3store"
	"github.com/arborsh/arbor/internal/mcp"
	"github.com/arborsh/arbor/internal/metrics"
	"github.com/arborsh/arbor/internal/registry"
	"github.com/arborsh/arbor/internal/store/postgres"
	"github.com/arborsh/arbor/internal/webui"
)

// Config configures the daemon.
type Config struct {
	Home   string // default /var/lib/arbor
	Listen string // default 127.0.0.1:7777
	Token  string // token of the default account; default: read or create <home>/token
	Engine engine.Config
	Logger *slog.Logger
	// Ready, if set, receives the base URL once the daemon serves.
	Ready func(url string)
	// AllowRegistries lists the loopback and private registries imports
	// may reach (registry.Options.AllowRegistries); by default only public
	// addresses.
	AllowRegistries []string
	// ShutdownTimeout is how long running operations may go on after ctx
	// ends (new ones are refused) before they are failed; 0 fails them at
	// once (embedders and tests; arbor serve's default is
	// DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// RateLimit and RateBurst limit each token's API requests
	// (api.Options); 0: unlimited.
	RateLimit float64
	RateBurst int
	// ImageTTL, OperationTTL and UploadTTL are the retention flags, parsed by
	// engine.ParseRetention into Engine.Retention and AccountRetention
	// (when given, they replace those).
	ImageTTL, OperationTTL, UploadTTL []string
	// CheckpointTTL is --checkpoint-ttl, parsed by engine.ParseCheckpointTTL
	// into Engine.CheckpointTTL (when given).
	CheckpointTTL string
	// DB, if set, is a postgres:// URL: the metadata goes to that
	// PostgreSQL database instead of <home>/arbor.db: one node per
	// database, unless Blobs is set too (a cluster, see cluster.go and
	// README "Scale-out").
	DB string
	// Blobs, when set (s3://bucket/prefix), keeps the layers in that
	// bucket with a local cache under Home/layer-cache (layers/s3store);
	// BlobsEndpoint and BlobsRegion override the AWS environment's, and
	// BlobsCacheBytes bounds the cache (0: s3store.DefaultCacheBytes).
	Blobs, BlobsEndpoint, BlobsRegion string
	BlobsCacheBytes                   int64
	// BlobsRetryFor bounds how long a commit retries its upload while S3
	// is unavailable (0: s3store.DefaultRetryFor; negative: no retries).
	BlobsRetryFor time.Duration
	// BlobsGrace is how long a shared bucket's objects (layers, uploaded
	// files) stay after nothing names them (0: s3store.DefaultGrace).
	BlobsGrace time.Duration
	// PreviewListen, if set, serves port previews (/preview/) on this
	// address instead of Listen: another origin, so a page a sandbox
	// serves cannot script the web UI's (see preview.go).
	PreviewListen string
	// Role is this node's part in a cluster (with DB and Blobs both set):
	// RoleAll (default), RoleAPI or RoleWorker; see cluster.go.
	Role string
	// WorkerID names the node in the cluster (default: host name and a
	// hash of Home); Advertise is the URL other nodes reach Listen at
	// (default derived from the listener's address).
	WorkerID, Advertise string
	// LeaseTTL is the queue's lease (default store.DefaultLeaseTTL).
	LeaseTTL time.Duration
}

// DefaultShutdownTimeout is arbor serve's --shutdown-timeout. The systemd
// unit's TimeoutStopSec leaves it room (deploy/arbor.service).
const DefaultShutdownTimeout = 60 * time.Second

// DefaultHome is where the daemon keeps its state unless told otherwise.
const DefaultHome = "/var/lib/arbor"

// DefaultListen is the loopback address the daemon binds by default.
const DefaultListen = "127.0.0.1:7777"

// Run serves until ctx ends, then shuts down gracefully: it stops
// admitting operations, keeps serving (polls, event streams, files) while
// running operations finish, up to ShutdownTimeout, then fails the rest
// ("daemon shut down during the run") and stops.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Home == "" {
		cfg.Home = DefaultHome
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger
	// An engine given its own runtimes and root filesystems (tests over
	// the fake runtime) mounts nothing and starts no sandbox.
	if os.Geteuid() != 0 && (cfg.Engine.Runtimes == nil || cfg.Engine.RootFS == nil) {
		return errors.New("arbor serve needs root (it mounts overlays and starts sandboxes): run it with sudo")
	}
	if err := os.MkdirAll(cfg.Home, 0o700); err != nil {
		return err
	}
	ec := cfg.Engine
	if len(cfg.ImageTTL)+len(cfg.OperationTTL)+len(cfg.UploadTTL) > 0 {
		var err error
		if ec.Retention, ec.AccountRetention, err = engine.ParseRetention(cfg.ImageTTL, cfg.OperationTTL, cfg.UploadTTL); err != nil {
			return err
		}
	}
	if cfg.CheckpointTTL != "" {
		var err error
		if ec.CheckpointTTL, err = engine.ParseCheckpointTTL(cfg.CheckpointTTL); err != nil {
			return err
		}
	}
	ec.Home = cfg.Home
	ec.Logger = log
	clustered, err := checkRole(&cfg)
	if err != nil {
		return err
	}
	// Listening before the engine starts: a worker registers its address.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another arbor already running? stop it or pass --listen)", cfg.Listen, err)
	}
	defer ln.Close()
	var pg *postgres.Store
	if cfg.DB != "" {
		if pg, err = openDB(ctx, cfg.DB, !clustered, log); err != nil {
			return err
		}
		ec.Metadata = pg // the engine closes it
	}
	m := metrics.New()
	ec.Observer = m
	// The engine and the server outlive ctx until the drain is over.
	life, endLife := context.WithCancel(context.WithoutCancel(ctx))
	defer endLife()
	if cfg.Blobs != "" {
		sc := s3store.Config{URL: cfg.Blobs, Endpoint: cfg.BlobsEndpoint, Region: cfg.BlobsRegion,
			CacheDir: filepath.Join(cfg.Home, "layer-cache"), Staging: filepath.Join(cfg.Home, "tmp"), CacheBytes: cfg.BlobsCacheBytes, Logger: log, RetryFor: cfg.BlobsRetryFor}
		sharedBlobs(&sc, pg, cfg.BlobsGrace, log)
		st, err := s3store.New(ctx, sc)
		if err != nil {
			return err
		}
		defer st.Close()
		ec.LayerStorage = st
		log.Info("layers in object storage", "blobs", cfg.Blobs, "cache", filepath.Join(cfg.Home, "layer-cache"))
		if clustered {
			ec.Cluster = clusterConfig(cfg, pg, st, ln)
			log.Info("cluster node", "role", cfg.Role, "node", ec.Cluster.Node, "advertise", ec.Cluster.Address)
		}
	}
	e, err := engine.New(ctx, ec)
	if err != nil {
		return err
	}
	defer e.Close()
	m.Watch(e)
	if _, err := registry.Install(e, registry.Options{Logger: log, AllowRegistries: cfg.AllowRegistries}); err != nil {
		return err
	}
	tokenPath := filepath.Join(cfg.Home, "token")
	if err := ensureToken(ctx, e, tokenPath, cfg.Token); err != nil {
		return err
	}
	url := "http://" + ln.Addr().String()
	if err := writeFile(filepath.Join(cfg.Home, "url"), url+"\n", 0o644); err != nil {
		return err
	}
	opts := api.Options{Logger: log, Metrics: m, RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst}
	var ch *clusterHTTP
	if clustered {
		if ch, err = newClusterHTTP(ctx, e, cfg.Role, log); err != nil {
			return err
		}
		opts.PreviewBaseHeader = previewBaseHeader // set by the forwarding API node only
		opts.ForwardedBy = forwardedPreview
	}
	stopPreviews, err := servePreviews(life, e, cfg, log, &opts, ch)
	if err != nil {
		return err
	}
	defer stopPreviews()
	var handler http.Handler
	if ch != nil {
		ch.previewBase = opts.PreviewBase
		local := m.Instrument("/preview/", api.PreviewHandler(e, opts))
		handler = ch.gate(ch.previews(routes(e, log, opts, ch.forward), local, opts.PreviewBase == ""))
	} else {
		handler = routes(e, log, opts, nil)
	}
	srv := newHTTPServer(life, handler, log, defaultTimeouts)
	warm := "on"
	if ws := e.WarmStatus(); !ws.Enabled {
		warm = "off: " + ws.Reason
	}
	log.Info("arbor serving", "url", url, "home", cfg.Home, "token_file", tokenPath, "runtime", e.DefaultRuntime(), "runtimes", strings.Join(e.Runtimes(), ","), "warm_pool", warm)
	if cfg.Ready != nil {
		cfg.Ready(url)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var nodeLost <-chan error
	if pg != nil {
		nodeLost = pg.NodeLost()
	}
	var stopErr error
	select {
	case err := <-errc:
		return err
	case stopErr = <-nodeLost:
		// Another node serves the database now: stop at once, without a
		// drain (the deferred engine Close fails what still runs here).
		log.Error("stopping", "err", stopErr)
	case <-ctx.Done():
		drain(e, cfg.ShutdownTimeout, log)
	}
	endLife() // ends event streams, whose requests would hold Shutdown
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	_ = os.Remove(filepath.Join(cfg.Home, "url"))
	return stopErr
}

// drain refuses new operations and waits up to timeout for the running
// ones; the deferred engine Close fails those still running then.
func drain(e *engine.Engine, timeout time.Duration, log *slog.Logger) {
	idle := e.Drain("SIGTERM or interrupt; shutdown timeout " + timeout.String())
	log.Info("shutting down: no new operations; waiting for running ones", "timeout", timeout)
	start := time.Now()
	select {
	case <-idle:
		log.Info("running operations finished", "after", time.Since(start).Round(time.Millisecond))
		return
	default:
	}
	t := time.NewTimer(max(timeout, 0))
	defer t.Stop()
	select {
	case <-idle:
		log.Info("running operations finished", "after", time.Since(start).Round(time.Millisecond))
	case <-t.C:
		log.Warn("shutdown timeout reached: failing the operations still running", "timeout", timeout)
	}
}

// serverTimeouts bound how long a connection may sit without a request.
type serverTimeouts struct {
	readHeader time.Duration // a request's headers must arrive within this
	idle       time.Duration // a keep-alive connection with no request is closed after this
}

var defaultTimeouts = serverTimeouts{readHeader: 30 * time.Second, idle: 2 * time.Minute}

// newHTTPServer returns the daemon's HTTP server. It has no ReadTimeout or
// WriteTimeout on purpose: an upload or an event stream (SSE follow) may
// last as long as a run, and the API cuts a request body that stalls on
// its own (api.Options.BodyIdleTimeout).
func newHTTPServer(ctx context.Context, h http.Handler, log *slog.Logger, t serverTimeouts) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.readHeader,
		IdleTimeout:       t.idle,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
}

// ensureToken makes sure the default account has a token and that the local
// token file holds it, so local tools need no flags.
func ensureToken(ctx context.Context, e *engine.Engine, path, explicit string) error {
	secret := explicit
	if secret == "" {
		if b, err := os.ReadFile(path); err == nil {
			secret = strings.TrimSpace(string(b))
		}
	}
	if secret != "" {
		if _, err := e.Authenticate(ctx, secret); err == nil {
			return writeFile(path, secret+"\n", 0o600)
		}
		if explicit != "" {
			// An explicit token becomes the default account's token.
			return fmt.Errorf("--token: only tokens created by arbor are accepted; create one with `arbor token create`")
		}
	}
	_, s, err := e.CreateToken(ctx, engine.DefaultAccount, "local", 0)
	if err != nil {
		return err
	}
	return writeFile(path, s+"\n", 0o600)
}

func writeFile(path, content string, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// routes mounts every surface of the daemon on one listener: the REST API
// under /v1, MCP over streamable HTTP at /mcp, a read-only OCI registry of
// every image at /v2/, port previews at /preview/ (their own links, see
// api.PreviewHandler), the web UI at /, and Prometheus metrics at /metrics
// (for the default account's tokens only).
// Each authenticates with the same bearer tokens. wrapAPI, if set, wraps
// the API handler wherever it is used. opts.Metrics counts the
// requests of every surface: the API's by route pattern, the others by
// surface.
func routes(e *engine.Engine, log *slog.Logger, opts api.Options, wrapAPI func(http.Handler) http.Handler) http.Handler {
	m := opts.Metrics
	mux := http.NewServeMux()
	apiH := api.New(e, opts)
	if wrapAPI != nil {
		apiH = wrapAPI(apiH) // a cluster node forwards some requests (cluster.go)
	}
	mux.Handle("/v1/", apiH)
	mux.Handle("/v1", apiH)
	mux.Handle("/metrics", apiH)
	// /mcp acts as the caller through the API handler, in this process.
	asCaller := mcp.InProcess(apiH)
	mux.Handle("/mcp", m.Instrument("/mcp", mcp.HTTPHandler(func(r *http.Request) (mcp.Backend, error) {
		tok, ok := bearer.FromRequest(r)
		if !ok {
			return nil, errdefs.Unauthorized("missing bearer token: send Authorization: Bearer <token> (the local token is in the daemon's token file, <home>/token)")
		}
		if _, err := e.Authenticate(r.Context(), tok); err != nil {
			return nil, err
		}
		return asCaller(tok)
	})))
	exp := registry.ExportHandler(e, nil) // drops a deleted image's blobs from now on
	// and here what earlier runs left behind (a crash between a delete and
	// its cleanup).
	if err := exp.Prune(context.Background()); err != nil {
		log.Warn("registry export: prune", "err", err)
	}
	mux.Handle("/v2/", m.Instrument("/v2/", exp))
	if opts.PreviewBase == "" { // else on a listener of their own (servePreviews)
		mux.Handle("/preview/", m.Instrument("/preview/", api.PreviewHandler(e, opts)))
	}
	mux.Handle("/", m.Instrument("/", webui.Handler()))
	return mux
}
