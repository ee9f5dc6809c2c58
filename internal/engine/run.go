package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arborsh/arbor/internal/egress"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/initproc"
	"github.com/arborsh/arbor/internal/netns"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/overlay"
	"github.com/arborsh/arbor/internal/runtime"
	"github.com/arborsh/arbor/internal/store"
	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// activeOp is an operation that has not finished yet.
type activeOp struct {
	*op // its lifecycle: id, account, cancel...

	mu       sync.Mutex
	running  chan struct{} // closed once the main process has started
	exited   bool          // the main process has exited
	sandbox  *sandboxRef   // set while the sandbox runs
	procs    map[int]*proc // spid → process
	nextSpid int
	subs     sync.WaitGroup // exec'd processes still being reaped
	growth   atomic.Int64   // disk its run or import has written so far, for the account's quota
	nsubs    atomic.Int64   // subprocesses running now (reserveSub), under e.mu
}

// sandboxRef is what exec needs of a running sandbox.
type sandboxRef struct {
	rt    runtime.Runtime
	cid   string
	p     *runPlan
	upper string // its root's upper dir (see Fork)
}

// proc is a process in a sandbox: the main one (spid 1) or an exec'd one.
type proc struct {
	pid    int                        // of the runtime process, which forwards signals
	signal func(syscall.Signal) error // if set, signals go here instead of to pid
	stdin  *os.File
}

type placedFile struct {
	path     string
	sha      string
	mode     uint32
	uid, gid int
}

// runPlan is a validated spawn request.
type runPlan struct {
	op, account string
	image       store.Image
	resultTag   string // SpawnRequest.ResultTag
	meta        oplog.InstanceMetadata
	args        []string
	env         map[string]string
	inherited   map[string]string // env before the request's own variables
	stdin       []byte
	files       []placedFile
	timeout     time.Duration
	truncate    int64
	maxLayer    int64
	rt          runtime.Runtime
	memory      int64
	pids        int64
	cpus        float64
	network     bool            // outbound-only access
	egress      *egress.Rules   // its policy, if any (see egress.go)
	limit       int64           // what the run may write: maxLayer or what is left of the quota (set by watchGrowth)
	warm        *warmBox        // the pre-booted sandbox serving this run, if any
	ids         *runtime.IDMap  // the sandbox's user namespace (runc, crun)
	agent       *initproc.Agent // the init running the command, if any
	ticket      *admitWaiter    // its place in the admission queue (Spawn)
	restore     *restorePlan    // a fork: the sandbox comes from a checkpoint (see fork.go)
	teardown    func() bool     // waits for a cold sandbox's teardown, if still under way, and reports it gone (detached.go)
	lateExec    bool            // an exec'd process outlived the main one: the sandbox was ended, it does not continue (endLateExecs)
}

// maxPids bounds resources_limits.pids: more processes than this in one
// run is a fork bomb, not a workload.
const maxPids = 1 << 16

// bootAllowance is how long a run's sandbox may take to boot (or be
// restored) on top of the run's timeout, whose clock starts with the
// command (Engine.bootAllowance, shorter in tests).
const bootAllowance = time.Minute

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Spawn validates req, records a PENDING operation and starts the run in the
// background. It returns the operation id and the defaulted request echo.
func (e *Engine) Spawn(ctx context.Context, account string, req SpawnRequest) (string, oplog.InstanceMetadata, error) {
	if err := checkAccount(account); err != nil {
		return "", oplog.InstanceMetadata{}, err
	}
	p, err := e.plan(ctx, account, req)
	if err != nil {
		return "", oplog.InstanceMetadata{}, err
	}
	if err := e.admit(ctx, account); err != nil {
		return "", oplog.InstanceMetadata{}, err
	}
	if e.cl != nil {
		return e.cl.spawn(ctx, account, req, p) // a worker runs it
	}
	if !p.meta.Disposable {
		if err := e.checkDisk(); err != nil {
			return "", oplog.InstanceMetadata{}, err
		}
	}
	meta, _ := json.Marshal(redactMeta(p.meta))
	o := store.Operation{UUID: newID(), Account: account, Kind: oplog.KindInstance, Status: oplog.StatusPending,
		CreatedAt: e.now(), ImageUUID: p.image.UUID, Metadata: string(meta)}
	p.op = o.UUID
	// From here to the run's end its image stays, deleted or not.
	lease, err := e.leaseImage(p.image.UUID, o.UUID, false)
	if err != nil {
		return "", oplog.InstanceMetadata{}, err
	}
	// Queued now, so runs are admitted in the order they were spawned.
	p.ticket = e.queue.enqueue(o.UUID, p.memory)
	if err := e.startOp(ctx, o, func(ctx context.Context, o *op) outcome { defer lease.Release(); return e.execute(ctx, o, p) }); err != nil {
		e.queue.cancel(p.ticket)
		lease.Release()
		return "", oplog.InstanceMetadata{}, err
	}
	return o.UUID, redactMeta(p.meta), nil
}

// admit enforces the per-account storage quota. The concurrency limit is
// enforced when startOp inserts the operation, atomically with the count.
func (e *Engine) admit(ctx context.Context, account string) error {
	return e.checkStorage(ctx, account)
}

// Cancel cancels an active operation. A finished one is a conflict.
func (e *Engine) Cancel(ctx context.Context, account, op string) error {
	o, err := e.st.Operation(ctx, account, op)
	if err != nil {
		return err
	}
	e.mu.Lock()
	a := e.active[o.UUID]
	e.mu.Unlock()
	if a == nil && e.cl != nil && !oplog.IsTerminal(o.Status) {
		return e.cl.cancel(ctx, o) // it runs, or waits, elsewhere
	}
	if a == nil || oplog.IsTerminal(o.Status) {
		return errdefs.Conflict("operation is not cancellable: it already finished with status %s", o.Status)
	}
	a.cancel(errCancelled)
	return nil
}

