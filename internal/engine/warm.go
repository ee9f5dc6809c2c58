package engine

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"sync"
	"time"

	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/initproc"
	"github.com/arborsh/arbor/internal/netns"
	"github.com/arborsh/arbor/internal/overlay"
	"github.com/arborsh/arbor/internal/runtime"
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

func keyOf(p *runPlan, image string) warmKey {
	return warmKey{image: image, runtime: p.rt.Name(), hostname: p.meta.Hostname, memory: p.memory, pids: p.pids, cpus: p.cpus, network: p.network}
}

// warmBox is one idle pre-booted sandbox with its own fresh upper dir.
type warmBox struct {
	key                             warmKey
	cid, dir, upper, merged, bundle string
	release                         func() // unpins the image's layers
	born                            time.Time
	agent                           *initproc.Agent // talks to the serving init
	net                             *netns.Net      // its network, if key.network
	ids                             *runtime.IDMap  // its user namespace (runc, crun)
}

type warmPool struct {
	mu      sync.Mutex
	idle    map[warmKey][]*warmBox
	booting map[warmKey]int
	waiting map[warmKey]int // runs waiting for one of booting[key]
	// bootStarts holds when each boot in flight started; bootTime a running
	// estimate of a boot's duration per runtime.
	bootStarts map[warmKey][]time.Time
	bootTime   map[string]time.Duration
	changed    chan struct{} // closed and replaced when a boot ends
	// want is the demand not yet met: sandboxes to boot per key, with the
	// time it was last asked for (older demand is dropped first).
	want   map[warmKey]warmWant
	active int // runs between admission and teardown: boots wait for quiet
	hits   int // runs served warm (for tests and stats)
	misses int
}

type warmWant struct {
	n  int
	at time.Time
}

// WarmStats reports the pool's state.
type WarmStats struct {
	Idle, Booting int
	Wanted        int // sandboxes asked for and not booting yet (they wait for quiet)
	Active        int // runs in flight
	Hits, Misses  int
}

// Settled reports whether the pool has nothing left to do: no run in
// flight, no boot running or waiting.
func (s WarmStats) Settled() bool { return s.Active == 0 && s.Booting == 0 && s.Wanted == 0 }

// WarmStats returns the pool's counters.
func (e *Engine) WarmStats() WarmStats {
	e.warm.mu.Lock()
	defer e.warm.mu.Unlock()
	n := 0
	for _, bs := range e.warm.idle {
		n += len(bs)
	}
	wanted := 0
	for k, w := range e.warm.want {
		wanted += max(0, w.n-len(e.warm.idle[k])-e.warm.booting[k])
	}
	return WarmStats{Idle: n, Booting: e.warm.bootingLocked(), Wanted: wanted, Active: e.warm.active, Hits: e.warm.hits, Misses: e.warm.misses}
}

// findInit picks the static init binary warm sandboxes need: the configured
// one, else this executable if it is static, else arbor-init beside it.
func findInit(configured string) string {
	cands := []string{configured}
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, exe, filepath.Join(filepath.Dir(exe), "arbor-init"))
	}
	for _, c := range cands {
		if c != "" && baseimage.IsStatic(c) {
			return c
		}
	}
	return ""
}

func (e *Engine) warmEnabled() bool { return e.initBin != "" && e.cfg.WarmPerImage > 0 }

// takeWarm pops an idle sandbox for k, or returns nil. If none is idle but
// a boot for k has been running for a while (the image was just made or
// just used), the run waits for that boot rather than booting its own: the
// rest of that boot plus a warm run is shorter than a cold run. At most
// one run waits per boot.
func (e *Engine) takeWarm(ctx context.Context, k warmKey) *warmBox {
	if !e.warmEnabled() {
		return nil
	}
	e.warm.mu.Lock()
	defer e.warm.mu.Unlock()
	waiting := false
	defer func() {
		if waiting {
			e.warm.waiting[k]--
		}
	}()
	for {
		if bs := e.warm.idle[k]; len(bs) > 0 {
			b := bs[0]
			e.warm.idle[k] = bs[1:]
			if len(e.warm.idle[k]) == 0 {
				delete(e.warm.idle, k)
			}
			if !b.agent.Alive() {
				// It died while idle (killed, out of memory): clean up
				// behind the run's back and look again.
				e.log.Warn("warm sandbox died while idle", "image", k.image, "runtime", k.runtime)
				e.wg.Add(1)
				go func() { defer e.wg.Done(); e.destroyWarm(b) }()
				continue
			}
			e.warm.hits++
			return b
		}
		if !waiting && e.warm.waiting[k] < e.warm.ripeLocked(k) {
			waiting = true
			e.warm.waiting[k]++
		}
		if !waiting || e.warm.booting[k] == 0 {
			e.warm.misses++
			return nil
		}
		changed := e.warm.changed
		e.warm.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
		case <-e.closed:
		}
		e.warm.mu.Lock()
		if ctx.Err() != nil {
			e.warm.misses++
			return nil
		}
		select {
		case <-e.closed:
			e.warm.misses++
			return nil
		default:
		}
	}
}

