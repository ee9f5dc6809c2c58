package bench

// ReportSchema is the version of the [Report] JSON layout.
const ReportSchema = 1

// Report is everything one [Run] measured. It marshals to JSON (the output of
// `arbor bench --json`); times are milliseconds, sizes bytes, and ratios are
// arbor's figure divided by the raw runtime's (or the larger case's by the
// smaller one's), measured in the same run.
type Report struct {
	Schema    int     `json:"schema"`
	StartedAt string  `json:"started_at"` // RFC 3339, UTC
	Seconds   float64 `json:"seconds"`    // wall time of the whole run
	Quick     bool    `json:"quick"`
	Host      Host    `json:"host"`
	Setup     Setup   `json:"setup"`

	TimeToResult []TimeToResult  `json:"time_to_result"`
	FanOut       []FanOut        `json:"fan_out"`
	Burst        []Burst         `json:"burst,omitempty"`
	Commit       *CommitSection  `json:"commit,omitempty"`
	DeepChain    *ChainSection   `json:"deep_chain,omitempty"`
	Inspect      *InspectSection `json:"inspect,omitempty"`
	Storage      []Storage       `json:"storage"`
	Continue     []ContinueChain `json:"continue,omitempty"`
	Cluster      *ClusterSection `json:"cluster,omitempty"`
	Fork         *ForkSection    `json:"fork,omitempty"`

	// Targets compares the ratios above with the goals of the benchmark
	// issue. Missing a target is a finding, not a failure.
	Targets []Target `json:"targets"`
	// Notes records what could not be measured and anything unusual seen
	// during the run (daemon warnings, background squashes).
	Notes []string `json:"notes,omitempty"`
}

// Host describes the machine the benchmark ran on.
type Host struct {
	CPUs        int      `json:"cpus"`
	CPUModel    string   `json:"cpu_model"`
	MemoryBytes int64    `json:"memory_bytes"`
	Kernel      string   `json:"kernel"`
	OS          string   `json:"os,omitempty"`
	GoVersion   string   `json:"go_version"`
	Build       string   `json:"build,omitempty"` // arbor's VCS revision, when the binary records it
	LoadBefore  string   `json:"load_before"`     // /proc/loadavg at the start
	LoadAfter   string   `json:"load_after"`      // and at the end
	Filesystem  string   `json:"filesystem"`      // of the daemon's home
	Runtimes    []RTInfo `json:"runtimes"`
}

// RTInfo is one OCI runtime binary.
type RTInfo struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Version string `json:"version"`
}

// Setup records how the benchmark was configured.
type Setup struct {
	Runtimes     []string `json:"runtimes"`
	Iterations   int      `json:"iterations"`
	Sections     []string `json:"sections"`
	Slots        int      `json:"slots"`         // the daemon's concurrent run slots
	SquashDepth  int      `json:"squash_depth"`  // the daemon's background squash threshold
	ChainRuntime string   `json:"chain_runtime"` // runtime that builds deep chains
	BaseImage    string   `json:"base_image"`    // what the base image holds
	BaseBytes    int64    `json:"base_bytes"`    // size of its tarball
	ImportMs     float64  `json:"import_ms"`     // upload + import of the base
	RawCommand   string   `json:"raw_command"`   // the raw floor, as a shell command
	// WarmPool says whether the warm-pool figures were measured. Two
	// private daemons run side by side: "cold" with the pool off (every
	// run boots a sandbox) and "warm" with the engine's default pool.
	WarmPool string `json:"warm_pool"`
}

// Dist summarises a series of wall times in milliseconds.
type Dist struct {
	N      int     `json:"n"`
	P50Ms  float64 `json:"p50_ms"`
	P95Ms  float64 `json:"p95_ms"`
	MinMs  float64 `json:"min_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`
}

