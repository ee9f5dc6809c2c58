package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"time"
)

// Section names, in the order of the report.
const (
	SectionTimeToResult = "ttr"
	SectionFanOut       = "fanout"
	SectionCommit       = "commit"
	SectionChain        = "chain"
	SectionInspect      = "inspect"
	SectionStorage      = "storage"
	SectionContinue     = "continue"
	// SectionCluster is measured only when asked for, with Options.Cluster.
	SectionCluster = "cluster"
	SectionFork    = "fork"
)

// AllSections lists every section, in report order.
var AllSections = []string{SectionTimeToResult, SectionFanOut, SectionCommit, SectionChain, SectionInspect, SectionStorage, SectionContinue, SectionFork}

// Options configures [Run]. Zero values take the defaults noted; Quick
// changes several of them into a smoke that takes one to two minutes.
type Options struct {
	// Runtimes are the OCI runtimes to compare: "runsc", "runc", "crun".
	// Default: runsc and runc, those of them installed.
	Runtimes []string
	// Iterations is the number of samples per latency point, after one
	// discarded warm-up run (deep-chain probes take half, at least 3).
	// Default 20; quick 3.
	Iterations int
	// Quick selects a short smoke for CI: fewer samples, fan-out up to 4,
	// chains to depth 50, a 64 MiB "big" image.
	Quick bool
	// JSON makes Run write the report as JSON instead of a table.
	JSON bool
	// Home holds the private daemons' state (cold/ and warm/) and the raw
	// bundles (raw/). Default: a temporary directory, removed afterwards;
	// a given Home is kept.
	Home string

	// Sections limits the run to these sections (see [AllSections]);
	// default all. Inspect builds the chain it needs if Chain is not run.
	Sections []string
	// FanOut lists the fan-out widths, measured with the warm pool off;
	// the widest up to 16 is also measured with the pool on. Default 1, 4,
	// 16, 64; quick 1, 4.
	FanOut []int
	// Depths lists the chain depths probed. Depth 1 (the base image) is
	// always added, as the reference. Default 1, 100, 500, 1000; quick 1, 50.
	Depths []int
	// InspectDepth is the depth of the image inspected. Default 100; quick 20.
	InspectDepth int
	// BigImageBytes is the size of the file in the commit section's big
	// image. Default 1 GiB; quick 64 MiB.
	BigImageBytes int64

	// InitBinary is the static init the warm daemon's sandboxes need
	// (cmd/arbor-init). Default: what the engine finds (this executable if
	// static, or arbor-init beside it). Without one the warm figures are
	// reported as not measured.
	InitBinary string
	// NoWarm skips the warm-pool daemon and its figures.
	NoWarm bool

	// Serve runs one private daemon with c until ctx ends, as `arbor
	// serve` does (the CLI passes internal/daemon.Run); the benchmark
	// reaches it only through its API and its home. Required.
	Serve func(ctx context.Context, c DaemonConfig) error

	// HardenedBundle, if set, returns the config.json arbor's runtime
	// driver writes for a cold runc or crun run of args with env on rootfs
	// (the CLI passes internal/daemon.HardenedBundle). The fan-out section
	// then also runs the raw shell command in it: the hardened raw floor.
	HardenedBundle func(kind, rootfs string, args, env []string) ([]byte, error)

	// Cluster is the shared state of the cluster section's nodes.
	Cluster ClusterOptions

	// Progress, if set, receives a line per step of the run.
	Progress io.Writer
	// Logger, if set, receives the private daemons' logs (attribute
	// daemon=cold or daemon=warm).
	Logger *slog.Logger
}

// knownRuntimes are the runtimes the engine can drive.
var knownRuntimes = []string{"runsc", "runc", "crun"}

