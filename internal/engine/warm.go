package engine

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/arborsh/arbor/internal/initproc"
	"github.com/arborsh/arbor/internal/layers"
	"github.com/arborsh/arbor/internal/netns"
	"github.com/arborsh/arbor/internal/overlay"
	"github.com/arborsh/arbor/internal/runtime"
	"github.com/arborsh/arbor/internal/warmpool"
	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// Warm sandboxes: a pool of pre-booted sandboxes per hot image. A run takes
// one, starts its command with exec (about 0.05 s under runsc instead of a
// 0.3-0.5 s boot), and afterwards the sandbox is destroyed and its upper dir
// committed exactly as after a cold run. Everything fixed at boot is the
// pool key; everything else (command, env, cwd, user, stdin, files, output
// caps, file-size limit) is applied per run.

// warmKey is what must match between a warm sandbox and a run.
type warmKey struct {
	image, runtime, hostname string
	memory, pids             int64
	cpus                     float64
	network                  bool // the sandbox joins its own outbound-only netns at boot
}

// LogValue names the key in the pool's log lines.
func (k warmKey) LogValue() slog.Value {
	return slog.GroupValue(slog.String("image", k.image), slog.String("runtime", k.runtime))
}

func keyOf(p *runPlan, image string) warmKey {
	return warmKey{image: image, runtime: p.rt.Name(), hostname: p.meta.Hostname, memory: p.memory, pids: p.pids, cpus: p.cpus, network: p.network}
}

// warmBox is one idle pre-booted sandbox with its own fresh upper dir.
type warmBox struct {
	key                             warmKey
	cid, dir, upper, merged, bundle string
	release                         func()          // unpins the image's layers
	agent                           *initproc.Agent // talks to the serving init
	net                             *netns.Net      // its network, if key.network
	ids                             *runtime.IDMap  // its user namespace (runc, crun)

	// Continuing (continue.go): upper's state as last committed (nil: not
	// yet), what it held then, how many steps it served and the
	// RLIMIT_FSIZE its init holds (0: none yet).
	committed layers.Manifest
	track     *layers.Tracker // follows upper's changes, so a step's diff is O(change); nil: walk it
	base      int64
	steps     int
	fsize     int64
	// freshen, when not nil, is the init making the sandbox fresh after
	// its last step (continueStep): the result was reported without
	// waiting for it, and the next run waits for it (settle).
	freshen *freshening
}

// freshening is a sandbox's init making it fresh for the next step: err
// is set before done is closed. A sandbox the init could not make fresh
// leaves the pool at once (dropStale), whichever of the init's answer and
// keepBox's Put comes first: mu orders them.
type freshening struct {
	done chan struct{}
	err  error

	mu     sync.Mutex
	failed bool     // the init answered with an error
	pooled *warmKey // keepBox put the box in the pool under this key
}

// dropStale is the init's answer having been an error: the box leaves the
// pool, if it is there, and is destroyed.
func (e *Engine) dropStale(b *warmBox, f *freshening) {
	f.mu.Lock()
	f.failed = true
	k := f.pooled
	f.mu.Unlock()
	if k == nil {
		return // not pooled yet: keepBox sees failed
	}
	if _, ok := e.warm.Withdraw(*k, func(x *warmBox) bool { return x == b }); ok {
		e.log.Info("warm sandbox not continued", "sandbox", b.cid, "why", f.err)
		e.destroyWarm(b)
	} // else a run took it: settle destroys it
}

// pooled records that keepBox put b in the pool under k; false if its
// init had already failed to make it fresh (the caller withdraws it).
func (f *freshening) pooledUnder(k warmKey) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed {
		return false
	}
	f.pooled = &k
	return true
}

// settle waits for b's init to have made it fresh after its last step,
// if it was continued. false: the init could not (it said why, logged),
// and b has been destroyed.
func (e *Engine) settle(b *warmBox) bool {
	f := b.freshen
	if f == nil {
		return true
	}
	<-f.done // bounded: Continue gives up after continueWait
	b.freshen = nil
	if f.err != nil {
		e.log.Info("warm sandbox not continued", "sandbox", b.cid, "why", f.err)
		e.destroyWarm(b)
		return false
	}
	return true
}

// warmPool is the engine's pool: its policy (quiet time, boot waits,
// bounds, reaping) is internal/warmpool's, the mechanics of a sandbox
// (overlay mount, runtime boot, serving init) warmBooter's.
type warmPool = warmpool.Pool[warmKey, *warmBox]

