package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/overlay"
)

// hostInfo describes this machine and the runtime binaries.
func hostInfo(runtimes []string) Host {
	h := Host{CPUs: goruntime.NumCPU(), GoVersion: goruntime.Version(), LoadBefore: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				h.MemoryBytes = kb * 1024
			}
		}
	}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		h.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, modified := "", ""
		for _, st := range bi.Settings {
			switch st.Key {
			case "vcs.revision":
				rev = st.Value
			case "vcs.modified":
				if st.Value == "true" {
					modified = " (modified)"
				}
			}
		}
		if rev != "" {
			h.Build = rev + modified
		}
	}
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		if b, err := os.ReadFile(p); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
					h.OS = strings.Trim(v, `"`)
				}
			}
			break
		}
	}
	if h.OS == "" {
		if b, err := os.ReadFile("/etc/debian_version"); err == nil {
			h.OS = "Debian " + strings.TrimSpace(string(b))
		}
	}
	for _, rt := range runtimes {
		info := RTInfo{Name: rt}
		if p, err := exec.LookPath(rt); err == nil {
			info.Path = p
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			out, _ := exec.CommandContext(ctx, p, "--version").Output()
			cancel()
			info.Version = strings.Join(strings.Fields(strings.ReplaceAll(string(out), "\n", "; ")), " ")
		}
		h.Runtimes = append(h.Runtimes, info)
	}
	return h
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// fsType names the filesystem holding dir, from /proc/self/mountinfo.
func fsType(dir string) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	best, typ, src := "", "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			continue
		}
		mp := fields[4]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, typ, src = mp, fields[sep+1], fields[sep+2]
		}
	}
	if typ == "" {
		return ""
	}
	return typ + " on " + src
}

// DaemonConfig is how [Run] wants one of its private daemons started: the
// settings of `arbor serve` the benchmark states in its report.
type DaemonConfig struct {
	Home            string
	Listen          string // a loopback address with port 0
	Runtime         string // the default runtime
	AllowedRuntimes []string
	Slots           int
	SquashDepth     int
	// MaxConcurrentOps is the per-account bound; high, so fan-out is not
	// refused by it.
	MaxConcurrentOps int
	// WarmPerImage < 0 turns the warm pool off; otherwise WarmPerImage,
	// WarmMax and InitBinary size it and boot its sandboxes.
	WarmPerImage, WarmMax int
	InitBinary            string
	Logger                *slog.Logger
	// Ready must be called with the daemon's base URL once it serves.
	Ready func(url string)
	// Cluster, if its DB is set, makes the daemon a node of the cluster
	// section's cluster (cluster.go).
	Cluster ClusterNode
}

// daemonConn is one private daemon and a client connected to it.
type daemonConn struct {
	name string // "cold" (warm pool off) or "warm" (the engine's default pool)
	home string
	c    *client.Client
	logs *logRecorder
	base string // the busybox image
	stop func() error
	// pollCPU is the CPU one GET /v1/status costs this process (client
	// and in-process daemon), measured on the idle daemon.
	pollCPU time.Duration
}