func (o Options) withDefaults() (Options, error) {
	if o.Serve == nil {
		return o, errors.New("bench: Options.Serve is required: it starts the private daemons")
	}
	if len(o.Runtimes) == 0 {
		for _, rt := range []string{"runsc", "runc"} {
			if _, err := exec.LookPath(rt); err == nil {
				o.Runtimes = append(o.Runtimes, rt)
			}
		}
		if len(o.Runtimes) == 0 {
			return o, errors.New("bench: neither runsc nor runc is installed (see scripts/setup.sh)")
		}
	}
	seen := map[string]bool{}
	for _, rt := range o.Runtimes {
		if !slices.Contains(knownRuntimes, rt) {
			return o, fmt.Errorf("bench: unknown runtime %q: use runsc, runc or crun", rt)
		}
		if seen[rt] {
			return o, fmt.Errorf("bench: runtime %q listed twice", rt)
		}
		seen[rt] = true
		if _, err := exec.LookPath(rt); err != nil {
			return o, fmt.Errorf("bench: runtime %s is not installed (not in PATH)", rt)
		}
	}
	if o.Iterations < 0 || o.InspectDepth < 0 || o.BigImageBytes < 0 {
		return o, errors.New("bench: Iterations, InspectDepth and BigImageBytes must not be negative")
	}
	if o.Iterations == 0 {
		o.Iterations = 20
		if o.Quick {
			o.Iterations = 3
		}
	}
	if len(o.Sections) == 0 {
		o.Sections = AllSections
	}
	for _, s := range o.Sections {
		if !slices.Contains(AllSections, s) && s != SectionCluster {
			return o, fmt.Errorf("bench: unknown section %q (sections: %v)", s, AllSections)
		}
	}
	if len(o.FanOut) == 0 {
		o.FanOut = []int{1, 4, 16, 64}
		if o.Quick {
			o.FanOut = []int{1, 4}
		}
	}
	for _, n := range o.FanOut {
		if n < 1 || n > 1024 {
			return o, fmt.Errorf("bench: fan-out width %d out of range 1..1024", n)
		}
	}
	if len(o.Depths) == 0 {
		o.Depths = []int{1, 100, 500, 1000}
		if o.Quick {
			o.Depths = []int{1, 50}
		}
	}
	depths := []int{1}
	for _, d := range o.Depths {
		if d < 1 || d > 100000 {
			return o, fmt.Errorf("bench: depth %d out of range 1..100000", d)
		}
		if !slices.Contains(depths, d) {
			depths = append(depths, d)
		}
	}
	slices.Sort(depths)
	o.Depths = depths
	if o.InspectDepth == 0 {
		o.InspectDepth = 100
		if o.Quick {
			o.InspectDepth = 20
		}
	}
	if o.InspectDepth < 3 {
		return o, errors.New("bench: InspectDepth must be at least 3")
	}
	if o.BigImageBytes == 0 {
		o.BigImageBytes = 1 << 30
		if o.Quick {
			o.BigImageBytes = 64 << 20
		}
	}
	return o, nil
}

func (o Options) has(section string) bool { return slices.Contains(o.Sections, section) }

// Run measures arbor against the raw runtimes on this machine and returns
// the report. It writes the report to w as a table, or as JSON if
// opts.JSON. It needs root.
//
// Run fails only when something could not be measured (a run failed, the
// daemon did not start); missed targets are part of the report. On failure
// the returned report holds the sections finished so far, and nothing is
// written to w.
func Run(ctx context.Context, opts Options, w io.Writer) (Report, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return Report{}, err
	}
	if os.Geteuid() != 0 {
		return Report{}, errors.New("arbor bench needs root (its private daemon mounts overlays and starts sandboxes): run it with sudo")
	}
	start := time.Now()
	b := &bench{o: o, start: start, rep: &Report{Schema: ReportSchema, StartedAt: start.UTC().Format(time.RFC3339), Quick: o.Quick}}
	err = b.run(ctx)
	b.rep.Host.LoadAfter = loadAvg()
	b.rep.Seconds = round3(time.Since(start).Seconds())
	if err != nil {
		return *b.rep, err
	}
	if w != nil {
		if o.JSON {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			err = enc.Encode(b.rep)
		} else {
			err = WriteTable(w, *b.rep)
		}
	}
	return *b.rep, err
}

// bench is the state of one Run.
type bench struct {
	o     Options
	rep   *Report
	start time.Time

	home string
	cold *daemonConn // warm pool off: every run boots its sandbox
	warm *daemonConn // the engine's default warm pool; nil if unavailable
	raw  *rawSet

	chainRT    string
	chain      []string        // chain[i] is the chain image at depth i+1 (cold daemon); chain[0] is its base
	chainSteps []time.Duration // time of each step that built the chain
	chainMs    float64

	// tweak, if set, adjusts a private daemon's configuration by name
	// before it starts (the cluster section's nodes).
	tweak func(name string, dc *DaemonConfig)
}

func (b *bench) progress(format string, args ...any) {
	if b.o.Progress != nil {
		fmt.Fprintf(b.o.Progress, "bench: %5.1fs "+format+"\n", append([]any{time.Since(b.start).Seconds()}, args...)...)
	}
}

func (b *bench) note(format string, args ...any) {
	b.rep.Notes = append(b.rep.Notes, fmt.Sprintf(format, args...))
}

