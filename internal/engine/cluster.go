package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/store"
)

// ClusterConfig makes the engine one node of a cluster: API nodes and
// workers sharing one PostgreSQL database (Config.Metadata) and one bucket
// (Config.LayerStorage), issue 17.
//
// On every node of a cluster, Spawn only validates a run and queues it with
// its request; workers claim queued runs through the store's [store.Queue]
// when their admission has room, and run them exactly as a single node
// does, under a lease: the start and the outcome are fenced by it, so a
// worker that lost its lease kills the sandbox and publishes nothing.
// Imports and forks run on the node that received them (an import needs
// only the bucket; a fork needs the sandbox, which its node runs). Events
// are rows; a node tells the others its logs grew with one notification
// per operation per flush (a wake-up, never the data), and followers on
// other nodes read the rows, polling when notifications stop.
type ClusterConfig struct {
	Store store.Cluster
	// Node is this node's ID, and its worker ID when Worker is set.
	Node string
	// Worker: this node claims and runs queued runs (roles worker and all).
	Worker bool
	// Address is where other nodes reach this node's HTTP listener
	// (recorded with its worker row).
	Address string
	// LeaseTTL is the queue's lease (store.QueueConfig.LeaseTTL; default
	// store.DefaultLeaseTTL): workers heartbeat every third of it.
	LeaseTTL time.Duration
	// ReapEvery is how often this node runs the queue's reaper (default a
	// fifth of LeaseTTL).
	ReapEvery time.Duration
	// PollEvery is the fallback of followers of another node's operation
	// while notifications arrive (default 1 s; a quarter of it while the
	// listening connection is down).
	PollEvery time.Duration
	// Files keeps uploaded files' contents where every node finds them
	// (the bucket); nil: uploads stay on the node that received them.
	Files FileBlobs
	// Checkpoints keeps memory checkpoints where every worker finds them
	// (the bucket, see checkpoint_cluster.go); nil: a checkpoint restores
	// only on the worker that made it.
	Checkpoints CheckpointBlobs
}

// FileBlobs keeps uploaded files' contents in shared storage by sha256.
type FileBlobs interface {
	// PutFile stores the file at path as content sha (a no-op if stored).
	PutFile(ctx context.Context, sha, path string) error
	// GetFile writes content sha to dst, checked against sha; NotFound if
	// it is not stored.
	GetFile(ctx context.Context, sha, dst string) error
	// HoldFile keeps content sha from collection (on every node) until
	// release: an upload holds it from its lookup to its record.
	HoldFile(ctx context.Context, sha string) (release func(), err error)
	// CollectFiles deletes the stored contents no file record names and no
	// node holds, stored longer than the storage's grace period ago, one
	// pass at a time across the nodes, and returns how many and their
	// bytes; dry deletes nothing and counts those in unnamed as named by no
	// record; only considers those in unnamed alone.
	CollectFiles(ctx context.Context, dry bool, unnamed []string, only bool) (n int, bytes int64, err error)
}

// errLeaseLost cancels a run whose worker lost its lease.
var errLeaseLost = errors.New("this worker lost the operation's lease")

// cluster is a node's part of the cluster.
type cluster struct {
	e     *Engine
	cfg   ClusterConfig
	store store.Cluster

	mu      sync.Mutex
	held    map[string]store.Lease // operations this worker runs
	dirty   map[string]bool        // operations whose log grew since the last flush
	watches map[string]*watchers   // operations followed here, woken at their next notification
	kick    chan struct{}          // wakes the notifier
	work    chan struct{}          // wakes the claim loop
	listen  atomic.Bool            // the listening connection is up
	stopped chan struct{}
	ckptMu  sync.Mutex // one checkpoint fetch at a time (fetchCheckpoint)
}