func (e *Engine) plan(ctx context.Context, account string, req SpawnRequest) (*runPlan, error) {
	if strings.TrimSpace(req.Command) == "" {
		return nil, errdefs.InvalidArgument("command is required")
	}
	if strings.ContainsRune(req.Command, 0) {
		return nil, errdefs.InvalidArgument("command contains a NUL byte")
	}
	im, err := e.resolveImage(ctx, account, req.Image)
	if err != nil {
		return nil, err
	}
	p := &runPlan{account: account, image: im}
	m := oplog.InstanceMetadata{
		Command: req.Command, Image: im.UUID, Hostname: "linuxkit", Args: []string{}, Env: map[string]string{},
		Cwd: "/root", Timeout: e.cfg.DefaultTimeout, TruncateOutputAt: 1 << 20, Files: map[string]oplog.FileSpec{},
		Stdin: oplog.StdinEcho{Encoding: "ascii", Close: true},
	}
	if req.Disposable != nil {
		m.Disposable = *req.Disposable
	}
	if req.ResultTag != nil && *req.ResultTag != "" {
		if err := ValidateTag(*req.ResultTag); err != nil {
			return nil, err
		}
		if m.Disposable {
			return nil, errdefs.InvalidArgument("result_tag %q needs a result image: send disposable=false", *req.ResultTag)
		}
		p.resultTag = *req.ResultTag
	}
	if req.Hostname != nil && *req.Hostname != "" {
		if len(*req.Hostname) > 64 || strings.ContainsAny(*req.Hostname, " /\x00") {
			return nil, errdefs.InvalidArgument("hostname %q is invalid: use up to 64 letters, digits, dots and dashes", *req.Hostname)
		}
		m.Hostname = *req.Hostname
	}
	if req.Args != nil {
		for _, a := range req.Args {
			if strings.ContainsRune(a, 0) {
				return nil, errdefs.InvalidArgument("args: %q contains a NUL byte", a)
			}
		}
		m.Args = req.Args
	}
	if req.Shell != nil {
		m.Shell = *req.Shell
	}
	for k, v := range req.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, errdefs.InvalidArgument("env var %q is invalid: names must be non-empty without '=' or NUL", k)
		}
		m.Env[k] = v
	}
	if req.PreserveEnv != nil {
		m.PreserveEnv = *req.PreserveEnv
	}
	if req.Cwd != nil {
		m.Cwd = *req.Cwd
	}
	if m.Cwd != "" && !path.IsAbs(m.Cwd) {
		return nil, errdefs.InvalidArgument("cwd %q must be an absolute path", m.Cwd)
	}
	if req.UID != nil {
		m.UID = *req.UID
	}
	if req.GID != nil {
		m.GID = *req.GID
	}
	if m.UID < 0 || m.GID < 0 || m.UID > 1<<31-2 || m.GID > 1<<31-2 {
		return nil, errdefs.InvalidArgument("uid and gid must be between 0 and 2147483646")
	}
	if req.Timeout != nil {
		t := *req.Timeout
		if t <= 0 {
			return nil, errdefs.InvalidArgument("timeout must be a positive number of seconds (got %v)", t)
		}
		// Capped, not refused: ConTree caps it at limits.instance_max_timeout
		// (its SDK only warns), and the metadata echoes what applies.
		t = min(t, float64(e.cfg.MaxTimeout))
		m.Timeout = int(t)
		if float64(m.Timeout) < t {
			m.Timeout++
		}
		p.timeout = time.Duration(t * float64(time.Second))
	} else {
		p.timeout = time.Duration(m.Timeout) * time.Second
	}
	if req.TruncateOutputAt != nil {
		if *req.TruncateOutputAt < 0 {
			return nil, errdefs.InvalidArgument("truncate_output_at must be >= 0")
		}
		m.TruncateOutputAt = min(*req.TruncateOutputAt, 64<<20)
	}
	p.truncate = m.TruncateOutputAt
	p.maxLayer = e.cfg.MaxLayerBytes
	if rl := req.ResourcesLimits; rl != nil {
		m.ResourcesLimits = *rl
		if rl.MaxLayerBytes != nil {
			if *rl.MaxLayerBytes <= 0 {
				return nil, errdefs.InvalidArgument("resources_limits.max_layer_bytes must be positive")
			}
			p.maxLayer = min(*rl.MaxLayerBytes, e.cfg.MaxLayerBytes)
		}
		if rl.MemoryBytes != nil {
			if *rl.MemoryBytes < 4<<20 {
				return nil, errdefs.InvalidArgument("resources_limits.memory_bytes must be at least 4 MiB")
			}
			if *rl.MemoryBytes > e.cfg.MemoryBudget {
				return nil, errdefs.InvalidArgument("resources_limits.memory_bytes %d exceeds this server's limit of %d bytes (limits.max_memory_bytes, 3/4 of the host's memory unless the operator set --memory-budget): ask for less", *rl.MemoryBytes, e.cfg.MemoryBudget)
			}
			p.memory = *rl.MemoryBytes
		}
		if rl.Pids != nil {
			if *rl.Pids < 1 || *rl.Pids > maxPids {
				return nil, errdefs.InvalidArgument("resources_limits.pids must be between 1 and %d", maxPids)
			}
			p.pids = *rl.Pids
		}
		if rl.CPUs != nil {
			if *rl.CPUs <= 0 {
				return nil, errdefs.InvalidArgument("resources_limits.cpus must be positive")
			}
			if n := goruntime.NumCPU(); *rl.CPUs > float64(n) {
				return nil, errdefs.InvalidArgument("resources_limits.cpus %v exceeds this host's %d CPUs: ask for at most %d", *rl.CPUs, n, n)
			}
			p.cpus = *rl.CPUs
		}
	}
	// Defaults that keep one run from starving the host.
	if p.memory == 0 {
		p.memory = e.cfg.DefaultMemoryBytes
	}
	if p.pids == 0 {
		p.pids = 4096
	}
	if req.Networking != nil && req.Networking.Enabled != nil && *req.Networking.Enabled {
		p.network = true
		m.Networking.Enabled = true
	}
	if err := e.planEgress(p, &m, req.Networking); err != nil {
		return nil, err
	}
	if req.Stdin != nil {
		b, err := req.Stdin.Bytes()
		if err != nil {
			return nil, errdefs.InvalidArgument("stdin: %v", err)
		}
		p.stdin = b
		m.Stdin = oplog.StdinEcho{Value: req.Stdin.Value, Encoding: req.Stdin.Encoding, Close: req.Stdin.Close == nil || *req.Stdin.Close}
		if m.Stdin.Encoding == "" {
			m.Stdin.Encoding = "ascii"
		}
	}
	rtName := e.cfg.Runtime
	if req.Runtime != nil && *req.Runtime != "" {
		rtName = *req.Runtime
	}
	if err := e.checkRuntime(account, rtName); err != nil {
		return nil, err
	}
	rt, ok := e.runtimes[rtName]
	if !ok {
		return nil, errdefs.InvalidArgument("runtime %q is not available on this server (available: %s)", rtName, strings.Join(e.Runtimes(), ", "))
	}
	p.rt = rt
	m.Runtime = rtName
	for dst, fs := range req.Files {
		clean := path.Clean(dst)
		if !path.IsAbs(dst) || clean == "/" || strings.ContainsRune(dst, 0) {
			return nil, errdefs.InvalidArgument("file destination %q must be an absolute path to a file, like /root/script.py", dst)
		}
		f, err := e.File(ctx, account, fs.UUID)
		if err != nil {
			return nil, err
		}
		m.Files[dst] = oplog.FileSpec{UUID: f.UUID, Mode: fs.Mode, UID: fs.UID, GID: fs.GID}
		p.files = append(p.files, placedFile{path: clean, sha: f.SHA256, mode: uint32(fs.Mode), uid: fs.UID, gid: fs.GID})
	}
	sort.Slice(p.files, func(i, j int) bool { return p.files[i].path < p.files[j].path })
	if err := checkIDRange(rtName, m.UID, m.GID, p.files); err != nil {
		return nil, err
	}
	if err := e.touchFiles(ctx, account, fileUUIDs(m.Files)); err != nil { // used now (uploadretention.go)
		return nil, err
	}

	if m.Shell {
		// The args belong to the command line, not to sh -c (where they
		// would become $0, $1...): ConTree's CLI runs a script as
		// "/bin/sh" with args ["-s", "--", ...] and stdin.
		p.args = []string{"/bin/sh", "-c", shellLine(m.Command, m.Args)}
	} else {
		p.args = append([]string{m.Command}, m.Args...)
	}
	p.env = map[string]string{"PATH": defaultPath, "HOSTNAME": m.Hostname, "HOME": "/root"}
	if m.UID != 0 {
		p.env["HOME"] = "/"
	}
	if im.Env != "" {
		var saved map[string]string
		if json.Unmarshal([]byte(im.Env), &saved) == nil {
			for k, v := range saved {
				p.env[k] = v
			}
		}
	}
	p.inherited = maps.Clone(p.env)
	for k, v := range m.Env {
		p.env[k] = v
	}
	p.meta = m
	return p, nil
}