func (b *bench) run(ctx context.Context) (err error) {
	b.rep.Host = hostInfo(b.o.Runtimes)
	b.chainRT = b.o.Runtimes[0]
	if slices.Contains(b.o.Runtimes, "runc") {
		b.chainRT = "runc"
	} else if _, err := exec.LookPath("runc"); err == nil {
		b.chainRT = "runc"
	}
	b.rep.Setup = Setup{
		Runtimes:     b.o.Runtimes,
		Iterations:   b.o.Iterations,
		Sections:     b.o.Sections,
		Slots:        max(8, 4*goruntime.NumCPU()),
		SquashDepth:  defaultSquashDepth,
		ChainRuntime: b.chainRT,
		BaseImage:    "busybox (Debian busybox-static, applet links, minimal /etc)",
	}

	b.home = b.o.Home
	if b.home == "" {
		if b.home, err = os.MkdirTemp("", "arbor-bench-"); err != nil {
			return err
		}
		// runc sandboxes run as unprivileged host users: they must traverse it.
		if err := os.Chmod(b.home, 0o711); err != nil {
			return err
		}
		defer func() {
			if rerr := removeHome(b.home); rerr != nil && err == nil {
				err = fmt.Errorf("remove %s: %w", b.home, rerr)
			}
		}()
	} else if b.home, err = filepath.Abs(b.home); err != nil {
		return err
	}
	b.rep.Host.Filesystem = fsType(b.home)
	tar, err := busyboxTar()
	if err != nil {
		return err
	}
	b.rep.Setup.BaseBytes = int64(len(tar))

	b.progress("starting the private daemons in %s", b.home)
	if b.cold, err = b.startDaemon(ctx, "cold", false); err != nil {
		return err
	}
	defer func() {
		if serr := b.cold.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	needWarm := b.o.has(SectionTimeToResult) || b.o.has(SectionFanOut) || b.o.has(SectionContinue)
	if needWarm && !b.o.NoWarm {
		if b.warm, err = b.startDaemon(ctx, "warm", true); err != nil {
			return err
		}
		defer func() {
			if serr := b.warm.stop(); serr != nil && err == nil {
				err = serr
			}
		}()
		ws, err := b.warm.warmStatus(ctx)
		if err != nil {
			return err
		}
		if !ws.Enabled {
			b.rep.Setup.WarmPool = "off: " + ws.Reason
			b.note("warm pool off, warm figures not measured: %s (or pass Options.InitBinary)", ws.Reason)
			_ = b.warm.stop()
			b.warm = nil
		} else {
			b.rep.Setup.WarmPool = fmt.Sprintf("on: %d sandboxes per new image, %d in all", defaultWarmPerImage, defaultWarmMax)
		}
	} else if b.o.NoWarm {
		b.rep.Setup.WarmPool = "not measured (NoWarm)"
	}

	b.progress("importing the busybox base image")
	for _, d := range []*daemonConn{b.cold, b.warm} {
		if d == nil {
			continue
		}
		t0 := time.Now()
		if d.base, err = d.importTar(ctx, tar); err != nil {
			return err
		}
		if d == b.cold {
			b.rep.Setup.ImportMs = ms(time.Since(t0))
		}
	}
	b.chain = []string{b.cold.base}

	b.progress("preparing raw OCI bundles")
	if b.raw, err = newRawSet(ctx, filepath.Join(b.home, "raw"), tar, b.o.Runtimes); err != nil {
		return err
	}
	defer b.raw.close()
	if b.o.HardenedBundle != nil && b.o.has(SectionFanOut) {
		if err := b.raw.addHardened(b.o.HardenedBundle); err != nil {
			return err
		}
	}
	b.rep.Setup.RawCommand = b.raw.describe()

	// Storage runs before the chain so no background squash changes the
	// layer store while it is measured.
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{SectionTimeToResult, b.timeToResult},
		{SectionFanOut, b.fanOut},
		{SectionContinue, b.continueChain},
		{SectionFork, b.fork},
		{SectionStorage, b.storage},
		{SectionCommit, b.commit},
		{SectionChain, b.deepChain},
		{SectionInspect, b.inspect},
		{SectionCluster, b.cluster},
	}
	for _, s := range steps {
		if !b.o.has(s.name) {
			continue
		}
		if (s.name == SectionFork || s.name == SectionStorage) && b.warm != nil {
			// The warm daemon's work is done; its idle sandboxes must not
			// share the machine with the rest.
			if err := b.warm.stop(); err != nil {
				return err
			}
		}
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("bench %s: %w", s.name, err)
		}
	}
	if b.rep.DeepChain != nil {
		b.rep.DeepChain.Squashes = b.cold.logs.squashes
		b.rep.DeepChain.SquashMaxMs = b.cold.logs.squashMaxMs
	}
	for _, d := range []*daemonConn{b.cold, b.warm} {
		if d == nil {
			continue
		}
		for _, m := range d.logs.warnings() {
			b.note("%s daemon: %s", d.name, m)
		}
	}
	b.rep.Targets = targets(b.rep)
	return nil
}

// These mirror engine.Config's defaults, which the benchmark sets
// explicitly so the report states what was used.
const (
	defaultSquashDepth  = 64
	defaultWarmPerImage = 2
	defaultWarmMax      = 8
)
