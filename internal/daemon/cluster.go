package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/bearer"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layers/s3store"
	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/store/postgres"
)

// Roles of a node in a cluster (--role).
const (
	RoleAll    = "all"    // serves clients and runs work
	RoleAPI    = "api"    // serves clients; queues runs for workers
	RoleWorker = "worker" // runs queued work; serves only other nodes
)

// clusterHeader carries the cluster's secret on requests one node
// forwards to another.
const clusterHeader = "X-Arbor-Cluster"

// checkRole validates --role and says whether this node is one of a
// cluster: PostgreSQL metadata and S3 layers, which every node shares.
func checkRole(cfg *Config) (bool, error) {
	if cfg.Role == "" {
		cfg.Role = RoleAll
	}
	switch cfg.Role {
	case RoleAll, RoleAPI, RoleWorker:
	default:
		return false, errdefs.InvalidArgument("--role %q: want all, api or worker", cfg.Role)
	}
	clustered := cfg.DB != "" && cfg.Blobs != ""
	if cfg.Role != RoleAll && !clustered {
		return false, errdefs.InvalidArgument("--role %s needs the cluster's shared state: pass --db postgres://... and --blobs s3://bucket/prefix", cfg.Role)
	}
	return clustered, nil
}

// clusterConfig is the engine's part of a cluster node.
func clusterConfig(cfg Config, pg *postgres.Store, blobs *s3store.Store, ln net.Listener) *engine.ClusterConfig {
	q := postgres.NewQueue(pg, store.QueueConfig{LeaseTTL: cfg.LeaseTTL})
	id := cfg.WorkerID
	if id == "" {
		id = defaultNodeID(cfg.Home)
	}
	addr := cfg.Advertise
	if addr == "" {
		addr = advertised(ln.Addr().String())
	}
	return &engine.ClusterConfig{Store: q, Node: id, Worker: cfg.Role != RoleAPI, Address: strings.TrimSuffix(addr, "/"),
		LeaseTTL: cfg.LeaseTTL, Files: blobs, Checkpoints: blobs}
}

// defaultNodeID is the host name and a hash of the home: two nodes on one
// host have different homes.
func defaultNodeID(home string) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	abs, _ := filepath.Abs(home)
	h := sha256.Sum256([]byte(abs))
	return host + "-" + hex.EncodeToString(h[:4])
}

// advertised is the URL of a listener's address, with the host name for an
// unspecified address.
func advertised(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			if h, herr := os.Hostname(); herr == nil && h != "" {
				host = h
			}
		}
		addr = net.JoinHostPort(host, port)
	}
	return "http://" + addr
}

// forwarded are the requests about a running instance that only the
// worker running it can answer: its processes, their input, a fork or a
// checkpoint of its sandbox, its port previews.
var forwarded = regexp.MustCompile(`^/v1/operations/([^/]+)/(subprocesses|fork|checkpoint|previews)(/|$)`)

// restored are restores of an image's memory checkpoint: an API node sends
// them to a worker, which fetches the checkpoint from the bucket if it
// lacks it.
var restored = regexp.MustCompile(`^/v1/images/([^/]+)/restore$`)

// forwardedKey marks the context of a preview request another node of the
// cluster proxied (api.Options.ForwardedBy): the secret that proved it is
// gone from the request by then.
type forwardedKey struct{}

// forwardedPreview reports whether r is a preview another node proxied.
func forwardedPreview(r *http.Request) bool {
	v, _ := r.Context().Value(forwardedKey{}).(bool)
	return v
}

// previewBaseHeader carries, on an expose an API node forwards, where
// that node serves previews (its --preview-listen), for the links the
// worker signs.
const previewBaseHeader = "X-Arbor-Preview-Base"

// clusterHTTP is a cluster node's part of the HTTP surface: a worker
// serves only requests other nodes forward (carrying the cluster's
// secret); an API node forwards the requests of forwarded to the worker
// running the instance.
type clusterHTTP struct {
	e           *engine.Engine
	role        string
	secret      string
	transport   *http.Transport
	log         *slog.Logger
	previewBase string // this node's --preview-listen URL, if any
}

func newClusterHTTP(ctx context.Context, e *engine.Engine, role string, log *slog.Logger) (*clusterHTTP, error) {
	secret, err := e.ClusterSecret(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the cluster secret: %w", err)
	}
	return &clusterHTTP{e: e, role: role, secret: secret, transport: http.DefaultTransport.(*http.Transport).Clone(), log: log}, nil
}

// fromNode reports whether r was forwarded by another node of the cluster.
func (c *clusterHTTP) fromNode(r *http.Request) bool {
	got := r.Header.Get(clusterHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(c.secret)) == 1
}