// warmBooter boots and destroys the pool's sandboxes.
type warmBooter struct{ e *Engine }

func (w warmBooter) Boot(ctx context.Context, k warmKey) (*warmBox, error) {
	return w.e.newWarm(ctx, k)
}
func (warmBooter) Alive(b *warmBox) bool {
	if f := b.freshen; f != nil {
		select {
		case <-f.done:
			if f.err != nil {
				return false
			}
		default:
			return true // its init is talking: settle waits for it
		}
	}
	return b.agent.Alive()
}
func (w warmBooter) Destroy(b *warmBox) { w.e.destroyWarm(b) }

// newWarmPool starts the engine's pool under its lifetime context.
func (e *Engine) newWarmPool() *warmPool {
	return warmpool.New(e.ctx, warmBooter{e}, warmpool.Config[warmKey]{
		PerKey: max(e.cfg.WarmPerImage, 1), Max: e.cfg.WarmMax, Idle: e.cfg.WarmIdle, Quiet: quietGrace, Hold: continueHold,
		Class: func(k warmKey) string { return k.runtime }, Logger: e.log,
	})
}

// quietGrace is how long the pool waits after a run before it boots.
const quietGrace = warmpool.DefaultQuiet

// WarmStats reports the pool's state.
type WarmStats = warmpool.Stats

// WarmStats returns the pool's counters.
func (e *Engine) WarmStats() WarmStats { return e.warm.Stats() }

func (e *Engine) warmEnabled() bool { return e.initBin != "" && e.cfg.WarmPerImage > 0 }

// takeWarm returns an idle sandbox for k, or nil; it may wait for a boot in
// flight (see warmpool.Pool.Take).
func (e *Engine) takeWarm(ctx context.Context, k warmKey) *warmBox {
	if !e.warmEnabled() {
		return nil
	}
	for {
		b, ok := e.warm.Take(ctx, k)
		if !ok || e.settle(b) {
			return b
		}
		e.warm.Unusable() // settle destroyed it: the next Take counts
	}
}

// warmUp asks for n sandboxes for k, booted when the machine is quiet.
func (e *Engine) warmUp(k warmKey, n int) {
	if e.warmEnabled() {
		e.warm.Want(k, n)
	}
}

// runBegins and runEnds bracket a run's use of the machine; a run ending
// may make room for the boots waiting for quiet.
func (e *Engine) runBegins() { e.warm.RunBegins() }
func (e *Engine) runEnds()   { e.warm.RunEnds() }

func (e *Engine) newWarm(ctx context.Context, k warmKey) (*warmBox, error) {
	rt, ok := e.runtimes[k.runtime]
	if !ok {
		return nil, fmt.Errorf("runtime %s not available", k.runtime)
	}
	lowers, release, err := e.pinChain(k.image)
	if err != nil {
		return nil, err
	}
	id := "warm-" + newLayerID()[:16]
	b := &warmBox{key: k, cid: "arbor-" + id, dir: filepath.Join(e.cfg.Home, "run", id), release: release}
	b.upper, b.merged, b.bundle = filepath.Join(b.dir, "upper"), filepath.Join(b.dir, "merged"), filepath.Join(b.dir, "bundle")
	work := filepath.Join(b.dir, "work")
	fail := func(err error) (*warmBox, error) {
		e.removeBoxDir(b)
		if b.net != nil {
			e.nets.Release(b.net)
		}
		release()
		return nil, err
	}
	for _, d := range []string{b.upper, work, b.merged, b.bundle} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail(err)
		}
	}
	ids, free, err := e.mountRoot(rt, lowers, b.upper, work, b.merged)
	if err != nil {
		return fail(err)
	}
	b.ids = ids
	b.track = e.trackUpper(b.upper)
	b.release = func() { b.track.Close(); free(); release() } // called after unmount
	fail = func(err error) (*warmBox, error) {
		e.removeBoxDir(b)
		if b.net != nil {
			e.nets.Release(b.net)
		}
		b.release()
		return nil, err
	}
	if err := asSandboxRoot(ids, func() error { return runtime.EnsureTmp(b.merged) }); err != nil { // as a cold run does
		return fail(err)
	}
	netnsPath, usernsPath := "", ""
	if k.network {
		if b.net, err = e.createNet(ctx, ids); err != nil {
			return fail(fmt.Errorf("sandbox network: %w", err))
		}
		netnsPath, usernsPath = b.net.Path, b.net.UserNS
	}
	agent, pipes, err := initproc.NewAgentPipes()
	if err != nil {
		return fail(err)
	}
	err = rt.Boot(ctx, runtime.Spec{
		NetNS: netnsPath, UserNS: usernsPath,
		ID: b.cid, Bundle: b.bundle, Rootfs: b.merged, Args: []string{runtime.InitPath, initproc.Arg, "serve"},
		Env: []string{"PATH=" + defaultPath}, Cwd: "/", Hostname: k.hostname,
		MemoryBytes: k.memory, Pids: k.pids, CPUs: k.cpus, InitBinary: e.initBin, IDMap: ids,
		Stdin: pipes.Stdin, Stdout: pipes.Stdout, Checkpointable: true, // booted off the critical path: any run may fork
	})
	pipes.Close() // the sandbox has its copies
	if err != nil {
		agent.Close()
		return fail(err)
	}
	// Ready only once its init serves: until then a run that took it
	// would wait for the rest of its boot (see initproc.Agent.WaitReady).
	readyCtx, cancel := context.WithTimeout(ctx, initReadyTimeout)
	err = agent.WaitReady(readyCtx)
	cancel()
	if err != nil {
		if derr := rt.Destroy(context.WithoutCancel(ctx), b.cid); derr != nil {
			e.log.Warn("destroy warm sandbox", "sandbox", b.cid, "err", derr)
		}
		agent.Close()
		return fail(fmt.Errorf("warm sandbox %s: %w", b.cid, err))
	}
	b.agent = agent
	return b, nil
}