// shellLine appends args to command, each quoted for a POSIX shell, so
// sh -c sees exactly these words.
func shellLine(command string, args []string) string {
	var b strings.Builder
	b.WriteString(command)
	for _, a := range args {
		b.WriteByte(' ')
		b.WriteString(shellQuote(a))
	}
	return b.String()
}

// shellQuote returns s as one shell word: bare when it holds only
// characters no shell treats specially, else in single quotes.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// envList renders env sorted for a stable config.
func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// runState carries a run's progress for finishing the operation.
type runState struct {
	result   *oplog.InstanceResult
	cpu      float64
	rss      int64
	resultIm string
	errMsg   string
	status   string
}

// execute runs the plan and returns its outcome, once torn down. A run
// that commits an image finishes in the commit's transaction, a disposable
// one as soon as its result is known; the outcome returned is then
// refused as a repeat.
func (e *Engine) execute(ctx context.Context, o *op, p *runPlan) (out outcome) {
	rs := &runState{status: oplog.StatusSuccess}
	defer func() { out = rs.outcome(p) }() // registered first: runs after the teardown
	// Removing the run's directory is not the sandbox's work. Once a run
	// has committed (and so finished, in the commit's transaction), what is
	// left of it is small and holds up nothing a client sees: it is removed
	// in the background after the run's slot is free (this runs after the
	// slot's release); under a fan-out it held up the next run's start
	// (its unlinks wait for the writeback the commit's syncfs started).
	// Any other run's directory goes before its outcome is recorded, as its
	// upper dir may hold what filled the disk.
	var tidy []func()
	defer func() {
		if !p.meta.Disposable && o.current() == opSuccess {
			e.tidyLater(tidy)
			return
		}
		for _, f := range tidy {
			f()
		}
	}()
	o.setRuntime(p.rt.Name())

	// Wait, in order, for a slot and for the run's memory limit to fit the
	// host's budget; cancellation while queued ends the operation.
	if err := e.queue.wait(ctx, p.ticket); err != nil {
		rs.fail(ctx, nil)
		return
	}
	// The slot, with the memory it charged, bounds the sandboxes running at
	// once. Once the run's sandbox is gone, what is left of the run (the
	// unmount, the commit, the outcome) is the daemon's own work, which
	// mostly waits on the kernel (the unmount on expedited RCU grace
	// periods, serialised over the host): the slot goes back then (in
	// unmount below) and the next run starts meanwhile; here, should the
	// run end without that.
	releaseSlot := sync.OnceFunc(func() { e.queue.release(p.memory) })
	defer releaseSlot()
	e.runBegins()
	defer e.runEnds() // after teardown: then the pool may boot replacements
	// A warm sandbox, if one waits for this image and shape, replaces the
	// mount and boot below; everything after is the same. The run then goes
	// from PENDING to EXECUTING at once: ASSIGNED is the time a sandbox is
	// made for it, and one that was ready needs none (nor a write to the
	// store, a tenth of a millisecond or more of an agent's step).
	var wb *warmBox
	if p.restore == nil { // a fork's sandbox is restored, not booted
		wb = e.takeWarm(ctx, keyOf(p, p.image.UUID))
		if wb != nil && !e.fits(ctx, p, wb) {
			e.destroyWarm(wb)
			wb = nil
		}
	}
	if wb == nil {
		if err := o.to(ctx, opAssigned); err != nil {
			rs.fail(ctx, err)
			return
		}
		if e.chainDepth(p.image.UUID) >= overlay.MaxLayers-1 {
			// Too deep to mount: squash now rather than wait for the background.
			if err := e.squash(ctx, p.image.UUID); err != nil {
				rs.fail(ctx, fmt.Errorf("squash deep chain: %w", err))
				return
			}
		}
		if p.restore == nil {
			wb = e.bootToContinue(ctx, p) // a chain that starts cold goes on warm
		}
	}
	// The image is in use: keep one ready for its next run. Asked for now,
	// booted once the machine is quiet, after the image this run makes.
	e.warmUp(keyOf(p, p.image.UUID), 1)
	var dir, upper, merged, bundle string
	var mounted bool
	kept := false // wb went back to the pool to continue (continue.go)
	if wb != nil {
		defer func() {
			if kept {
				return
			}
			wb.agent.Close()
			if wb.net != nil {
				e.nets.Release(wb.net)
			}
			wb.release()
		}()
		dir, upper, merged, bundle, mounted = wb.dir, wb.upper, wb.merged, wb.bundle, true
		p.warm, p.ids = wb, wb.ids
	} else {
		dir = filepath.Join(e.cfg.Home, "run", p.op)
		view, remove, err := e.prepare(ctx, dir, p.image.UUID)
		if err != nil {
			rs.fail(ctx, err)
			return
		}
		defer func() { tidy = append(tidy, remove) }()
		defer view.Release() // the chain stays pinned to the run's end, as before; the directory may go later
		upper, merged, bundle = view.Upper, view.Merged, filepath.Join(dir, "bundle")
		if err := os.MkdirAll(bundle, 0o755); err != nil {
			rs.fail(ctx, err)
			return
		}
		ids, free, err := e.mountRoot(p.rt, view.Lowers, view.Upper, view.Work, view.Merged)
		if err != nil {
			os.RemoveAll(dir)
			rs.fail(ctx, err)
			return
		}
		defer free() // after unmount
		p.ids = ids
		mounted = true
	}
	defer func() {
		if !kept {
			tidy = append(tidy, func() {
				if err := e.removeRunDir(dir); err != nil {
					e.log.Warn("remove run dir", "operation", p.op, "dir", dir, "err", err)
				}
			})
		}
	}()
	unmount := func() {
		gone := p.awaitTeardown() // the sandbox, gofer included, is gone first
		if mounted {
			if wb != nil {
				// The sandbox outlives its command until now.
				if err := p.rt.Destroy(context.WithoutCancel(ctx), wb.cid); err != nil {
					e.log.Warn("destroy sandbox", "operation", p.op, "sandbox", wb.cid, "err", err)
					gone = false
				}
			}
			if gone {
				releaseSlot()
			}
			unmountRoot := e.rootfs.Unmount
			if e.unmountRoot != nil {
				unmountRoot = e.unmountRoot
			}
			if err := unmountRoot(merged); err != nil {
				e.log.Warn("unmount", "operation", p.op, "dir", merged, "err", err)
			}
			mounted = false
		}
	}
	defer func() {
		if !kept {
			unmount()
		}
	}()

	if wb == nil {
		// A warm sandbox had this done before its boot.
		if err := asSandboxRoot(p.ids, func() error { return runtime.EnsureTmp(merged) }); err != nil {
			rs.fail(ctx, err)
			return
		}
	}
	if wb != nil {
		if err := e.placeInSandbox(wb.agent, p.files, cwdToMake(merged, p.meta.Cwd)); err != nil {
			rs.fail(ctx, err)
			return
		}
	} else if err := e.placeFilesAs(p.ids, merged, p.files); err != nil {
		rs.fail(ctx, err)
		return
	}
	// What the sandbox is, not what the host is: its own hostname; the
	// host's name and kernel version are not the client's business.
	var uts unix.Utsname
	_ = unix.Uname(&uts) // cannot fail: its only error is a bad buffer address
	e.events.emit(ctx, p.op, 0, oplog.EventInit, oplog.EventDataInit{
		StartedAt: oplog.Timestamp(time.Now()), RuntimePath: p.rt.Name(), InitPid: 1,
		Hostname: p.meta.Hostname, Machine: unix.ByteSliceToString(uts.Machine[:]),
	})
	if err := o.to(ctx, opExecuting); err != nil {
		rs.fail(ctx, err)
		return
	}

	res, runErr := e.runProcess(ctx, p, merged, bundle, upper, rs)
	// A warm sandbox may go on into the next step (continue.go): its
	// processes are gone, so its upper dir is quiet while it stays up, and
	// the step's layer is what changed in it since its last commit.
	layerDir, now, entries, cont := e.continueStep(ctx, p, res, runErr)
	if cont {
		defer os.RemoveAll(layerDir) // committed: moved into the store
	} else {
		layerDir = upper
	}
	if !p.meta.Disposable && !cont {
		unmount() // the upper dir must be quiet before it is committed
	}
	var grown treeUsage
	if runErr == nil && ctx.Err() == nil {
		grown, runErr = e.checkGrowth(ctx, p, layerDir)
	}
	if runErr == nil && ctx.Err() == nil && !p.meta.Disposable {
		// The disk filled between two looks of the watcher: the run's
		// writes may have been cut short, and the commit has no room.
		runErr = e.diskExhausted()
	}
	e.events.emit(ctx, p.op, 0, oplog.EventShutdown, oplog.EventDataShutdown{StoppedAt: oplog.Timestamp(time.Now()), Reason: shutdownReason(ctx, res)})
	if runErr != nil {
		rs.fail(ctx, runErr)
		return
	}
	if cause := context.Cause(ctx); cause != nil {
		rs.fail(ctx, nil)
		return
	}
	if p.meta.Disposable {
		// Nothing to commit: report the result now and tear down after.
		// Should that fail, the outcome returned is recorded at the end.
		if err := o.finish(context.WithoutCancel(ctx), rs.outcome(p)); err != nil {
			e.log.Warn("record a disposable run's outcome", "operation", p.op, "err", err)
		}
		return
	}
	// Commit: an unchanged filesystem keeps the input image (ConTree's
	// rule), unless the run saves an environment the input does not give.
	empty, err := dirEmpty(upper)
	if cont {
		empty, err = entries == 0, nil
	}
	if err != nil {
		rs.fail(ctx, err)
		return
	}
	env := p.image.Env
	if p.meta.PreserveEnv {
		b, _ := json.Marshal(p.env) // a string map: cannot fail
		env = string(b)
	}
	if empty && (!p.meta.PreserveEnv || maps.Equal(p.env, p.inherited)) {
		rs.resultIm = p.image.UUID
		kept = cont && e.keepBox(p, wb, p.image.UUID, now)
		return
	}
	im := store.Image{UUID: newID(), Account: p.account, Parent: p.image.UUID, Layer: newLayerID(), Depth: p.image.Depth + 1,
		Operation: p.op, Env: env, LayerBytes: grown.bytes, CreatedAt: e.now()}
	// The image and the run's SUCCESS are one transaction.
	o.setResult(func(image string) outcome {
		r := *rs
		r.resultIm = image
		return r.outcome(p)
	})
	// A continued sandbox is in the pool before the commit makes the image
	// visible: a client that comes straight back finds it there.
	kept = cont && e.keepBox(p, wb, im.UUID, now)
	commit := e.commitLayer
	if cont {
		commit = e.commitStep // a diff's layer
	}
	if err := commit(ctx, layerDir, im); err != nil {
		kept = kept && !e.withdrawBox(wb)
		rs.fail(ctx, fmt.Errorf("commit: %w", err))
		return
	}
	rs.resultIm = im.UUID
	if a := e.activeOf(p.op); a != nil {
		a.growth.Store(0) // counted as stored now
	}
	e.maybeSquash(im.UUID)
	// Agents branch from the image they just made: have sandboxes ready.
	e.warmUp(keyOf(p, im.UUID), e.cfg.WarmPerImage)
	return
}