// gate wraps the whole surface: a worker answers clients only for metrics.
func (c *clusterHTTP) gate(h http.Handler) http.Handler {
	if c.role != RoleWorker {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.fromNode(r) && r.URL.Path != "/metrics" {
			http.Error(w, "this arbor node is a worker: send API requests to an API node (--role api or all)", http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// forward wraps the API handler (also under /mcp): a request about an
// instance another worker runs goes there.
func (c *clusterHTTP) forward(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.fromNode(r) {
			r.Header.Del(previewBaseHeader) // only a node says where previews are
		}
		m := forwarded.FindStringSubmatch(r.URL.Path)
		rm := restored.FindStringSubmatch(r.URL.Path)
		if (m == nil && rm == nil) || c.fromNode(r) {
			h.ServeHTTP(w, r)
			return
		}
		tok, ok := bearer.FromRequest(r)
		if !ok {
			h.ServeHTTP(w, r) // refused there, as everywhere
			return
		}
		t, err := c.e.Authenticate(r.Context(), tok)
		if err != nil {
			h.ServeHTTP(w, r)
			return
		}
		if rm != nil {
			addrs, err := c.e.RestorePlacement(r.Context(), t.Account, rm[1])
			if errors.Is(err, errdefs.ErrUnavailable) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				_ = json.NewEncoder(w).Encode(apitypes.Error{Error: err.Error(), Status: http.StatusServiceUnavailable})
				return
			}
			if err != nil || len(addrs) == 0 {
				h.ServeHTTP(w, r) // this node answers (its error, or it restores)
				return
			}
			c.proxyAny(w, r, addrs)
			return
		}
		addr, err := c.e.Placement(r.Context(), t.Account, strings.ToLower(m[1]))
		if err != nil || addr == "" {
			h.ServeHTTP(w, r) // here, finished, unknown: this node answers
			return
		}
		if c.previewBase != "" && m[2] == "previews" {
			r.Header.Set(previewBaseHeader, c.previewBase)
		}
		c.proxy(w, r, addr)
	})
}

// maxForwardBody bounds a body proxyAny keeps to retry it on another node
// (restore requests: a few hundred bytes of JSON).
const maxForwardBody = 1 << 20

// proxyAny sends r to the first of the nodes at addrs that takes the
// connection: a worker that died within its lease refuses it, and the
// request (its body kept) goes to the next.
func (c *clusterHTTP) proxyAny(w http.ResponseWriter, r *http.Request, addrs []string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxForwardBody+1))
	if err != nil {
		http.Error(w, fmt.Sprintf("read the request: %v", err), http.StatusBadRequest)
		return
	}
	if len(body) > maxForwardBody { // never forward a cut body
		http.Error(w, fmt.Sprintf("request body over %d bytes: send a smaller one", maxForwardBody), http.StatusRequestEntityTooLarge)
		return
	}
	for i, addr := range addrs {
		out := r.Clone(r.Context())
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		refused := false
		c.proxyTo(w, out, addr, func(err error) bool {
			var op *net.OpError
			refused = i < len(addrs)-1 && errors.As(err, &op) && op.Op == "dial"
			return refused
		})
		if !refused {
			return
		}
	}
}

// proxy sends r to the node at addr with the cluster's secret, streams
// and protocol upgrades (WebSocket) included.
func (c *clusterHTTP) proxy(w http.ResponseWriter, r *http.Request, addr string) {
	c.proxyTo(w, r, addr, nil)
}

// proxyTo is proxy; skip, if set, says whether a failure to reach addr is
// left to the caller (nothing written).
func (c *clusterHTTP) proxyTo(w http.ResponseWriter, r *http.Request, addr string, skip func(error) bool) {
	target, err := url.Parse(addr)
	if err != nil {
		http.Error(w, fmt.Sprintf("worker address %q: %v", addr, err), http.StatusBadGateway)
		return
	}
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = r.Host
			pr.SetXForwarded() // the client, for a preview's server
			pr.Out.Header.Set(clusterHeader, c.secret)
		},
		Transport:     c.transport,
		FlushInterval: -1, // streams stay live
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			c.log.Warn("forward to worker", "worker", addr, "path", r.URL.Path, "err", err)
			if skip != nil && skip(err) {
				return
			}
			http.Error(w, fmt.Sprintf("the worker running this instance (%s) is unreachable: %v; retry, or wait for the operation to end", addr, err), http.StatusBadGateway)
		},
	}
	p.ServeHTTP(w, r)
}

// previews wraps a listener's handler h: a preview another node forwarded
// here is served by local, whichever listener this node serves clients'
// previews on; with clients (h serves previews to clients), a preview of
// an instance another worker runs goes to that worker, which checks the
// link or token and reaches the port through its relay.
func (c *clusterHTTP) previews(h, local http.Handler, clients bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/preview/")
		if !ok {
			h.ServeHTTP(w, r)
			return
		}
		if c.fromNode(r) {
			// The server in the sandbox must never see the secret.
			r.Header.Del(clusterHeader)
			local.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardedKey{}, true)))
			return
		}
		if !clients {
			h.ServeHTTP(w, r)
			return
		}
		op, _, _ := strings.Cut(rest, "/")
		addr, err := c.e.PreviewPlacement(r.Context(), op)
		if err != nil || addr == "" {
			h.ServeHTTP(w, r) // here, finished, unknown: this node answers
			return
		}
		c.proxy(w, r, addr)
	})
}