// startDaemon runs a daemon through Options.Serve on a loopback port, with
// its own home below the benchmark's, and connects a client to it. With
// warm false the warm pool is off, so every run boots a sandbox; with warm
// true the pool has the engine's defaults. Options, if any, change the
// configuration last.
func (b *bench) startDaemon(ctx context.Context, name string, warm bool, options ...func(*DaemonConfig)) (*daemonConn, error) {
	d := &daemonConn{name: name, home: filepath.Join(b.home, name), logs: &logRecorder{next: slog.DiscardHandler}}
	if b.o.Logger != nil {
		d.logs.next = b.o.Logger.With("daemon", name).Handler()
	}
	if err := os.MkdirAll(d.home, 0o700); err != nil {
		return nil, err
	}
	dc := DaemonConfig{
		Home: d.home, Listen: "127.0.0.1:0",
		Runtime:          b.o.Runtimes[0],
		AllowedRuntimes:  append([]string{b.chainRT}, b.o.Runtimes...), // the operator here is the benchmark
		Slots:            b.rep.Setup.Slots,
		SquashDepth:      b.rep.Setup.SquashDepth,
		MaxConcurrentOps: 4096,
		WarmPerImage:     -1,
		Logger:           slog.New(d.logs),
		// Cold runs start through the init too: in a test binary, the one
		// the engine would find by itself is the test binary.
		InitBinary: b.o.InitBinary,
	}
	if warm {
		// The engine's defaults, stated so the report says what ran.
		dc.WarmPerImage, dc.WarmMax = defaultWarmPerImage, defaultWarmMax
	}
	if b.tweak != nil {
		b.tweak(name, &dc)
	}
	for _, o := range options {
		o(&dc)
	}
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ready := make(chan string, 1)
	done := make(chan error, 1)
	dc.Ready = func(url string) { ready <- url }
	go func() { done <- b.o.Serve(dctx, dc) }()
	stopped := false
	d.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			return fmt.Errorf("bench: the %s daemon did not stop within 60 s", name)
		}
	}
	var url string
	select {
	case url = <-ready:
	case err := <-done:
		cancel()
		if err == nil {
			err = errors.New("daemon stopped before serving")
		}
		return nil, fmt.Errorf("start the %s daemon: %w", name, err)
	case <-ctx.Done():
		_ = d.stop()
		return nil, ctx.Err()
	}
	tok, err := os.ReadFile(filepath.Join(d.home, "token"))
	if err != nil {
		_ = d.stop()
		return nil, fmt.Errorf("read the %s daemon's token: %w", name, err)
	}
	// Many idle connections, so fan-out does not reconnect for every run.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1024
	tr.MaxIdleConns = 1024
	d.c, err = client.New(url, strings.TrimSpace(string(tok)), client.WithHTTPClient(&http.Client{Transport: tr}), client.WithUserAgent("arbor-bench"))
	if err == nil && dc.Cluster.Role != "worker" { // a worker answers only its peers
		d.pollCPU, err = d.measurePoll(ctx)
	}
	if err != nil {
		_ = d.stop()
		return nil, err
	}
	return d, nil
}

// measurePoll returns the CPU one GET /v1/status costs this process: the
// least per call over a few batches, so background work of the fresh
// daemon does not count.
func (d *daemonConn) measurePoll(ctx context.Context) (time.Duration, error) {
	const batches, calls = 3, 10
	best := time.Duration(-1)
	for range batches {
		self0, _ := cpuNow()
		for range calls {
			if _, err := d.c.Status(ctx); err != nil {
				return 0, fmt.Errorf("the %s daemon's status: %w", d.name, err)
			}
		}
		self1, _ := cpuNow()
		if per := (self1 - self0) / calls; best < 0 || per < best {
			best = per
		}
	}
	return best, nil
}

// warmStatus reads the warm pool's state through GET /v1/status.
func (d *daemonConn) warmStatus(ctx context.Context) (apitypes.WarmPoolStatus, error) {
	st, err := d.c.Status(ctx)
	if err != nil {
		return apitypes.WarmPoolStatus{}, fmt.Errorf("the %s daemon's status: %w", d.name, err)
	}
	return st.WarmPool, nil
}