// ripeLocked counts k's boots in flight worth waiting for: started at least
// a quarter of a typical boot ago, so at most three quarters remain, and a
// warm run's own cost (exec, and destroying the sandbox after it: a sixth
// of a boot under runsc) still leaves it ahead of a cold run.
func (p *warmPool) ripeLocked(k warmKey) int {
	est, ok := p.bootTime[k.runtime]
	if !ok {
		est = 300 * time.Millisecond
	}
	n := 0
	for _, t := range p.bootStarts[k] {
		if time.Since(t) >= est/4 {
			n++
		}
	}
	return n
}

// changedLocked wakes runs waiting for a boot: one ended.
func (p *warmPool) changedLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// warmUp asks for n sandboxes for k. They boot in the background when the
// machine is quiet (see pumpWarm), so a burst of runs is not slowed down by
// boots for its own replacements.
func (e *Engine) warmUp(k warmKey, n int) {
	if !e.warmEnabled() {
		return
	}
	n = min(n, e.cfg.WarmPerImage)
	e.warm.mu.Lock()
	if w := e.warm.want[k]; w.n < n {
		e.warm.want[k] = warmWant{n: n, at: time.Now()}
	} else {
		e.warm.want[k] = warmWant{n: w.n, at: time.Now()}
	}
	// Demand beyond the pool's bound is stale: keep the newest.
	for total := e.warm.wantedLocked(); total > e.cfg.WarmMax; total = e.warm.wantedLocked() {
		var oldest warmKey
		first := true
		for key, w := range e.warm.want {
			if first || w.at.Before(e.warm.want[oldest].at) {
				oldest, first = key, false
			}
		}
		delete(e.warm.want, oldest)
	}
	e.warm.mu.Unlock()
	e.pumpWarm()
}

func (p *warmPool) wantedLocked() int {
	n := 0
	for _, w := range p.want {
		n += w.n
	}
	return n
}

func (p *warmPool) bootingLocked() int {
	n := 0
	for _, b := range p.booting {
		n += b
	}
	return n
}

// runBegins and runEnds bracket a run's use of the machine; a run ending
// may make room for the boots waiting for quiet.
func (e *Engine) runBegins() {
	e.warm.mu.Lock()
	e.warm.active++
	e.warm.mu.Unlock()
}

func (e *Engine) runEnds() {
	e.warm.mu.Lock()
	e.warm.active--
	e.warm.mu.Unlock()
	// Boot only once the machine has stayed quiet a moment: an agent that
	// comes straight back with its next run (a few ms later) then gets a
	// cold run with the cores to itself instead of sharing them with a boot
	// it would not use; one that pauses finds its sandbox ready.
	e.wg.Add(1)
	time.AfterFunc(quietGrace, func() {
		defer e.wg.Done()
		e.pumpWarm()
	})
}

// quietGrace is how long the pool waits after a run before it boots.
const quietGrace = 100 * time.Millisecond