func newCluster(e *Engine, cfg ClusterConfig) *cluster {
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = store.DefaultLeaseTTL
	}
	if cfg.ReapEvery <= 0 {
		cfg.ReapEvery = cfg.LeaseTTL / 5
	}
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = time.Second
	}
	return &cluster{e: e, cfg: cfg, store: cfg.Store, held: map[string]store.Lease{}, dirty: map[string]bool{},
		watches: map[string]*watchers{}, kick: make(chan struct{}, 1), work: make(chan struct{}, 1), stopped: make(chan struct{})}
}

// start runs the node's background loops under the engine's lifetime.
func (c *cluster) start() error {
	e := c.e
	e.events.notify = c.grew
	if c.cfg.Worker {
		slots := e.cfg.Slots
		if err := c.store.RegisterWorker(e.ctx, store.Worker{ID: c.cfg.Node, Slots: slots}); err != nil {
			return fmt.Errorf("register worker %s: %w", c.cfg.Node, err)
		}
		if err := c.store.SetAddress(e.ctx, c.cfg.Node, c.cfg.Address); err != nil {
			return fmt.Errorf("register worker %s: %w", c.cfg.Node, err)
		}
		c.loop(c.heartbeat)
		c.loop(c.claimLoop)
	}
	if c.cfg.Checkpoints != nil {
		// Whichever node deletes an image frees its checkpoint's space in
		// the bucket (the worker that made it drops its own copy only when
		// it deletes the image itself, or at its restart).
		e.OnImageDeleted(func(ctx context.Context, _, id string) { e.unshareCheckpoint(ctx, id) })
	}
	c.loop(c.notifier)
	c.loop(c.listener)
	c.loop(c.reaper)
	return nil
}

func (c *cluster) loop(f func(ctx context.Context)) {
	c.e.wg.Add(1)
	go func() {
		defer c.e.wg.Done()
		f(c.e.ctx)
	}()
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// grew notes that op's log grew here; the notifier tells the other nodes.
func (c *cluster) grew(op string) {
	c.mu.Lock()
	c.dirty[op] = true
	c.mu.Unlock()
	poke(c.kick)
	c.wake(op) // followers on this node of an operation run elsewhere
}

// notifier sends one notification per operation whose log grew, per
// flush: while one is on its way the next batch gathers.
func (c *cluster) notifier(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		}
		c.mu.Lock()
		ops := make([]string, 0, len(c.dirty))
		for op := range c.dirty {
			ops = append(ops, op)
		}
		clear(c.dirty)
		c.mu.Unlock()
		if err := c.store.Notify(context.WithoutCancel(ctx), store.ChannelEvents, ops); err != nil {
			c.e.log.Warn("notify other nodes of events", "operations", len(ops), "err", err)
		}
	}
}