// tidyLater runs fns, in order, in the background; Close waits for them.
// A crash before they ran leaves a directory under run/, which the next
// start's recovery removes.
func (e *Engine) tidyLater(fns []func()) {
	if len(fns) == 0 {
		return
	}
	e.wg.Add(1) // the calling run is counted too: never from zero
	go func() {
		defer e.wg.Done()
		for _, f := range fns {
			f()
		}
	}()
}

func shutdownReason(ctx context.Context, res runtime.Result) string {
	switch context.Cause(ctx) {
	case errCancelled:
		return "cancelled"
	case errShutdown:
		return "daemon_shutdown"
	}
	if res.Killed && res.ExitCode == -1 {
		return "killed"
	}
	return "job_complete"
}

// fail records why the run did not succeed. ctx's cause wins: a cancelled
// run is CANCELLED whatever error its teardown produced.
func (rs *runState) fail(ctx context.Context, err error) {
	if out, ok := causeOutcome(ctx, "run"); ok {
		rs.status, rs.errMsg = out.state.String(), out.err
		return
	}
	if err != nil {
		rs.status, rs.errMsg = oplog.StatusFailed, err.Error()
	}
}

// outcome is the run's outcome as far as it got, with the request echo and
// the result as the operation's metadata.
func (rs *runState) outcome(p *runPlan) outcome {
	state, err := parseOpState(rs.status)
	if err != nil || !state.terminal() {
		state = opSuccess
	}
	m := redactMeta(p.meta)
	m.Result = rs.result
	mb, _ := json.Marshal(m) // plain data: cannot fail
	out := outcome{state: state, err: rs.errMsg, result: rs.resultIm, metadata: string(mb), cpu: rs.cpu, rss: rs.rss}
	// The requested tag only on a new image of a command that succeeded: a
	// failed step must not take over a known-good tag, and an unchanged
	// input keeps its own.
	if p.resultTag != "" && state == opSuccess && rs.resultIm != "" && rs.resultIm != p.image.UUID &&
		rs.result != nil && rs.result.State.ExitCode == 0 && !rs.result.State.TimedOut {
		out.tag = p.resultTag
	}
	return out
}