// initReadyTimeout bounds a warm init's start-up after its boot; it only
// ends a boot whose init hangs, so it allows for a loaded host.
var initReadyTimeout = time.Minute // a var for tests

// destroyWarm kills an idle (or used) sandbox and frees its directories.
func (e *Engine) destroyWarm(b *warmBox) {
	if rt, ok := e.runtimes[b.key.runtime]; ok {
		if err := rt.Destroy(context.Background(), b.cid); err != nil {
			e.log.Warn("destroy warm sandbox", "sandbox", b.cid, "err", err)
		}
	}
	b.agent.Close()
	if b.net != nil {
		e.nets.Release(b.net)
	}
	e.removeBoxDir(b)
	b.release()
}

// removeBoxDir unmounts b's root and removes its directory. A failure is
// logged; recover removes what is left under run/ at the next start.
func (e *Engine) removeBoxDir(b *warmBox) {
	if err := overlay.Unmount(b.merged); err != nil {
		e.log.Warn("unmount warm sandbox root", "sandbox", b.cid, "err", err)
	}
	if err := os.RemoveAll(b.dir); err != nil {
		e.log.Warn("remove warm sandbox dir", "sandbox", b.cid, "dir", b.dir, "err", err)
	}
}

// cwdToMake returns cwd if the image lacks it (so it must be created), else "".
func cwdToMake(root, cwd string) string {
	if cwd == "" || cwd == "/" {
		return ""
	}
	if p, err := securejoin.SecureJoin(root, cwd); err == nil {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return ""
		}
	}
	return cwd
}

// placeInSandbox writes the run's files (and its cwd) from inside the warm
// sandbox through the init's place mode, so gVisor's file cache sees them.
func (e *Engine) placeInSandbox(agent *initproc.Agent, files []placedFile, cwd string) error {
	if len(files) == 0 && cwd == "" {
		return nil // nothing to place: skip the exec
	}
	// The tar streams from the blobs to the init: files may be large.
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(e.writePlaceTar(pw, files, cwd)) }()
	err := agent.Place(pr)
	pr.Close()
	return err
}

func (e *Engine) writePlaceTar(w io.Writer, files []placedFile, cwd string) error {
	tw := tar.NewWriter(w)
	if cwd != "" && cwd != "/" {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: cwd, Mode: 0o755}); err != nil {
			return err
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	for _, f := range files {
		if err := addBlob(tw, e.blobPath(f.sha), &tar.Header{Typeflag: tar.TypeReg, Name: f.path, Mode: int64(f.mode), Uid: f.uid, Gid: f.gid}); err != nil {
			return err
		}
	}
	return tw.Close()
}

// addBlob writes the file at path into tw under h.
func addBlob(tw *tar.Writer, path string, h *tar.Header) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	h.Size = fi.Size()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err = io.Copy(tw, src)
	return err
}

