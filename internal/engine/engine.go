// Package engine is arbor's domain core: images as chains of immutable
// layers, runs of one command in a fresh sandbox on an image, snapshots of the
// result, operations with an ordered event log, and inspection of any image
// without starting a sandbox.
//
// Home layout:
//
//	arbor.db                 metadata (internal/store)
//	layers/<id>/             immutable layer directories (overlayfs upper dirs; internal/layers)
//	trash/                   removed layers being deleted (emptied again at start)
//	blobs/sha256/<hex>       uploaded files, content-addressed
//	run/<operation>/         upper, work, merged, bundle of a live run (ephemeral)
//	runtime/<name>/          OCI runtime state
//	tmp/                     staging for uploads and imports
package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"sync"
	"time"

	"github.com/arborsh/arbor/internal/egress"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/initproc"
	"github.com/arborsh/arbor/internal/layers"
	"github.com/arborsh/arbor/internal/netns"
	"github.com/arborsh/arbor/internal/runtime"
	"github.com/arborsh/arbor/internal/store"
	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
)

// Config configures an Engine. Zero values take the defaults noted.
type Config struct {
	Home    string // required
	Runtime string // default runtime kind: "runsc" (default), "runc", "crun"
	// AllowedRuntimes lists the runtimes runs may ask for besides runsc and
	// Runtime (both always allowed). runc and crun share the host kernel:
	// allow them only for trusted work (see userns.go).
	AllowedRuntimes  []string
	RuntimePaths     map[string]string // kind → binary; empty: PATH
	Slots            int               // concurrent runs; default max(8, 4 × CPUs, MemoryBudget / slotMemory)
	MaxTimeout       int               // seconds; default 3600
	DefaultTimeout   int               // seconds; default 60
	SquashDepth      int               // chains longer than this get squashed in the background; default 64
	MaxLayerBytes    int64             // default growth cap per run; default 10 GiB
	MaxConcurrentOps int               // per account; default 64
	MaxStorageBytes  int64             // per account; 0: unlimited
	// CheckpointTTL: a memory checkpoint kept with an image (see
	// checkpoint_image.go) goes this long after it was made; its image
	// stays. 0: it lives as long as its image.
	CheckpointTTL time.Duration
	// DiskReserveBytes is the free space kept on the engine home's
	// filesystem (see disk.go): under it, runs that save an image and
	// imports are refused. 0: DefaultDiskReserve; negative: no check.
	DiskReserveBytes int64
	Logger           *slog.Logger
	Observer         Observer // told about operations, commits and collections (metrics); nil: none

	// MemoryBudget bounds the memory limits of the runs executing at once:
	// a run waits (PENDING) until its memory_bytes fits, so the limits
	// never add up to more than the host has. It is also the largest
	// memory_bytes a run may ask for. Default 3/4 of the host's RAM.
	MemoryBudget int64
	// DefaultMemoryBytes is a run's memory limit when it asks for none.
	// Default MemoryBudget / min(Slots, max(8, 4 × CPUs)) less runOverhead
	// (at most 4 GiB, at least 64 MiB): that many runs at the default fit
	// the budget; runs asking for less leave room for more, up to Slots.
	DefaultMemoryBytes int64
	// MaxSubprocesses bounds the subprocesses running at once in one run,
	// MaxAccountSubprocesses those of one account over all its runs: each
	// costs a host process. Defaults 16 and 64.
	MaxSubprocesses        int
	MaxAccountSubprocesses int
	// NetAllow lists ranges (CIDRs or addresses) networked sandboxes may
	// reach although netns.DefaultDeny covers them (private, link-local...).
	NetAllow []string
	// EgressAllow and EgressDeny are the egress policy of networked runs,
	// a ceiling a run's own may narrow but not widen (see planEgress);
	// "ACCOUNT=ENTRY" entries make that account's own. EgressDNS is the
	// resolver allowed names are forwarded to (host:port; default the
	// host's resolv.conf's first).
	EgressAllow, EgressDeny []string
	EgressDNS               string

	// Warm sandboxes (see warm.go, internal/warmpool). WarmPerImage 0
	// takes the default 2; a negative value disables the pool.
	WarmPerImage int
	WarmMax      int           // idle + booting sandboxes overall; default 8
	WarmIdle     time.Duration // idle sandboxes older than this are reaped; default 2m
	InitBinary   string        // static init of every sandbox; default: found automatically
	// ColdInit is arbor's C init (initproc.ColdInitName), run instead of
	// InitBinary by cold batch runs; default: found beside it, "off": none.
	ColdInit string

	// Retention is the daemon's default retention policy (see retention.go):
	// ImageTTL 0 keeps images (off by default), OperationTTL 0 takes
	// DefaultOperationTTL, a negative TTL keeps forever.
	Retention Retention
	// AccountRetention overrides Retention per account name; a zero field
	// takes the default's, a negative one turns that part off.
	AccountRetention map[string]Retention
	// GCInterval is how often retention runs in the background; default
	// DefaultGCInterval, negative: never (arbor gc still runs it).
	GCInterval time.Duration
	// Clock stamps image and operation rows and is retention's now;
	// default the real clock (tests pass a fake one).
	Clock clockwork.Clock

	// LayerStorage keeps the layers' contents; nil keeps them as plain
	// directories under Home/layers (layers.Dir). It must take directories
	// from Home/tmp by rename (its cache on Home's filesystem).
	LayerStorage layers.Storage
	// Runtimes, if set, are the runtimes by kind instead of the runsc,
	// runc and crun found on the host (tests pass a fakeruntime); Runtime
	// must name one. They play their commands themselves: no init is
	// handed to them, and the warm pool stays off.
	Runtimes map[string]runtime.Runtime
	// RootFS assembles sandboxes' root filesystems; nil: overlayfs mounts.
	// A RootFS other than the default serves every runtime without id
	// maps (see mountRoot).
	RootFS RootFS

	// Cluster, if set, makes the engine one node of a cluster (cluster.go):
	// Metadata must then be the cluster's store and LayerStorage its bucket.
	Cluster *ClusterConfig

	// Metadata is the metadata store; nil opens SQLite at Home/arbor.db.
	// The engine owns it from New on: it closes it in Close, or when New
	// fails.
	Metadata store.Metadata
}