func dirEmpty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if err == io.EOF {
		return true, nil
	}
	return false, err
}

// placeFiles writes uploaded files into the run's root through the overlay,
// resolving every path inside the root so image symlinks cannot redirect
// writes to the host.
func (e *Engine) placeFiles(root string, files []placedFile) error {
	for _, f := range files {
		dst, err := securejoin.SecureJoin(root, f.path)
		if err != nil {
			return errdefs.InvalidArgument("file destination %s: %v", f.path, err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return errdefs.InvalidArgument("file destination %s: cannot create its directory: %v", f.path, err)
		}
		if fi, err := os.Lstat(dst); err == nil && fi.IsDir() {
			return errdefs.InvalidArgument("file destination %s is a directory in the image", f.path)
		}
		// A file the image has there is replaced; if it cannot be removed,
		// the O_EXCL open below fails and says so.
		_ = os.Remove(dst)
		src, err := os.Open(e.blobPath(f.sha))
		if err != nil {
			return fmt.Errorf("open uploaded file %s: %w", f.sha, err)
		}
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			src.Close()
			return fmt.Errorf("place %s: %w", f.path, err)
		}
		_, err = io.Copy(out, src)
		src.Close()
		if err == nil {
			err = out.Chown(f.uid, f.gid)
		}
		if err == nil {
			err = out.Chmod(os.FileMode(f.mode&0o777) | modeBits(f.mode))
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("place %s: %w", f.path, err)
		}
	}
	return nil
}