// waitPoolSettled waits until the daemon's warm pool has nothing left to
// do (no run in flight, no boot running or waiting for quiet) and holds at
// least minIdle idle sandboxes, polling GET /v1/status (no event says so).
// It returns the CPU its polling cost this process, to be taken off the
// self CPU of a sample it ends.
func (d *daemonConn) waitPoolSettled(ctx context.Context, rt string, minIdle int) (time.Duration, error) {
	deadline := time.Now().Add(60 * time.Second)
	for polls := 1; ; polls++ {
		w, err := d.warmStatus(ctx)
		if err != nil {
			return 0, err
		}
		if w.Settled() && w.Idle >= minIdle {
			return time.Duration(polls) * d.pollCPU, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the %s warm pool did not settle within 60 s: %+v", rt, w)
		}
		// Settling is outside every measured wall time, so poll seldom:
		// each poll's CPU falls inside a sample's.
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// removeHome removes a temporary home, first detaching anything a crashed
// run left mounted below it.
func removeHome(home string) error {
	_ = overlay.UnmountUnder(home)
	return os.RemoveAll(home)
}

// busyboxTar returns the busybox root filesystem as a tarball.
func busyboxTar() ([]byte, error) {
	var buf bytes.Buffer
	if err := baseimage.WriteBusyboxTar(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// importTar uploads a rootfs tarball and imports it as an image.
func (d *daemonConn) importTar(ctx context.Context, tar []byte) (string, error) {
	f, err := d.c.UploadFile(ctx, bytes.NewReader(tar))
	if err != nil {
		return "", fmt.Errorf("upload base image: %w", err)
	}
	id, err := d.c.ImportImage(ctx, apitypes.ImageImportRequest{Registry: apitypes.ImageImportRegistry{URL: "upload://" + f.UUID}})
	if err != nil {
		return "", fmt.Errorf("import base image: %w", err)
	}
	op, err := d.c.Wait(ctx, id)
	if err != nil {
		return "", fmt.Errorf("wait for the base image import: %w", err)
	}
	if op.Status != apitypes.StatusSuccess {
		return "", fmt.Errorf("base image import %s: %s", op.Status, deref(op.Error))
	}
	img := resultImage(op)
	if img == "" {
		return "", errors.New("base image import succeeded without an image")
	}
	return img, nil
}

func resultImage(op *apitypes.OperationResponse) string {
	if op.ResultImageUUID != nil && *op.ResultImageUUID != "" {
		return *op.ResultImageUUID
	}
	return deref(op.Result.Image)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// logRecorder is the private daemon's slog handler: it notes background
// squashes and warnings for the report and forwards everything to next.
type logRecorder struct {
	next slog.Handler

	mu          sync.Mutex
	squashes    int
	squashMaxMs float64
	squashed    map[string]bool // images whose chain was squashed
	warns       []string
	warnCount   int
}

// recorderHandler is a logRecorder's view with attributes or a group added;
// every view records into the same logRecorder.
type recorderHandler struct {
	r    *logRecorder
	next slog.Handler
}

func (l *logRecorder) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= slog.LevelInfo || l.next.Enabled(ctx, lv)
}

func (l *logRecorder) Handle(ctx context.Context, rec slog.Record) error {
	return (&recorderHandler{r: l, next: l.next}).Handle(ctx, rec)
}

func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorderHandler{r: l, next: l.next.WithAttrs(as)}
}

func (l *logRecorder) WithGroup(name string) slog.Handler {
	return &recorderHandler{r: l, next: l.next.WithGroup(name)}
}

func (h *recorderHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= slog.LevelInfo || h.next.Enabled(ctx, lv)
}

func (h *recorderHandler) Handle(ctx context.Context, rec slog.Record) error {
	h.r.record(rec)
	if h.next.Enabled(ctx, rec.Level) {
		return h.next.Handle(ctx, rec)
	}
	return nil
}

func (h *recorderHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorderHandler{r: h.r, next: h.next.WithAttrs(as)}
}

func (h *recorderHandler) WithGroup(name string) slog.Handler {
	return &recorderHandler{r: h.r, next: h.next.WithGroup(name)}
}

// Engine log messages the recorder looks for.
const (
	squashMsg = "squashed image chain"
)

func (l *logRecorder) record(rec slog.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case rec.Message == squashMsg:
		l.squashes++
		rec.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "image":
				if l.squashed == nil {
					l.squashed = map[string]bool{}
				}
				l.squashed[a.Value.String()] = true
			case "took":
				if d, ok := a.Value.Any().(time.Duration); ok {
					l.squashMaxMs = max(l.squashMaxMs, ms(d))
				}
			}
			return true
		})
	case rec.Level >= slog.LevelWarn:
		l.warnCount++
		if len(l.warns) < 10 {
			var sb strings.Builder
			sb.WriteString(rec.Message)
			rec.Attrs(func(a slog.Attr) bool {
				fmt.Fprintf(&sb, " %s=%v", a.Key, a.Value)
				return true
			})
			l.warns = append(l.warns, sb.String())
		}
	}
}

// isSquashed reports whether the daemon has logged a squash of image u.
func (l *logRecorder) isSquashed(u string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.squashed[u]
}

func (l *logRecorder) warnings() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]string(nil), l.warns...)
	if l.warnCount > len(l.warns) {
		out = append(out, fmt.Sprintf("... and %d more warnings", l.warnCount-len(l.warns)))
	}
	return out
}