// listener holds the node's listening connection, reconnecting with a
// pause when it drops; followers poll faster meanwhile.
func (c *cluster) listener(ctx context.Context) {
	for ctx.Err() == nil {
		err := c.store.Listen(ctx, []string{store.ChannelEvents, store.ChannelQueue, store.ChannelCancel}, func() {
			c.listen.Store(true)
			c.wakeAll() // what was missed while down is read now
		}, func(channel, payload string) {
			switch channel {
			case store.ChannelEvents:
				c.wake(payload)
			case store.ChannelQueue:
				poke(c.work)
			case store.ChannelCancel:
				c.cancelLocal(payload)
			}
		})
		c.listen.Store(false)
		if ctx.Err() != nil {
			return
		}
		c.e.log.Warn("cluster notifications: connection lost; polling until it is back", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// watchers are the followers of one operation: ch is closed at its next
// notification; n counts those not yet released.
type watchers struct {
	ch chan struct{}
	n  int
}

// watch returns a channel closed at op's next notification, and a release
// for when the caller no longer waits on it: an operation that will never
// be notified again (finished before it was watched) must not keep an
// entry.
func (c *cluster) watch(op string) (<-chan struct{}, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.watches[op]
	if w == nil {
		w = &watchers{ch: make(chan struct{})}
		c.watches[op] = w
	}
	w.n++
	return w.ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.watches[op] == w { // not woken since
			if w.n--; w.n == 0 {
				delete(c.watches, op)
			}
		}
	}
}

func (c *cluster) wake(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.watches[op]; w != nil {
		close(w.ch)
		delete(c.watches, op)
	}
}

func (c *cluster) wakeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for op, w := range c.watches {
		close(w.ch)
		delete(c.watches, op)
	}
}

// await waits for a follower of an operation run elsewhere: its wake-up,
// the polling fallback, or its keepalive.
func (c *cluster) await(ctx context.Context, wake <-chan struct{}, o FollowOptions) error {
	poll := c.cfg.PollEvery
	if !c.listen.Load() {
		poll /= 4
	}
	t := time.NewTimer(poll)
	defer t.Stop()
	var tick <-chan time.Time
	if o.Keepalive > 0 && o.OnKeepalive != nil {
		k := time.NewTimer(o.Keepalive)
		defer k.Stop()
		tick = k.C
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-wake:
	case <-t.C:
	case <-tick:
		return o.OnKeepalive()
	}
	return nil
}

// spawn queues a validated run for a worker: its request is stored with
// the operation, the image pinned by UUID (a tag moved meanwhile must not
// change what runs).
func (c *cluster) spawn(ctx context.Context, account string, req SpawnRequest, p *runPlan) (string, oplog.InstanceMetadata, error) {
	e := c.e
	select {
	case <-e.closed:
		return "", oplog.InstanceMetadata{}, errdefs.Unavailable("daemon is shutting down")
	default:
	}
	if err := e.admitting(); err != nil {
		return "", oplog.InstanceMetadata{}, err
	}
	req.Image = p.image.UUID
	raw, err := json.Marshal(req)
	if err != nil {
		return "", oplog.InstanceMetadata{}, fmt.Errorf("queue the run's request: %w", err)
	}
	meta, _ := json.Marshal(redactMeta(p.meta))
	o := store.Operation{UUID: newID(), Account: account, Kind: oplog.KindInstance, Status: oplog.StatusPending,
		CreatedAt: e.now(), ImageUUID: p.image.UUID, Metadata: string(meta)}
	if err := c.store.InsertQueued(ctx, o, e.cfg.MaxConcurrentOps, raw); err != nil {
		return "", oplog.InstanceMetadata{}, err
	}
	if c.cfg.Worker {
		poke(c.work)
	}
	return o.UUID, redactMeta(p.meta), nil
}

// room reports whether this worker's admission would admit a run at the
// default memory limit now, with nobody waiting.
func (c *cluster) room() bool {
	a := c.e.queue
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.queue) == 0 && a.fits(a.charge(c.e.cfg.DefaultMemoryBytes))
}

// claimPoll is how often an idle worker asks for work without a wake-up.
const claimPoll = 500 * time.Millisecond

// claimLoop claims queued runs while admission has room.
func (c *cluster) claimLoop(ctx context.Context) {
	for ctx.Err() == nil {
		if c.e.admitting() == nil && c.room() {
			l, ok, err := c.store.Claim(ctx, c.cfg.Node)
			if errors.Is(err, errdefs.ErrFailedPrecondition) {
				// Its heartbeat expired (a long pause): register again.
				err = c.store.RegisterWorker(ctx, store.Worker{ID: c.cfg.Node, Slots: c.e.cfg.Slots})
			}
			if err != nil && ctx.Err() == nil {
				c.e.log.Warn("claim queued work", "worker", c.cfg.Node, "err", err)
			}
			if ok {
				c.runClaimed(ctx, l)
				continue // perhaps more
			}
		}
		wait := claimPoll
		if !c.room() {
			wait = 50 * time.Millisecond // a slot frees without a wake-up
		}
		select {
		case <-ctx.Done():
		case <-c.work:
		case <-time.After(wait):
		}
	}
}