// Phases splits arbor's time to result by the daemon's own event
// timestamps (the client and daemon share one clock). Each field is the
// median over the series.
type Phases struct {
	// SetupMs: client start → init event: HTTP request, operation row,
	// run slot, overlay mount, files placed.
	SetupMs float64 `json:"setup_ms"`
	// RuntimeMs: init → exit event: bundle written, the runtime binary run
	// and deleted, output events.
	RuntimeMs float64 `json:"runtime_ms"`
	// ProcessMs: the runtime process's own wall time as arbor measured it
	// (exit event duration_ms; millisecond resolution).
	ProcessMs float64 `json:"process_ms"`
	// UnmountMs: exit → shutdown event: overlay unmounted.
	UnmountMs float64 `json:"unmount_ms"`
	// FinishMs: shutdown → completion event: for a non-disposable run the
	// commit (syncfs, rename into the layer store, image row), otherwise
	// only the operation's result row.
	FinishMs float64 `json:"finish_ms"`
	// DeliveryMs: completion event → the client holds the result (event
	// stream wake-up, SSE frame, GET of the operation).
	DeliveryMs float64 `json:"delivery_ms"`
}

// CPU is the CPU time one run costs, in milliseconds (median): SelfMs in
// the benchmark's own process (for arbor runs: the daemon and the client,
// i.e. arbor's Go code), ChildrenMs in the processes it started and reaped
// (the runtime binaries, their sandboxes and gofers).
type CPU struct {
	SelfMs     float64 `json:"self_ms"`
	ChildrenMs float64 `json:"children_ms"`
}

// TimeToResult is section 1 for one runtime: a trivial command through the
// API against the raw runtime on a prepared bundle, one run at a time.
type TimeToResult struct {
	Runtime string `json:"runtime"`
	// Raw is `<runtime> run` of /bin/true on a bundle with a minimal spec
	// (what `runc spec` writes, read-only root).
	Raw    Dist `json:"raw"`
	RawCPU CPU  `json:"raw_cpu"`
	// RawShell is the raw run of what the non-disposable series runs:
	// `/bin/sh -c 'echo N > FILE'` (FILE on a tmpfs, the root being read-only).
	RawShell    Dist `json:"raw_shell"`
	RawShellCPU CPU  `json:"raw_shell_cpu"`
	// RawArborSpec is the raw /bin/true run with the config.json arbor itself
	// generates (cgroup limits, capabilities, rlimits): the part of arbor's
	// overhead that comes from the spec rather than the orchestration. Not
	// measured in quick mode.
	RawArborSpec    *Dist `json:"raw_arbor_spec,omitempty"`
	RawArborSpecCPU *CPU  `json:"raw_arbor_spec_cpu,omitempty"`

	// Cold: the daemon without a warm pool, so every run boots a sandbox.
	// Disposable runs /bin/true with disposable=true (no image saved);
	// NonDisposable runs `echo N > /root/out` through the shell on the base
	// image and commits the one-file change as a new image.
	Disposable          Dist   `json:"disposable"`
	DisposablePhases    Phases `json:"disposable_phases"`
	DisposableCPU       CPU    `json:"disposable_cpu"`
	NonDisposable       Dist   `json:"non_disposable"`
	NonDisposablePhases Phases `json:"non_disposable_phases"`
	NonDisposableCPU    CPU    `json:"non_disposable_cpu"`
	// Ratios of p50s: Disposable / Raw, NonDisposable / RawShell and
	// RawArborSpec / Raw.
	DisposableRatio    float64 `json:"disposable_ratio"`
	NonDisposableRatio float64 `json:"non_disposable_ratio"`
	ArborSpecRatio     float64 `json:"arbor_spec_ratio,omitempty"`

	// Warm: the daemon with its default warm pool; nil if not measured.
	Warm *WarmTimeToResult `json:"warm,omitempty"`
}