func modeBits(m uint32) os.FileMode {
	var out os.FileMode
	if m&0o4000 != 0 {
		out |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	return out
}

// findExecutable reports whether args[0] exists in the image, resolving it
// on PATH as execve would.
func findExecutable(root, cmd, pathEnv string) bool {
	check := func(p string) bool {
		hp, err := securejoin.SecureJoin(root, p)
		if err != nil {
			return false
		}
		fi, err := os.Stat(hp)
		return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
	}
	if strings.Contains(cmd, "/") {
		return check(cmd)
	}
	for _, d := range strings.Split(pathEnv, ":") {
		if d != "" && check(path.Join(d, cmd)) {
			return true
		}
	}
	return false
}

func (e *Engine) runProcess(ctx context.Context, p *runPlan, merged, bundle, upper string, rs *runState) (runtime.Result, error) {
	stdout := &capture{e: e, op: p.op, spid: 1, stream: oplog.EventStdout, limit: p.truncate}
	stderr := &capture{e: e, op: p.op, spid: 1, stream: oplog.EventStderr, limit: p.truncate}
	spawn := oplog.EventDataSpawn{Command: p.args[0], Args: p.args[1:], Shell: p.meta.Shell, Cwd: p.meta.Cwd, UID: p.meta.UID,
		GID: p.meta.GID, Timeout: p.meta.Timeout, TruncateAt: p.truncate, Env: redactEnv(p.env)}

	res := runtime.Result{Signal: -1}
	var err error
	var timedOut, sizeCapped bool
	var capErr capHit
	if !findExecutable(merged, p.args[0], p.env["PATH"]) {
		e.events.emit(ctx, p.op, 1, oplog.EventSpawn, spawn)
		fmt.Fprintf(stderr, "arbor: %q not found in the image (or not executable); PATH=%s. Install it in an earlier run, use an absolute path, or run it through shell=true.\n", p.args[0], p.env["PATH"])
		res.ExitCode = 127
		res.Started = time.Now()
	} else {
		if p.meta.Cwd != "" {
			if d, err := securejoin.SecureJoin(merged, p.meta.Cwd); err == nil {
				if _, err := os.Stat(d); os.IsNotExist(err) {
					if err := asSandboxRoot(p.ids, func() error { return os.MkdirAll(d, 0o755) }); err != nil {
						// The runtime then fails to enter it and the run says so.
						e.log.Warn("create working directory", "operation", p.op, "cwd", p.meta.Cwd, "err", err)
					}
				}
			}
		}
		// The timeout is the command's: its clock starts when the command
		// does (OnStart), not while the sandbox boots, so a loaded host does
		// not eat a short timeout. Until then e.bootAllowance more bounds a
		// boot that hangs.
		runCtx, cancelRun := context.WithCancelCause(ctx)
		defer cancelRun(nil)
		clock := time.AfterFunc(p.timeout+e.bootAllowance, func() { cancelRun(context.DeadlineExceeded) })
		defer clock.Stop()
		sizeCtx, sizeCancel := context.WithCancelCause(runCtx)
		defer sizeCancel(nil)
		stopWatch := e.watchGrowth(sizeCtx, sizeCancel, p, upper)
		a := e.activeOf(p.op)
		stdinR, stdinW, perr := stdinPipe(p.stdin, p.meta.Stdin.Close)
		if perr != nil {
			return res, perr
		}
		netnsPath, usernsPath := "", ""
		stopEgress := func() {}
		if p.network {
			n := (*netns.Net)(nil)
			if p.warm != nil {
				n = p.warm.net // joined at boot; released with the sandbox
			} else {
				var err error
				if n, err = e.createNet(ctx, p.ids); err != nil {
					return res, fmt.Errorf("sandbox network: %w", err)
				}
				defer e.nets.Release(n)
			}
			netnsPath, usernsPath = n.Path, n.UserNS
			stop, err := e.startEgress(ctx, p, n)
			if err != nil {
				return res, fmt.Errorf("sandbox egress policy: %w", err)
			}
			defer stop()
			stopEgress = stop
			ip, gw := n.IP, n.Gateway
			e.events.emit(ctx, p.op, 0, oplog.EventNetwork, oplog.EventDataNetwork{
				Interfaces: []oplog.NetworkInterface{{Name: "eth0"}},
				Configured: &oplog.NetworkConfigured{IP4: ip + "/30", IP4Gw: gw},
			})
		}
		cid := "arbor-" + p.op
		if p.warm != nil {
			cid = p.warm.cid
		}
		var spec runtime.Spec
		started := false // OnStart has run; read once the runtime has returned
		spec = runtime.Spec{
			ID: cid, NetNS: netnsPath, UserNS: usernsPath, Bundle: bundle, Rootfs: merged, Args: p.args, Env: envList(p.env), Cwd: p.meta.Cwd,
			UID: uint32(p.meta.UID), GID: uint32(p.meta.GID), Hostname: p.meta.Hostname,
			MemoryBytes: p.memory, Pids: p.pids, CPUs: p.cpus, FileSizeLimit: p.fileSize(), IDMap: p.ids,
			Stdin: stdinR, Stdout: stdout, Stderr: stderr,
			OnStart: func(pid int) {
				started = true
				clock.Reset(p.timeout)
				stdinR.Close() // the runtime has its copy
				spawn.Pid = pid
				e.events.emit(ctx, p.op, 1, oplog.EventSpawn, spawn)
				if a != nil {
					a.mu.Lock()
					a.sandbox = &sandboxRef{rt: p.rt, cid: spec.ID, p: p, upper: upper}
					a.procs[1] = &proc{pid: pid, stdin: stdinW}
					if p.agent != nil {
						a.procs[1].signal = p.agent.Signal // pid is the sandbox's own
					}
					a.mu.Unlock()
					close(a.running)
				}
			},
		}
		if e.beforeBoot != nil {
			e.beforeBoot(p.op)
		}
		switch {
		case p.restore != nil:
			res, err = e.execRestored(sizeCtx, p, spec)
		case p.warm != nil:
			res, err = e.execWarm(sizeCtx, p, spec)
		case e.initBin != "":
			res, err = e.execCold(sizeCtx, p, spec)
		default: // no static init: the command is the sandbox's PID 1
			res, err = p.rt.Run(sizeCtx, spec)
		}
		stopWatch()
		stopEgress() // its report comes before the exit event
		if a != nil {
			a.mu.Lock()
			sb := a.sandbox
			a.exited, a.sandbox = true, nil
			for _, pr := range a.procs {
				if pr.stdin != nil {
					pr.stdin.Close()
					pr.stdin = nil
				}
			}
			a.mu.Unlock()
			e.endLateExecs(ctx, p, a, sb) // exec'd processes die with the sandbox; log their exits first
		} else if stdinW != nil {
			stdinW.Close()
		}
		if err != nil && !started && ctx.Err() == nil && context.Cause(runCtx) == context.DeadlineExceeded {
			err = errdefs.Unavailable("the sandbox did not start within %v (the host is overloaded): nothing ran; run it again, or fewer at once", p.timeout+e.bootAllowance)
		}
		if err != nil {
			stdout.finish() // no output event after the operation's end
			stderr.finish()
			return res, err
		}
		if res.Killed {
			res.Signal, res.ExitCode = int(syscall.SIGKILL), -1
			switch {
			case errors.As(context.Cause(sizeCtx), &capErr):
				sizeCapped = true
			case ctx.Err() == nil && runCtx.Err() != nil:
				timedOut = true
			}
		}
	}
	stdout.finish()
	stderr.finish()
	ru := res.Rusage
	dur := res.Duration
	exit := oplog.EventDataExit{Pid: spawn.Pid, Code: res.ExitCode, Signal: res.Signal, TimedOut: timedOut, DurationMs: dur.Milliseconds(),
		Resources: resources(ru)}
	e.events.emit(ctx, p.op, 1, oplog.EventExit, exit)
	user := float64(exit.Resources.UserTimeUs) / 1e6
	sys := float64(exit.Resources.SysTimeUs) / 1e6
	rs.cpu = user + sys
	rs.rss = ru.Maxrss * 1024
	rs.result = &oplog.InstanceResult{
		Resources: oplog.InstanceResultResources{
			BlockInput: ru.Inblock, BlockOutput: ru.Oublock, ElapsedTime: dur.Seconds(), InvoluntarySwitches: ru.Nivcsw,
			MaxRSS: ru.Maxrss, MonotonicTime: dur.Seconds(), PageFaults: ru.Minflt, PageFaultsIO: ru.Majflt, SharedMemory: ru.Ixrss,
			Signals: ru.Nsignals, Swaps: ru.Nswap, SystemCPUTime: sys, UnsharedMemory: ru.Idrss, UserCPUTime: user, VoluntarySwitches: ru.Nvcsw,
		},
		State:  oplog.InstanceResultState{ExitCode: res.ExitCode, Signal: res.Signal, TimedOut: timedOut, Pid: spawn.Pid},
		Stdout: oplog.NewStreamRepr(stdout.buf.Bytes(), stdout.dropped > 0),
		Stderr: oplog.NewStreamRepr(stderr.buf.Bytes(), stderr.dropped > 0),
	}
	if sizeCapped {
		return res, capErr.err
	}
	return res, nil
}

// watchGrowth kills the run when its upper dir outgrows its limit (the
// growth cap or what is left of the account's quota, see growthLimit),
// measured in disk blocks and inodes. One file is bounded at once by
// RLIMIT_FSIZE (p.fileSize); checkGrowth catches what the watcher missed.
func (e *Engine) watchGrowth(ctx context.Context, cancel context.CancelCauseFunc, p *runPlan, upper string) (stop func()) {
	p.limit, _ = e.growthLimit(ctx, p) // for fileSize; the checks ask again, for which limit it is
	a := e.activeOf(p.op)
	return pollGrowth(ctx, func() bool {
		n := max(0, dirBytes(upper)-p.growthBase())
		if a != nil && !p.meta.Disposable {
			a.growth.Store(n) // on its way to the account's storage
		}
		if limit, quota := e.growthLimit(ctx, p); n > limit {
			e.events.emit(ctx, p.op, 0, oplog.EventSizeCap, oplog.EventDataSizeCap{LimitBytes: limit, FileSize: n})
			cancel(capHit{e.sizeCapError(limit, quota)})
			return true
		}
		if err := e.diskExhausted(); err != nil && n > 0 {
			cancel(capHit{err}) // a run that writes nothing is not the one filling the disk
			return true
		}
		return false
	})
}

// capHit is the cause a run is killed with when it outgrows its limit.
type capHit struct{ err error }

func (c capHit) Error() string { return c.err.Error() }

func (c capHit) Unwrap() error { return c.err }

// fileSize is the run's RLIMIT_FSIZE: one byte over its limit, so that a
// file cut short by it is bigger than the limit and checkGrowth tells it
// from a file that merely fits.
func (p *runPlan) fileSize() int64 {
	if p.limit <= 0 {
		return 1 // nothing may be written; 0 would mean unlimited
	}
	return p.limit + 1
}

// capture keeps the first limit bytes of a stream, emitting them as events,
// and counts the rest. Writes never block on the cap, so an output bomb only
// costs the reading. Output is coalesced: one event per flushBytes or per
// flushDelay, whichever comes first, written by one flusher goroutine while
// no lock is held, so a stream of tiny writes costs a few rows, not one row
// per write, and the writer never waits for the database.
type capture struct {
	e       *Engine
	op      string
	spid    int
	stream  string
	limit   int64
	mu      sync.Mutex
	buf     bytes.Buffer
	dropped int64

	pend     []byte        // kept bytes not yet in an event
	flushing bool          // a flusher goroutine is running
	closing  bool          // finish was called: drain without waiting
	kick     chan struct{} // wakes the flusher before its delay
	done     chan struct{} // closed when the flusher exits
}

const (
	flushBytes    = 16 << 10             // pending output that is flushed at once
	maxEventBytes = 64 << 10             // largest output event
	flushDelay    = 5 * time.Millisecond // longest a byte waits for its event
)

func (c *capture) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := c.limit - int64(c.buf.Len())
	take := int64(len(b))
	if take > room {
		take = max(room, 0)
	}
	if take > 0 {
		c.buf.Write(b[:take])
		c.pend = append(c.pend, b[:take]...)
		if !c.flushing {
			c.flushing = true
			c.kick, c.done = make(chan struct{}, 1), make(chan struct{})
			go c.flushLoop(c.kick, c.done)
		}
		if len(c.pend) >= flushBytes || c.closing {
			select {
			case c.kick <- struct{}{}:
			default:
			}
		}
	}
	c.dropped += int64(len(b)) - take
	return len(b), nil
}