// runClaimed plans the claimed run from its stored request and starts it
// as Spawn would on a single node.
func (c *cluster) runClaimed(ctx context.Context, l store.Lease) {
	e := c.e
	c.mu.Lock()
	c.held[l.Op] = l
	c.mu.Unlock()
	row, next := l.Row, l.LastEvent // an earlier claim may have logged some
	o := e.newOp(row)
	o.lease, o.queue = &l, c.store
	p, err := c.plan(ctx, l)
	var lease *imageLease
	if err == nil {
		p.op = row.UUID
		lease, err = e.leaseImage(p.image.UUID, row.UUID, true)
	}
	if err != nil {
		e.launch(o, next+1, func(context.Context, *op) outcome { return failed(err.Error()) })
		return
	}
	p.ticket = e.queue.enqueue(row.UUID, p.memory)
	e.launch(o, next+1, func(ctx context.Context, o *op) outcome { defer lease.Release(); return e.execute(ctx, o, p) })
	e.log.Info("claimed", "operation", l.Op, "worker", l.Worker, "epoch", l.Epoch, "attempt", l.Attempt)
	if ids, err := c.store.CancelRequested(ctx, []string{l.Op}); err == nil && len(ids) > 0 {
		c.cancelLocal(l.Op) // asked before this claim made it ours
	}
}