// pumpWarm starts boots for unmet demand while the machine is quiet: a boot
// costs a core for a few hundred milliseconds, so at most one per two cores
// runs alongside runs or other boots. The pool's global bound is kept by
// evicting the oldest idle sandboxes of keys nobody asked for recently.
func (e *Engine) pumpWarm() {
	select {
	case <-e.closed:
		return
	default:
	}
	budget := max(1, goruntime.NumCPU()/2)
	var evict []*warmBox
	e.warm.mu.Lock()
	for {
		if e.warm.active+e.warm.bootingLocked() >= budget {
			break
		}
		k, ok := e.warm.nextWantLocked()
		if !ok {
			break
		}
		total := e.warm.bootingLocked()
		for _, bs := range e.warm.idle {
			total += len(bs)
		}
		if total >= e.cfg.WarmMax {
			b := e.oldestIdleLocked(k)
			if b == nil {
				break
			}
			evict = append(evict, b)
		}
		e.warm.booting[k]++
		started := time.Now()
		e.warm.bootStarts[k] = append(e.warm.bootStarts[k], started)
		if w := e.warm.want[k]; w.n <= len(e.warm.idle[k])+e.warm.booting[k] {
			delete(e.warm.want, k)
		}
		e.wg.Add(1)
		go e.bootWarm(k, started)
	}
	e.warm.mu.Unlock()
	for _, b := range evict {
		e.destroyWarm(b)
	}
}

// nextWantLocked returns the most recently wanted key whose demand is not
// met by idle and booting sandboxes; met demand is forgotten.
func (p *warmPool) nextWantLocked() (warmKey, bool) {
	var best warmKey
	found := false
	for k, w := range p.want {
		if w.n <= len(p.idle[k])+p.booting[k] {
			delete(p.want, k)
			continue
		}
		if !found || w.at.After(p.want[best].at) {
			best, found = k, true
		}
	}
	return best, found
}

// oldestIdleLocked removes and returns the oldest idle box not of key k.
func (e *Engine) oldestIdleLocked(k warmKey) *warmBox {
	var oldest *warmBox
	for key, bs := range e.warm.idle {
		if key != k && len(bs) > 0 && (oldest == nil || bs[0].born.Before(oldest.born)) {
			oldest = bs[0]
		}
	}
	if oldest != nil {
		bs := e.warm.idle[oldest.key]
		e.warm.idle[oldest.key] = bs[1:]
		if len(bs) == 1 {
			delete(e.warm.idle, oldest.key)
		}
	}
	return oldest
}

func (e *Engine) bootWarm(k warmKey, started time.Time) {
	defer e.wg.Done()
	b, err := e.newWarm(context.Background(), k)
	e.warm.mu.Lock()
	if e.warm.booting[k]--; e.warm.booting[k] <= 0 {
		delete(e.warm.booting, k)
	}
	starts := e.warm.bootStarts[k]
	for i, t := range starts {
		if t.Equal(started) {
			starts = append(starts[:i], starts[i+1:]...)
			break
		}
	}
	if len(starts) == 0 {
		delete(e.warm.bootStarts, k)
	} else {
		e.warm.bootStarts[k] = starts
	}
	if err == nil {
		// A running estimate of how long a boot takes, per runtime.
		d := time.Since(started)
		if old, ok := e.warm.bootTime[k.runtime]; ok {
			d = (3*old + d) / 4
		}
		e.warm.bootTime[k.runtime] = d
	}
	closed := false
	select {
	case <-e.closed:
		closed = true
	default:
	}
	if err == nil && !closed {
		e.warm.idle[k] = append(e.warm.idle[k], b)
	} else if err != nil {
		delete(e.warm.want, k) // no retry loop on an image that cannot boot
	}
	e.warm.changedLocked()
	e.warm.mu.Unlock()
	if err != nil {
		e.log.Warn("warm sandbox", "image", k.image, "runtime", k.runtime, "err", err)
	} else if closed {
		e.destroyWarm(b)
	}
	e.pumpWarm()
}

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
	b := &warmBox{key: k, cid: "arbor-" + id, dir: filepath.Join(e.cfg.Home, "run", id), release: release, born: time.Now()}
	b.upper, b.merged, b.bundle = filepath.Join(b.dir, "upper"), filepath.Join(b.dir, "merged"), filepath.Join(b.dir, "bundle")
	work := filepath.Join(b.dir, "work")
	fail := func(err error) (*warmBox, error) {
		_ = overlay.Unmount(b.merged)
		_ = os.RemoveAll(b.dir)
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
	b.release = func() { free(); release() } // called after unmount
	fail = func(err error) (*warmBox, error) {
		_ = overlay.Unmount(b.merged)
		_ = os.RemoveAll(b.dir)
		if b.net != nil {
			e.nets.Release(b.net)
		}
		b.release()
		return nil, err
	}
	if err := asSandboxRoot(ids, func() error { return runtime.EnsureTmp(b.merged) }); err != nil { // as a cold run does
		return fail(err)
	}
	netnsPath := ""
	if k.network {
		if b.net, err = e.nets.Create(ctx); err != nil {
			return fail(fmt.Errorf("sandbox network: %w", err))
		}
		netnsPath = b.net.Path
	}
	agent, pipes, err := initproc.NewAgentPipes()
	if err != nil {
		return fail(err)
	}
	err = rt.Boot(ctx, runtime.Spec{
		NetNS: netnsPath,
		ID:    b.cid, Bundle: b.bundle, Rootfs: b.merged, Args: []string{runtime.InitPath, initproc.Arg, "serve"},
		Env: []string{"PATH=" + defaultPath}, Cwd: "/", Hostname: k.hostname,
		MemoryBytes: k.memory, Pids: k.pids, CPUs: k.cpus, InitBinary: e.initBin, IDMap: ids,
		Stdin: pipes.Stdin, Stdout: pipes.Stdout,
	})
	pipes.Close() // the sandbox has its copies
	if err != nil {
		agent.Close()
		return fail(err)
	}
	b.agent = agent
	return b, nil
}

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
	_ = overlay.Unmount(b.merged)
	_ = os.RemoveAll(b.dir)
	b.release()
}