// flushLoop turns pending output into events until none is left.
func (c *capture) flushLoop(kick <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTimer(flushDelay)
	defer t.Stop()
	for wait := true; ; {
		if wait {
			select {
			case <-t.C:
			case <-kick:
			}
		}
		c.mu.Lock()
		chunk := c.pend
		c.pend = nil
		if len(chunk) == 0 {
			c.flushing = false
			c.mu.Unlock()
			return
		}
		wait = !c.closing
		c.mu.Unlock()
		c.emit(chunk)
		if wait {
			t.Reset(flushDelay)
		}
	}
}

// emit appends chunk as output events of at most maxEventBytes each.
func (c *capture) emit(chunk []byte) {
	eventChunks(chunk, func(b []byte) {
		r := oplog.NewStreamRepr(b, false)
		c.e.events.emit(context.Background(), c.op, c.spid, c.stream, oplog.EventDataStream{Value: r.Value, Encoding: r.Encoding})
	})
}

// eventChunks calls fn with b cut into pieces of at most maxEventBytes:
// one SSE frame must stay under the clients' 4 MiB parser cap, and bytes
// grow in JSON.
func eventChunks(b []byte, fn func([]byte)) {
	for len(b) > 0 {
		n := min(len(b), maxEventBytes)
		fn(b[:n])
		b = b[n:]
	}
}