// runOverhead is what a run costs outside its sandbox's memory cgroup,
// which the kernel does not charge to its limit: the daemon's output
// buffers (2 MiB at the default truncate_output_at) and goroutines, and,
// without the static init, the foreground `runsc run` waiting beside the
// sandbox (3.7 MiB PSS measured; with the init a cold sandbox is booted
// detached, see detached.go), with room to spare. Admission charges it
// to the memory budget with the run's limit, so the budget bounds what
// runs really cost the host, however many there are.
const runOverhead = 16 << 20

// slotMemory is the memory budget per default slot: the least a useful
// runsc sandbox needs (an idle one takes ~18 MiB of its limit, see
// BENCHMARKS.md) rounded up to 48 MiB, plus runOverhead. The slots only
// bound how many host processes runs make when they ask for little; the
// budget, charged with each run's limit and overhead, is what bounds
// their memory.
const slotMemory = 64 << 20

// Engine is safe for concurrent use.
type Engine struct {
	cfg      Config
	log      *slog.Logger
	st       store.Metadata
	runtimes map[string]runtime.Runtime
	queue    *admission // Slots and MemoryBudget, taken by each executing run

	mu        sync.Mutex
	images    map[string]*imageNode  // every image row, for chain walks
	leased    map[string]int         // image uuid → leases on it (GC roots, see leases.go)
	leases    map[string]*imageLease // by holder: a run's lease on its image
	active    map[string]*activeOp   // running operations
	squashing map[string]bool
	drain     *drainState // set by Drain: no new operations

	gcMu sync.Mutex // one retention pass (GC) at a time
	// filesMu orders an upload's record and blob against retention's
	// removal of blobs no record names (uploadretention.go).
	filesMu sync.Mutex

	rootfs   RootFS              // how a view becomes a sandbox's root
	layers   *layers.Snapshotter // layer views, commits, leases and GC
	layerDir *layers.Dir         // where layers are stored, unless Config.LayerStorage is set

	registryImport  RegistryImporter
	onDeleted       []func(ctx context.Context, account, id string) // OnImageDeleted; under mu
	storedElsewhere []func(account string) int64                    // AddStoredBytes; under mu
	ckpts           checkpointSet                                   // checkpoint_image.go
	freedElsewhere  []func(gone map[string]bool) (int, int64)       // AddFreedBytes; under mu
	nets            *netns.Manager
	egressDef       egressDefaults
	egressMu        sync.Mutex
	egressOn        map[string]*egress.Guard // network name → the policy its last run left on it

	warm    *warmPool
	initBin string
	// coldInit, if set, is the C init cold batch runs start (see execCold).
	coldInit string

	previews previewHub // exposed ports of running instances (preview.go)

	gate runtimeGate // who may use which runtime
	ids  *idAlloc    // host id ranges of runc and crun sandboxes
	// removeRunDir deletes a finished run's directory (os.RemoveAll; a
	// hook in tests).
	removeRunDir func(dir string) error
	// beforeExec, if set (tests), runs before the runtime starts a process
	// exec'd into operation op.
	beforeExec    func(op string)
	bootAllowance time.Duration // see the constant
	// beforeBoot, if set (tests), runs before a run's sandbox is booted
	// or taken, after its timeout's clock is set.
	beforeBoot func(op string)
	// freshened, if set (tests), runs once a continued sandbox's init has
	// answered whether it is fresh, before the answer is seen.
	freshened func()
	// unmountRoot, if set, unmounts a run's root filesystem instead of
	// e.rootfs.Unmount (a hook in tests).
	unmountRoot func(merged string) error

	events *eventHub
	cl     *cluster // nil on a single node
	// ctx is the engine's lifetime: background work (warm boots, squashes,
	// exec'd processes) runs under it, and Close cancels it first, so
	// Close waits only for work that is winding down.
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
	closed chan struct{}
}

