package testdaemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
	"github.com/arborsh/arbor/internal/testutil/s3server"
)

// EnvCluster, set to 1, puts every daemon of New and Shared but those of
// Options.Serve on a cluster instead of one in-process engine:
// a PostgreSQL database (pgtest), a bucket on versitygw (s3server), two
// API-role nodes and two worker-role nodes, each a daemon of this process
// started by RunNode. The Daemon's URL (and Server) is a proxy that sends
// each request to the next API node in turn, so a test's requests alternate
// between them; Daemon.Engine is nil. A fake daemon's nodes share its
// fake runtime. It needs root (PostgreSQL runs as its own user).
const EnvCluster = "ARBOR_TEST_CLUSTER"

// ClusterMode reports whether EnvCluster asks for clusters.
func ClusterMode() bool { return os.Getenv(EnvCluster) == "1" }

// Node is one node of a test cluster.
type Node struct {
	Name string // its worker id, also the name of its home
	Role string // "api" or "worker"
	Home string
	// DB is the PostgreSQL URL, Blobs the s3:// URL of the layers and
	// BlobsEndpoint the S3 server; the AWS environment of the process
	// holds the credentials.
	DB, Blobs, BlobsEndpoint string
	Engine                   engine.Config
	Logger                   *slog.Logger
}

// RunNode runs one cluster node until ctx ends, calling ready with its URL
// once it serves and leaving the default account's token in
// <Home>/token. A package whose tests run in cluster mode sets it from
// TestMain to a call of daemon.Run, the product's composition root
// (testdaemon cannot import package daemon: the daemon's own tests import
// testdaemon).
var RunNode func(ctx context.Context, n Node, ready func(url string)) error

// infra is the PostgreSQL server and the S3 server that every cluster of
// the test process shares (each with a database and a bucket of its own),
// stopped by Main.
var infra struct {
	once  sync.Once
	s3    *s3server.Server
	stops []func()
}

// lifeTB hands pgtest and s3server a testing.TB whose cleanups and
// temporary directories last as long as the daemon (or the process), not
// as the test that happened to start it.
type lifeTB struct {
	testing.TB
	cleanups *[]func()
}

func (l lifeTB) Cleanup(f func()) { *l.cleanups = append(*l.cleanups, f) }

func (l lifeTB) TempDir() string {
	dir, err := os.MkdirTemp("", "arbor-test-cluster-")
	if err != nil {
		l.Fatal(err)
	}
	l.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startInfra(t testing.TB) (*s3server.Server, error) {
	infra.once.Do(func() {
		infra.s3 = s3server.Start(lifeTB{t, &infra.stops})
		// The nodes' S3 clients read their credentials from the
		// environment, as arbor serve's do.
		for _, kv := range infra.s3.Env() {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
	})
	if infra.s3 == nil {
		return nil, errors.New("the S3 server of the test clusters did not start (see the first test that asked)")
	}
	return infra.s3, nil
}

// stopInfra stops the shared servers (from Main).
func stopInfra() {
	for i := len(infra.stops) - 1; i >= 0; i-- {
		infra.stops[i]()
	}
	infra.stops = nil
	pgtest.Stop()
}

// clusterNodes are the nodes of a test cluster, started in this order: the
// first runs the schema's migrations alone.
var clusterNodes = []struct{ name, role string }{
	{"api-1", "api"}, {"api-2", "api"}, {"worker-1", "worker"}, {"worker-2", "worker"},
}

// cluster starts a cluster on d.Home for a daemon of o. t only serves
// pgtest and s3server; what they start is undone by stops.
func (d *Daemon) cluster(t testing.TB, o Options, cfg engine.Config, stops *[]func()) error {
	if RunNode == nil {
		return fmt.Errorf("%s=1 needs testdaemon.RunNode: set it in TestMain to a function running daemon.Run", EnvCluster)
	}
	s3, err := startInfra(t)
	if err != nil {
		return err
	}
	life := lifeTB{t, stops}
	dsn := pgtest.DSN(life)
	blobs := "s3://" + s3.Bucket(life) + "/layers"
	var apis []*url.URL
	for _, cn := range clusterNodes {
		home := filepath.Join(d.Home, cn.name)
		// Traversable, as testutil.Home: runc sandboxes run as
		// unprivileged host users.
		if err := os.Mkdir(home, 0o711); err != nil {
			return err
		}
		n := Node{Name: cn.name, Role: cn.role, Home: home, DB: dsn, Blobs: blobs, BlobsEndpoint: s3.Endpoint, Engine: cfg,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", cn.name)}
		u, err := runNode(n, stops)
		if err != nil {
			return fmt.Errorf("cluster node %s: %w", cn.name, err)
		}
		if cn.role == "api" {
			apis = append(apis, u)
		}
	}
	b, err := os.ReadFile(filepath.Join(d.Home, clusterNodes[0].name, "token"))
	if err != nil {
		return err
	}
	srv := httptest.NewServer(alternate(apis))
	*stops = append(*stops, func() { srv.CloseClientConnections(); srv.Close() })
	d.Server, d.URL, d.Token = srv, srv.URL, strings.TrimSpace(string(b))
	return nil
}

// runNode runs n until stops run, and returns its URL once it serves.
func runNode(n Node, stops *[]func()) (*url.URL, error) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- RunNode(ctx, n, func(u string) { ready <- u }) }()
	*stops = append(*stops, func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			fmt.Fprintf(os.Stderr, "testdaemon: cluster node %s did not stop within 30 s\n", n.Name)
		}
	})
	select {
	case u := <-ready:
		return url.Parse(u)
	case err := <-done:
		return nil, fmt.Errorf("stopped before serving: %v", err)
	case <-time.After(startTimeout):
		return nil, errors.New("not serving after 2 minutes")
	}
}

// alternate is a proxy that sends each request to the next of the API
// nodes: a test's run is created on one and polled, streamed and
// inspected on the other. It passes bodies and encodings through as they
// are and flushes streams at once.
func alternate(apis []*url.URL) http.Handler {
	var next atomic.Uint64
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(apis[(next.Add(1)-1)%uint64(len(apis))])
			pr.Out.Host = pr.In.Host
		},
		Transport:     &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16},
		FlushInterval: -1,
	}
}

// inCluster reports whether a daemon of o runs as a cluster.
func inCluster(o Options) bool { return ClusterMode() && o.Serve == nil }

// skipInCluster skips a test whose daemon serves its own api.Options: a
// cluster node's come from arbor serve's flags. A cluster needs root.
func skipInCluster(t testing.TB, o Options) {
	if !inCluster(o) {
		return
	}
	t.Helper()
	testutil.RequiresRoot(t)
	if !reflect.ValueOf(o.API).IsZero() {
		t.Skipf("%s=1: the test serves its own api.Options (%+v), which a cluster node takes from arbor serve's flags", EnvCluster, o.API)
	}
}