// WarmTimeToResult is section 1 on the daemon with a warm pool. Before
// each sample the pool is left to settle (no sandbox booting), so every
// sample finds a pre-booted sandbox: these are warm hits, as an agent gets
// them when it pauses between runs for longer than a boot.
type WarmTimeToResult struct {
	// Disposable runs /bin/true on the base image, like the cold series.
	Disposable       Dist   `json:"disposable"`
	DisposablePhases Phases `json:"disposable_phases"`
	// Chained runs `echo N > /root/out` non-disposably, each on the image
	// the previous one produced (the pool boots sandboxes on every new image).
	Chained       Dist   `json:"chained"`
	ChainedPhases Phases `json:"chained_phases"`
	// CPU per run, counted until the pool has settled again: it includes
	// booting the replacement sandboxes the run caused.
	DisposableCPU CPU `json:"disposable_cpu"`
	ChainedCPU    CPU `json:"chained_cpu"`
	// Ratios of p50s: Disposable / Raw and Chained / RawShell.
	DisposableRatio float64 `json:"disposable_ratio"`
	ChainedRatio    float64 `json:"chained_ratio"`
	// Straight runs the chain without waiting for the pool: each run is
	// spawned as soon as the previous result is in, as an agent that does
	// not pause would (it finds its image's sandbox still booting).
	Straight       Dist    `json:"straight"`
	StraightPhases Phases  `json:"straight_phases"`
	StraightRatio  float64 `json:"straight_ratio"` // Straight / RawShell
}

// FanOut is section 2 for one runtime and one width: n non-disposable
// branches (`echo N > /root/branch`) started at once from one image, against
// n raw runs of the same shell command started at once.
type FanOut struct {
	Runtime string `json:"runtime"`
	// Pool is "off" (the cold daemon) or "on" (the default warm pool: the
	// batch also pays for the sandboxes the pool boots on its results,
	// counted until the pool settles).
	Pool     string `json:"pool"`
	Branches int    `json:"branches"`
	Reps     int    `json:"reps"`
	// Wall times of each repetition; the rates use their medians.
	ArborWallsMs []float64 `json:"arbor_walls_ms"`
	RawWallsMs   []float64 `json:"raw_walls_ms"`
	ArborWallMs  float64   `json:"arbor_wall_ms"`
	RawWallMs    float64   `json:"raw_wall_ms"`
	ArborPerSec  float64   `json:"arbor_runs_per_s"`
	RawPerSec    float64   `json:"raw_runs_per_s"`
	// Ratio is ArborPerSec / RawPerSec (higher is better).
	Ratio float64 `json:"ratio"`
	// CPU time per run, from the batch's total (median over repetitions).
	// On a machine with few cores, throughput is cores ÷ CPU per run.
	ArborCPU CPU `json:"arbor_cpu"`
	RawCPU   CPU `json:"raw_cpu"`
	// Hardened is the same raw shell command in the bundle arbor's runtime
	// driver writes for a runc or crun sandbox (user namespace, seccomp,
	// masked paths, limits: Options.HardenedBundle), n at once, after each
	// repetition's pair; nil under runsc or without it. It tells the
	// hardening's cost (Hardened.Ratio) from arbor's (ArborRatio).
	Hardened *HardenedFloor `json:"hardened,omitempty"`
}

// HardenedFloor is the hardened raw series of a fan-out row.
type HardenedFloor struct {
	WallsMs []float64 `json:"walls_ms"`
	WallMs  float64   `json:"wall_ms"` // median
	PerSec  float64   `json:"runs_per_s"`
	// Ratio is PerSec / the row's RawPerSec: what the hardening costs the
	// runtime itself (higher is better).
	Ratio float64 `json:"ratio"`
	// ArborRatio is the row's ArborPerSec / PerSec: arbor against the same
	// sandbox started raw.
	ArborRatio float64 `json:"arbor_ratio"`
	CPU        CPU     `json:"cpu"`
}

// CommitSection is section 3: the cost of a run that changes one file, on
// a small image and on one holding a large file.
type CommitSection struct {
	SmallImageBytes int64 `json:"small_image_bytes"`
	BigImageBytes   int64 `json:"big_image_bytes"` // the large file's size
	// Building the big image is itself a commit of a large change.
	BuildRuntime string         `json:"build_runtime"`
	BuildMs      float64        `json:"build_ms"`
	BuildPhases  Phases         `json:"build_phases"` // UnmountMs + FinishMs is its commit
	Results      []CommitResult `json:"results"`
}