// New opens (or creates) the store under cfg.Home, recovers from any earlier
// crash, and returns a ready Engine.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Home == "" {
		return nil, errors.New("engine: Home is required")
	}
	if cfg.Runtime == "" {
		cfg.Runtime = "runsc"
	}
	if cfg.MaxTimeout <= 0 {
		cfg.MaxTimeout = 3600
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = 60
	}
	if cfg.SquashDepth <= 0 {
		cfg.SquashDepth = 64
	}
	if cfg.MaxLayerBytes <= 0 {
		cfg.MaxLayerBytes = 10 << 30
	}
	if cfg.MaxConcurrentOps <= 0 {
		cfg.MaxConcurrentOps = 64
	}
	if cfg.MemoryBudget <= 0 {
		cfg.MemoryBudget = hostMemory() / 4 * 3
	}
	// Memory, not the CPU count, bounds how many runs execute at once: the
	// budget admits them by their limits and overheads, and CPU is shared
	// by weight. The slots only bound the host processes of many small
	// runs, at slotMemory each.
	cpuSlots := max(8, 4*goruntime.NumCPU())
	if cfg.Slots <= 0 {
		cfg.Slots = max(cpuSlots, int(cfg.MemoryBudget/slotMemory))
	}
	if cfg.DefaultMemoryBytes <= 0 {
		// As many runs at the default as the old CPU-based count fit,
		// overheads included.
		cfg.DefaultMemoryBytes = min(4<<30, cfg.MemoryBudget/int64(min(cfg.Slots, cpuSlots))-runOverhead)
	}
	cfg.DefaultMemoryBytes = min(max(cfg.DefaultMemoryBytes, 64<<20), cfg.MemoryBudget)
	if cfg.MaxSubprocesses <= 0 {
		cfg.MaxSubprocesses = 16
	}
	if cfg.MaxAccountSubprocesses <= 0 {
		cfg.MaxAccountSubprocesses = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.WarmPerImage == 0 {
		cfg.WarmPerImage = 2
	}
	if cfg.WarmMax <= 0 {
		cfg.WarmMax = 8
	}
	if cfg.WarmIdle <= 0 {
		cfg.WarmIdle = 2 * time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Retention.OperationTTL == 0 {
		cfg.Retention.OperationTTL = DefaultOperationTTL
	}
	if cfg.Retention.UploadTTL == 0 {
		cfg.Retention.UploadTTL = DefaultUploadTTL
	}
	if cfg.GCInterval == 0 {
		cfg.GCInterval = DefaultGCInterval
	}
	allow, err := netns.ParseAllow(cfg.NetAllow)
	if err != nil {
		return nil, fmt.Errorf("%w: fix --net-allow", err)
	}
	egressDef, err := parseEgressDefaults(cfg.EgressAllow, cfg.EgressDeny, cfg.EgressDNS)
	if err != nil {
		return nil, err
	}
	home, err := filepath.Abs(cfg.Home)
	if err != nil {
		return nil, err
	}
	cfg.Home = home
	for _, d := range []string{"layers", "blobs/sha256", "run", "runtime", "tmp"} {
		if err := os.MkdirAll(filepath.Join(home, d), 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	gate, err := newRuntimeGate(cfg)
	if err != nil {
		return nil, err
	}
	// Opening the layer directory also removes what a crash left staged or
	// half-deleted.
	var layerDir *layers.Dir
	layerStorage := cfg.LayerStorage
	if layerStorage == nil {
		if layerDir, err = layers.NewDir(filepath.Join(home, "layers"), filepath.Join(home, "trash")); err != nil {
			return nil, fmt.Errorf("layer store: %w", err)
		}
		layerStorage = layerDir
	}
	st := cfg.Metadata
	if st == nil {
		if st, err = store.Open(ctx, filepath.Join(home, "arbor.db")); err != nil {
			return nil, err
		}
	}
	life, stop := context.WithCancel(context.Background())
	e := &Engine{
		ctx:           life,
		stop:          stop,
		cfg:           cfg,
		log:           cfg.Logger,
		st:            st,
		runtimes:      map[string]runtime.Runtime{},
		queue:         newAdmission(cfg.Slots, cfg.MemoryBudget).withOverhead(runOverhead),
		images:        map[string]*imageNode{},
		leased:        map[string]int{},
		leases:        map[string]*imageLease{},
		layers:        layers.New(layerStorage, filepath.Join(home, "tmp"), cfg.Logger),
		layerDir:      layerDir,
		active:        map[string]*activeOp{},
		squashing:     map[string]bool{},
		events:        newEventHub(st, cfg.Logger),
		nets:          netns.NewManager(netns.Tag(home), allow...),
		egressDef:     egressDef,
		egressOn:      map[string]*egress.Guard{},
		closed:        make(chan struct{}),
		ids:           newIDAlloc(),
		removeRunDir:  os.RemoveAll,
		bootAllowance: bootAllowance,
		gate:          gate,
	}
	e.nets.OnRelease(e.dropEgress)
	if cfg.Cluster != nil {
		e.cl = newCluster(e, *cfg.Cluster)
	}
	if e.rootfs = cfg.RootFS; e.rootfs == nil {
		e.rootfs = overlayRoot{}
	}
	if cfg.Runtimes != nil {
		if cfg.Runtimes[cfg.Runtime] == nil {
			st.Close()
			return nil, fmt.Errorf("engine: runtime %q is not among Config.Runtimes", cfg.Runtime)
		}
		maps.Copy(e.runtimes, cfg.Runtimes)
	}
	for _, kind := range []string{"runsc", "runc", "crun"} {
		if cfg.Runtimes != nil {
			break
		}
		rt, err := runtime.NewOCI(kind, cfg.RuntimePaths[kind], filepath.Join(home, "runtime", kind))
		if err != nil {
			if kind == cfg.Runtime {
				st.Close()
				return nil, err
			}
			continue
		}
		e.runtimes[kind] = rt
	}
	if err := e.recover(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("recovery: %w", err)
	}
	if err := e.loadCheckpoints(); err != nil {
		st.Close()
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	// The static init runs first in every sandbox, cold and warm.
	if cfg.Runtimes != nil {
		e.cfg.WarmPerImage = -1 // the pool boots through the init
	} else if e.initBin = initproc.FindBinary(cfg.InitBinary); e.initBin == "" {
		e.log.Warn("no static init: warm sandboxes off, and a cold run's command is its sandbox's PID 1", "reason", e.warmOffReason())
	}
	if e.initBin != "" {
		if e.coldInit = initproc.FindColdInit(cfg.ColdInit, e.initBin); e.coldInit != "" {
			e.log.Info("cold batch runs start the C init", "path", e.coldInit)
		} else {
			e.log.Info("no C init: cold batch runs start the Go init", "path", e.initBin)
		}
	}
	for r := range e.runtimes {
		if r != "runsc" && e.gate.any(r) {
			if err := e.prepareSharedKernel(); err != nil {
				st.Close()
				return nil, err
			}
			if _, kernel := e.rootfs.(overlayRoot); kernel {
				// A burst's worth of id ranges with their namespaces, made
				// before the first runs need them (idAlloc.prefill).
				e.wg.Add(1)
				go func() {
					defer e.wg.Done()
					e.ids.prefill(e.ctx, min(e.cfg.Slots, max(8, 4*goruntime.NumCPU())))
				}()
			}
			break
		}
	}
	e.warm = e.newWarmPool()
	e.startRetention()
	if e.cl != nil {
		if err := e.cl.start(); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// Store exposes the metadata store (for the composition root and tests).
func (e *Engine) Store() store.Metadata { return e.st }

// Home returns the engine's home directory.
func (e *Engine) Home() string { return e.cfg.Home }

// DefaultRuntime returns the default runtime kind.
func (e *Engine) DefaultRuntime() string { return e.cfg.Runtime }

// Runtimes lists the available runtime kinds.
func (e *Engine) Runtimes() []string {
	var out []string
	for k := range e.runtimes {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Limits returns the limits reported by whoami.
func (e *Engine) Limits() map[string]int64 {
	return map[string]int64{
		"instance_max_timeout":      int64(e.cfg.MaxTimeout),
		"images_import_max_timeout": int64(e.cfg.MaxTimeout),
		"max_concurrent_operations": int64(e.cfg.MaxConcurrentOps),
		"max_storage_bytes":         e.cfg.MaxStorageBytes,
		"max_layer_bytes":           e.cfg.MaxLayerBytes,
		"max_memory_bytes":          e.cfg.MemoryBudget,
		"default_memory_bytes":      e.cfg.DefaultMemoryBytes,
		"max_subprocesses":          int64(e.cfg.MaxSubprocesses),
		"max_account_subprocesses":  int64(e.cfg.MaxAccountSubprocesses),
	}
}

// Close cancels the engine's lifetime context and running operations,
// waits for its goroutines and the warm pool (which destroys its idle
// sandboxes), and closes the store.
func (e *Engine) Close() error {
	select {
	case <-e.closed:
		return nil
	default:
	}
	close(e.closed)
	e.stop()
	e.mu.Lock()
	for _, a := range e.active {
		a.cancel(errShutdown)
	}
	e.mu.Unlock()
	e.wg.Wait()
	e.warm.Close()
	for _, rt := range e.runtimes {
		// Also unmounts runsc's network-namespace mount in its state dir.
		if err := rt.Close(context.Background()); err != nil {
			e.log.Warn("close runtime", "runtime", rt.Name(), "err", err)
		}
	}
	e.nets.Close()
	e.ids.close()
	return e.st.Close()
}

// recover brings the home back to a consistent state after a crash: stale
// sandboxes and mounts are removed, unfinished operations fail with a reason,
// and layers no image references are collected.
func (e *Engine) recover(ctx context.Context) error {
	for _, rt := range e.runtimes {
		// Also unmounts runsc's network-namespace mount left by a crash.
		if err := rt.Cleanup(ctx); err != nil {
			e.log.Warn("clean up stale sandboxes", "runtime", rt.Name(), "err", err)
		}
	}
	e.nets.Cleanup(ctx)
	egress.Cleanup(ctx, egressTablePrefix(netns.Tag(e.cfg.Home)))
	runDir := filepath.Join(e.cfg.Home, "run")
	ents, err := os.ReadDir(runDir)
	if err != nil {
		e.log.Warn("list stale run dirs", "dir", runDir, "err", err)
	}
	for _, ent := range ents {
		d := filepath.Join(runDir, ent.Name())
		if err := e.rootfs.Unmount(filepath.Join(d, "merged")); err != nil {
			e.log.Warn("unmount stale run root", "dir", d, "err", err)
		}
		if err := os.RemoveAll(d); err != nil {
			e.log.Warn("remove stale run dir", "dir", d, "err", err)
		}
	}
	tmp := filepath.Join(e.cfg.Home, "tmp")
	if err := os.RemoveAll(tmp); err != nil {
		e.log.Warn("remove stale uploads", "dir", tmp, "err", err)
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	var ops []store.Operation
	if e.cl != nil {
		// Only this node's own: workers' runs are the queue's (the reaper).
		ops, err = e.cl.store.UnfinishedLocal(ctx, e.cl.cfg.Node)
	} else {
		ops, err = e.st.UnfinishedOperations(ctx)
	}
	if err != nil {
		return err
	}
	for _, o := range ops {
		e.log.Info("failing operation interrupted by restart", "operation", o.UUID)
		if err := e.finishInterrupted(ctx, o); err != nil {
			return err
		}
	}
	if err := e.loadImages(ctx); err != nil {
		return err
	}
	// Staging leftovers of interrupted commits and squashes went when
	// layers.NewDir opened the store.
	_, err = e.CollectGarbage(ctx)
	return err
}

func newID() string { return uuid.NewString() }

func newLayerID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand crashes the program instead (Go 1.24+)
	return hex.EncodeToString(b[:])
}

func (e *Engine) layerPath(id string) string { return e.layerDir.Path(id) }

// accountOf returns an error when a is empty: every call is account-scoped.
func checkAccount(a string) error {
	if a == "" {
		return errdefs.Unauthorized("no account")
	}
	return nil
}