// reapWarm destroys sandboxes idle longer than WarmIdle until the engine closes.
func (e *Engine) reapWarm() {
	defer e.wg.Done()
	t := time.NewTicker(max(e.cfg.WarmIdle/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-e.closed:
			e.drainWarm()
			return
		case <-t.C:
		}
		var old []*warmBox
		e.warm.mu.Lock()
		for k, bs := range e.warm.idle {
			keep := bs[:0]
			for _, b := range bs {
				if time.Since(b.born) > e.cfg.WarmIdle {
					old = append(old, b)
				} else {
					keep = append(keep, b)
				}
			}
			if len(keep) == 0 {
				delete(e.warm.idle, k)
			} else {
				e.warm.idle[k] = keep
			}
		}
		e.warm.mu.Unlock()
		for _, b := range old {
			e.destroyWarm(b)
		}
	}
}

func (e *Engine) drainWarm() {
	e.warm.mu.Lock()
	var all []*warmBox
	for _, bs := range e.warm.idle {
		all = append(all, bs...)
	}
	e.warm.idle = map[warmKey][]*warmBox{}
	e.warm.mu.Unlock()
	for _, b := range all {
		e.destroyWarm(b)
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
	rt, cid, agent := p.rt, p.warm.cid, p.warm.agent
	done := make(chan struct{})
	killed := make(chan bool, 1)
	go func() {
		select {
		case <-ctx.Done():
			if err := rt.Destroy(context.WithoutCancel(ctx), cid); err != nil {
				e.log.Warn("destroy sandbox", "sandbox", cid, "err", err)
			}
			killed <- true
		case <-done:
			killed <- false
		}
	}()
	res := runtime.Result{Signal: -1, Started: time.Now()}
	x, dur, err := agent.Run(initproc.Request{Args: spec.Args, Env: spec.Env, Cwd: spec.Cwd, UID: spec.UID, GID: spec.GID, FileSize: spec.FileSizeLimit},
		spec.Stdin, spec.Stdout, spec.Stderr, spec.OnStart)
	close(done)
	res = exitResult(res, x, dur, err)
	res.Killed = <-killed
	if initproc.IsSandboxGone(err) {
		err = nil
	}
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
// has reported the command's exit, so the runtime process ends the
// sandbox and removes its state, as it does for a bare command.
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
	sbx.Stdin, sbx.Stdout, sbx.Stderr = pipes.Stdin, pipes.Stdout, nil
	started := make(chan struct{})
	sbx.OnStart = func(int) { close(started) }
	// A protocol error must end the sandbox too: runCtx's end kills it.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type ran struct {
		res runtime.Result
		err error
	}
	done := make(chan ran, 1)
	go func() {
		r, err := p.rt.Run(runCtx, sbx)
		done <- ran{r, err}
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
	if aerr != nil {
		cancel()
	}
	r := <-done
	res = exitResult(res, x, dur, aerr)
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