// plan rebuilds the run's plan from its queued request, on this worker:
// its image (possibly made on another node, possibly deleted since it was
// queued: the queued run keeps it, as a lease does on one node) and the
// files it places, fetched from shared storage when missing here.
func (c *cluster) plan(ctx context.Context, l store.Lease) (*runPlan, error) {
	e := c.e
	if l.Request == nil {
		return nil, errdefs.NotFound("operation %s has no queued request", l.Op)
	}
	var req SpawnRequest
	if err := json.Unmarshal(l.Request, &req); err != nil {
		return nil, fmt.Errorf("queued request of operation %s: %w", l.Op, err)
	}
	if err := e.syncImage(ctx, req.Image); err != nil {
		return nil, err
	}
	p, err := e.plan(withQueued(ctx), l.Account, req)
	if err != nil {
		return nil, err
	}
	for _, f := range p.files {
		if err := e.ensureBlob(ctx, f.sha); err != nil {
			return nil, err
		}
	}
	if !p.meta.Disposable {
		if err := e.checkDisk(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

type queuedKey struct{}

// withQueued marks ctx as planning a queued run: its image is resolved by
// UUID even if deleted since (the run was admitted while it was live).
func withQueued(ctx context.Context) context.Context {
	return context.WithValue(ctx, queuedKey{}, true)
}

func isQueued(ctx context.Context) bool { v, _ := ctx.Value(queuedKey{}).(bool); return v }

// released forgets a lease once its operation's work has returned.
func (c *cluster) released(op string) {
	c.mu.Lock()
	delete(c.held, op)
	c.mu.Unlock()
	poke(c.work) // a slot is free
}

// heartbeat renews this worker and its leases every third of the lease;
// a lease not renewed is lost: its run is killed and publishes nothing.
// A worker that cannot reach the database for a whole lease stops its
// runs itself, for by then the reaper may have failed them.
func (c *cluster) heartbeat(ctx context.Context) {
	every := c.cfg.LeaseTTL / 3
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		c.mu.Lock()
		held := make([]store.Lease, 0, len(c.held))
		for _, l := range c.held {
			held = append(held, l)
		}
		c.mu.Unlock()
		kept, err := c.store.Heartbeat(ctx, c.cfg.Node, held)
		if errdefs.IsNotFound(err) {
			err = c.store.RegisterWorker(ctx, store.Worker{ID: c.cfg.Node, Slots: c.e.cfg.Slots})
			if err == nil {
				err = c.store.SetAddress(ctx, c.cfg.Node, c.cfg.Address)
			}
			kept = nil // a new registration holds no leases
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.e.log.Warn("worker heartbeat", "worker", c.cfg.Node, "err", err)
			if time.Since(lastOK) < c.cfg.LeaseTTL-every/2 {
				continue
			}
			kept = nil
		} else {
			lastOK = time.Now()
		}
		renewed := map[string]bool{}
		for _, l := range kept {
			renewed[l.Op] = true
		}
		var ids []string
		for _, l := range held {
			if !renewed[l.Op] {
				c.lost(l)
				continue
			}
			ids = append(ids, l.Op)
		}
		if asked, err := c.store.CancelRequested(ctx, ids); err == nil {
			for _, op := range asked {
				c.cancelLocal(op)
			}
		}
	}
}

// lost stops a run whose lease is gone: its sandbox is killed, its log
// closed (nothing more of it is stored), and its outcome will be refused.
func (c *cluster) lost(l store.Lease) {
	e := c.e
	c.mu.Lock()
	delete(c.held, l.Op)
	c.mu.Unlock()
	e.log.Warn("lease lost: stopping the run", "operation", l.Op, "worker", l.Worker, "epoch", l.Epoch)
	e.mu.Lock()
	a := e.active[l.Op]
	e.mu.Unlock()
	if a != nil {
		e.events.close(l.Op)
		a.cancel(errLeaseLost)
	}
}

// cancelLocal cancels op if it runs here.
func (c *cluster) cancelLocal(op string) {
	e := c.e
	e.mu.Lock()
	a := e.active[op]
	e.mu.Unlock()
	if a != nil {
		a.cancel(errCancelled)
	}
}

// cancel cancels op, which does not run on this node: a PENDING one ends
// here; one a worker holds is cancelled there (through its row and a
// notification).
func (c *cluster) cancel(ctx context.Context, o store.Operation) error {
	e := c.e
	n := e.newOp(o)
	data, _ := json.Marshal(oplog.EventDataCompletion{Status: oplog.StatusCancelled, DurationMs: time.Since(o.CreatedAt).Milliseconds(),
		Error: ptrTo("cancelled by request")})
	now := time.Now()
	done, err := c.store.CancelPending(ctx, store.Outcome{
		Operation: store.Operation{UUID: o.UUID, Account: o.Account, Status: oplog.StatusCancelled, Error: "cancelled by request",
			FinishedAt: n.finishedAt(now), Metadata: o.Metadata},
		Completion: store.Event{ID: -1, TS: now, Type: oplog.EventCompletion, Data: string(data)}})
	if err != nil {
		return err
	}
	if done {
		c.grew(o.UUID)
		return nil
	}
	inflight, err := c.store.RequestCancel(ctx, o.UUID)
	if err != nil {
		return err
	}
	if !inflight {
		return errdefs.Conflict("operation is not cancellable: it already finished")
	}
	c.cancelLocal(o.UUID)
	return c.store.Notify(ctx, store.ChannelCancel, []string{o.UUID})
}

func ptrTo[T any](v T) *T { return &v }

// reaper ends the expired leases of dead workers, on every node (the
// reap is idempotent and needs no leader).
func (c *cluster) reaper(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.cfg.ReapEvery):
		}
		requeued, failedOps, err := c.store.Reap(ctx, func(o store.Operation) store.Event {
			msg := o.Error
			data, _ := json.Marshal(oplog.EventDataCompletion{Status: o.Status, Error: &msg, DurationMs: time.Since(o.CreatedAt).Milliseconds()})
			return store.Event{TS: time.Now(), Type: oplog.EventCompletion, Data: string(data)}
		})
		if err != nil {
			if ctx.Err() == nil {
				c.e.log.Warn("reap expired leases", "err", err)
			}
			continue
		}
		for _, op := range failedOps {
			c.e.log.Warn("operation failed: its worker stopped renewing its lease", "operation", op)
			c.grew(op)
		}
		if len(requeued) > 0 {
			c.e.log.Info("requeued operations of a lost worker", "operations", len(requeued))
			poke(c.work)
			_ = c.store.Notify(ctx, store.ChannelQueue, []string{""})
		}
	}
}

// syncImage adds image u and its ancestors, made on other nodes, to this
// node's image graph.
func (e *Engine) syncImage(ctx context.Context, u string) error {
	if e.cl == nil || u == "" || !IsUUID(u) {
		return nil
	}
	var rows []store.Image
	for u != "" {
		e.mu.Lock()
		_, ok := e.images[u]
		e.mu.Unlock()
		if ok {
			break
		}
		im, err := e.st.ImageAny(ctx, u)
		if err != nil {
			return err
		}
		rows = append(rows, im)
		u = im.MountParent()
	}
	if len(rows) > 0 {
		e.addImages(rows)
	}
	return nil
}