// execWarm runs the plan's main process in its warm sandbox through the
// serving init. Cancellation (timeout, cancel, growth cap) destroys the
// whole sandbox, as a cold run's does.
func (e *Engine) execWarm(ctx context.Context, p *runPlan, spec runtime.Spec) (runtime.Result, error) {
	p.agent = p.warm.agent
	agent := p.warm.agent
	res, err := runWatched(ctx, runtime.Result{Signal: -1, Started: time.Now()}, e.destroyer(ctx, p, p.warm.cid), func() (initproc.Exit, time.Duration, error) {
		return agent.Run(initproc.Request{Args: spec.Args, Env: spec.Env, Cwd: spec.Cwd, UID: spec.UID, GID: spec.GID, FileSize: p.warmFileSize(spec.FileSizeLimit)},
			spec.Stdin, spec.Stdout, spec.Stderr, spec.OnStart)
	})
	// The init killed whatever the command left running before it
	// reported the exit, as a cold sandbox ends with its main process. The
	// sandbox itself ends at teardown: after a disposable result is
	// reported, before a non-disposable one is committed. A protocol error
	// fails the run; teardown destroys the sandbox.
	return res, err
}

// execCold runs the run's own sandbox with arbor's init first, as a warm
// sandbox is booted, and the command through that init: the process tree
// (init as PID 1, the command its child), signal delivery, orphan reaping
// and exit reporting are the same cold and warm. The init exits once it
// has reported the command's exit; the sandbox is then destroyed.
func (e *Engine) execCold(ctx context.Context, p *runPlan, spec runtime.Spec) (runtime.Result, error) {
	res := runtime.Result{Signal: -1, Started: time.Now()}
	agent, pipes, err := initproc.NewAgentPipes()
	if err != nil {
		return res, err
	}
	defer agent.Close()
	p.agent = agent
	sbx := spec
	sbx.Args = []string{runtime.InitPath, initproc.Arg, "serve", initproc.ExitAfterRun}
	sbx.Env, sbx.Cwd = []string{"PATH=" + defaultPath}, "/"
	sbx.UID, sbx.GID, sbx.FileSizeLimit = 0, 0, 0 // the init applies the run's to the command
	sbx.InitBinary = e.initBin
	sbx.Checkpointable = forkable(p)
	if e.coldInit != "" && !sbx.Checkpointable {
		// A batch run: the C init serves it for a fraction of the Go
		// init's CPU under gVisor. A forkable sandbox keeps the Go init,
		// which can move itself into sandbox memory for checkpoints.
		sbx.InitBinary = e.coldInit
		agent.CompactRequests()
	}
	sbx.Stdin, sbx.Stdout, sbx.Stderr = pipes.Stdin, pipes.Stdout, nil
	started := make(chan struct{})
	sbx.OnStart = func(int) { close(started) }
	// A protocol error must end the sandbox too: runCtx's end kills it.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan detachedRun, 1)
	over := make(chan struct{}) // closed once the init has reported (or is gone)
	go func() {
		r, err := e.runDetached(runCtx, p.rt, sbx, over) // no runtime process waits beside it (detached.go)
		done <- detachedRun{r, err}
	}()
	select {
	case <-started:
	case r := <-done: // the runtime could not even start
		pipes.Close()
		if r.err == nil {
			r.err = fmt.Errorf("%s exited before the sandbox started", p.rt.Name())
		}
		return res, r.err
	}
	pipes.Close() // the runtime has its copies
	x, dur, aerr := agent.Run(initproc.Request{Args: spec.Args, Env: spec.Env, Cwd: spec.Cwd, UID: spec.UID, GID: spec.GID, FileSize: spec.FileSizeLimit},
		spec.Stdin, spec.Stdout, spec.Stderr, spec.OnStart)
	close(over)
	if aerr != nil {
		cancel()
	}
	res = exitResult(res, x, dur, aerr)
	if aerr == nil && ctx.Err() == nil && !p.network {
		e.deferTeardown(p, done) // the sandbox ends by itself now
		return res, nil
	}
	r := <-done
	res.Killed = r.res.Killed && ctx.Err() != nil
	if r.err != nil {
		return res, r.err
	}
	if initproc.IsSandboxGone(aerr) {
		aerr = nil
	}
	return res, aerr
}

// exitResult fills res from what the init reported.
func exitResult(res runtime.Result, x initproc.Exit, dur time.Duration, err error) runtime.Result {
	res.ExitCode, res.Rusage, res.Duration, res.Exact = x.Code, x.Rusage, dur, true
	if x.Signal > 0 {
		res.Signal = x.Signal
	}
	if initproc.IsSandboxGone(err) {
		// Killed by us, or the sandbox died (out of memory): the command
		// was killed either way.
		res.ExitCode, res.Signal = -1, int(unix.SIGKILL)
	}
	return res
}