// CommitResult is section 3 for one runtime.
type CommitResult struct {
	Runtime string `json:"runtime"`
	Small   Dist   `json:"small"` // time to result on the small image
	Big     Dist   `json:"big"`   // and on the big one
	// SmallCommit and BigCommit are the commit alone, server side: from the
	// exit event to the completion event (the overlay unmount, which makes
	// the kernel flush the upper filesystem, then syncfs, the rename into
	// the layer store and the image row).
	SmallCommit Dist `json:"small_commit"`
	BigCommit   Dist `json:"big_commit"`
	// Ratio is Big.P50Ms / Small.P50Ms; CommitRatio the same for the
	// commit alone.
	Ratio       float64 `json:"ratio"`
	CommitRatio float64 `json:"commit_ratio"`
}

// ChainSection is section 4: one chain of non-disposable steps, each on the
// previous result, probed at several depths.
type ChainSection struct {
	ChainRuntime string `json:"chain_runtime"`
	Depths       []int  `json:"depths"`
	// Probes is the number of samples per depth and runtime (half the
	// iterations, at least 3), taken round robin over the depths.
	Probes int `json:"probes"`
	// Steps is how many chain steps were built, BuildMs how long it took;
	// FirstSteps and LastSteps are the step times of the first and last
	// (up to) 100 of them.
	Steps      int     `json:"steps"`
	BuildMs    float64 `json:"build_ms"`
	FirstSteps Dist    `json:"first_steps"`
	LastSteps  Dist    `json:"last_steps"`
	// Squashes counts background squashes the daemon logged while the
	// benchmark ran, SquashMaxMs the longest.
	Squashes    int          `json:"squashes"`
	SquashMaxMs float64      `json:"squash_max_ms"`
	Points      []DepthPoint `json:"points"`
}

// DepthPoint is the latency of one more step on the chain's image at Depth.
type DepthPoint struct {
	Runtime string `json:"runtime"`
	Depth   int    `json:"depth"` // the image's depth (the base is 1)
	// MountedLayers is how many layers a run on that image mounts, after
	// the daemon's squashes (inferred from its log).
	MountedLayers int    `json:"mounted_layers"`
	Step          Dist   `json:"step"`
	Phases        Phases `json:"phases"`
	// Ratio is Step.P50Ms over the depth-1 point of the same runtime.
	Ratio float64 `json:"ratio"`
}

// InspectSection is section 5: reading a deep image without a sandbox.
type InspectSection struct {
	Depth         int `json:"depth"`
	MountedLayers int `json:"mounted_layers"`
	// BaselineDepth is the shallow image (the chain's first step) the same
	// operations run on for comparison.
	BaselineDepth int         `json:"baseline_depth"`
	Ops           []InspectOp `json:"ops"`
}

// InspectOp is one inspect call at depth and at the baseline.
type InspectOp struct {
	Op       string  `json:"op"` // list, read, grep
	Call     string  `json:"call"`
	Deep     Dist    `json:"deep"`
	Baseline Dist    `json:"baseline"`
	Ratio    float64 `json:"ratio"` // Deep.P50Ms / Baseline.P50Ms
}

// Storage is section 6 for one runtime and one change size: the growth of
// <home>/layers (allocated blocks, as du counts) per non-disposable run that
// writes ChangeBytes of random data into one new file.
type Storage struct {
	Runtime     string `json:"runtime"`
	ChangeBytes int64  `json:"change_bytes"`
	Samples     int    `json:"samples"`
	// StoredBytes is the median growth per snapshot; OverheadBytes is
	// StoredBytes - ChangeBytes.
	StoredBytes   int64 `json:"stored_bytes"`
	OverheadBytes int64 `json:"overhead_bytes"`
	// LayerBytes is the image's layer_bytes as the API reports it
	// (apparent file sizes).
	LayerBytes int64 `json:"layer_bytes"`
	// Entries lists the paths in one such layer.
	Entries []string `json:"entries"`
}

// Target is one goal of the benchmark issue checked against this run.
type Target struct {
	Name    string  `json:"name"`
	Runtime string  `json:"runtime,omitempty"`
	Value   float64 `json:"value"` // the measured ratio (0 when n/a)
	Op      string  `json:"op"`    // "<=" or ">="
	Limit   float64 `json:"limit"`
	Status  string  `json:"status"` // "met", "missed" or "n/a"
	Note    string  `json:"note,omitempty"`
}

// Target statuses.
const (
	StatusMet    = "met"
	StatusMissed = "missed"
	StatusNA     = "n/a"
)