// ensureBlob fetches uploaded content sha from shared storage unless this
// node has it.
func (e *Engine) ensureBlob(ctx context.Context, sha string) error {
	dst := e.blobPath(sha)
	if _, err := os.Stat(dst); err == nil || e.cl == nil || e.cl.cfg.Files == nil {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Join(e.cfg.Home, "tmp"), "fetch-*")
	if err != nil {
		return err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if err := e.cl.cfg.Files.GetFile(ctx, sha, tmp.Name()); err != nil {
		return fmt.Errorf("uploaded file %s: %w", sha, err)
	}
	return os.Rename(tmp.Name(), dst)
}

// shareBlob stores uploaded content sha in shared storage, before its
// record makes it visible on any node, and holds it there from collection
// until release (after the record is written).
func (e *Engine) shareBlob(ctx context.Context, sha string) (release func(), err error) {
	if e.cl == nil || e.cl.cfg.Files == nil {
		return func() {}, nil
	}
	release, err = e.cl.cfg.Files.HoldFile(ctx, sha)
	if err != nil {
		return nil, err
	}
	if err := e.cl.cfg.Files.PutFile(ctx, sha, e.blobPath(sha)); err != nil {
		release()
		return nil, fmt.Errorf("store the upload in shared storage: %w", err)
	}
	return release, nil
}

// Placement says where operation op of account runs in a cluster: the
// advertised address of the worker holding it, or "" when it is not in
// flight on another node (this node answers for it).
func (e *Engine) Placement(ctx context.Context, account, op string) (string, error) {
	if e.cl == nil {
		return "", nil
	}
	if _, err := e.st.Operation(ctx, account, op); err != nil {
		return "", err
	}
	return e.placement(ctx, op)
}

// PreviewPlacement is Placement for a port preview's request, which may
// carry no account (a signed link): the worker running the instance
// checks the link, or the token, itself. "" for an operation that is not
// in flight on another node, or unknown.
func (e *Engine) PreviewPlacement(ctx context.Context, op string) (string, error) {
	if e.cl == nil || !IsUUID(op) {
		return "", nil
	}
	// Without waiting for a claim: a preview request carries no login yet,
	// and a queued run has no ports to show.
	addr, err := e.placementOf(ctx, strings.ToLower(op), false)
	if errdefs.IsNotFound(err) {
		return "", nil
	}
	return addr, err
}

func (e *Engine) placement(ctx context.Context, op string) (string, error) {
	return e.placementOf(ctx, op, true)
}

// placementOf is the address of the node that runs op ("": this one or
// none); with wait, a queued op's is that of the worker that claims it.
func (e *Engine) placementOf(ctx context.Context, op string, wait bool) (string, error) {
	e.mu.Lock()
	_, here := e.active[op]
	e.mu.Unlock()
	if here {
		return "", nil
	}
	p, err := e.cl.store.Placement(ctx, op)
	if err == nil && wait {
		p, err = e.cl.awaitClaim(ctx, op, p) // queued: the worker that claims it answers
	}
	owner := p.Worker
	if p.Node != "" && !oplog.IsTerminal(p.Status) {
		owner = p.Node // a fork runs on its parent's worker
	}
	if err != nil || owner == "" || owner == e.cl.cfg.Node {
		return "", err
	}
	if p.Address == "" {
		return "", errdefs.Unavailable("operation %s runs on node %s, which advertises no address: start it with --advertise", op, owner)
	}
	return p.Address, nil
}

// ClusterSecret is the secret nodes of this cluster authenticate to each
// other with ("" on a single node).
func (e *Engine) ClusterSecret(ctx context.Context) (string, error) {
	if e.cl == nil {
		return "", nil
	}
	return e.cl.store.Secret(ctx)
}