// finish writes out all pending output, then the truncation notice if any:
// call it once the stream has ended, before the process's exit event.
func (c *capture) finish() {
	c.mu.Lock()
	c.closing = true
	flushing, done := c.flushing, c.done
	if flushing {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	if flushing {
		<-done
	}
	c.mu.Lock()
	chunk := c.pend
	c.pend = nil
	emitted, dropped := int64(c.buf.Len()), c.dropped
	c.mu.Unlock()
	c.emit(chunk)
	if dropped > 0 {
		c.e.events.emit(context.Background(), c.op, c.spid, oplog.EventTruncated, oplog.EventDataTruncated{
			Stream: c.stream, BytesEmitted: emitted, BytesDropped: dropped})
	}
}

var secretSuffixes = []string{"token", "secret", "password", "api_key", "credentials", "authorization"}

// redactEnv masks values whose names look like secrets.
func redactEnv(env map[string]string) map[string]string {
	out := make(map[string]string, len(env))
	for k, v := range env {
		lk := strings.ToLower(k)
		for _, s := range secretSuffixes {
			if strings.HasSuffix(lk, s) {
				v = "<MASKED>"
				break
			}
		}
		out[k] = v
	}
	return out
}

func redactMeta(m oplog.InstanceMetadata) oplog.InstanceMetadata {
	m.Env = redactEnv(m.Env)
	return m
}
