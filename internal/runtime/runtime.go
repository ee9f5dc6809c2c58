// Package runtime runs one command in a fresh sandbox through an OCI runtime
// binary (runsc, runc or crun) driven over a generated bundle.
//
// The engine prepares a root filesystem (an overlay mount), then calls
// Runtime.Run, which writes config.json into the bundle directory, starts the
// sandbox, streams stdio, and returns once the sandbox is gone. Cancelling the
// context kills the whole sandbox.
package runtime

import (
	"context"
	"io"
	"syscall"
	"time"
)

// Spec describes one sandboxed process.
type Spec struct {
	ID       string // unique container id ([a-zA-Z0-9_-])
	Bundle   string // directory for config.json; must exist
	Rootfs   string // root filesystem path (writable)
	Args     []string
	Env      []string
	Cwd      string
	UID, GID uint32
	Hostname string

	MemoryBytes   int64   // 0: unlimited
	Pids          int64   // 0: unlimited
	CPUs          float64 // 0: unlimited
	FileSizeLimit int64   // RLIMIT_FSIZE in bytes, 0: unlimited

	// NetNS is the path of a network namespace to join; "" gives a fresh
	// namespace with loopback only.
	NetNS string
	// ResolvConf, if set, is bind-mounted read-only at /etc/resolv.conf.
	ResolvConf string
	// InitBinary, if set, is arbor's static init, for Boot: the runtime
	// gets it as an open file and starts it as InitPath, so nothing in the
	// sandbox names the binary (no mount, no file).
	InitBinary string
	// IDMap, if set, runs a runc or crun sandbox in its own user namespace
	// with ids 0..Size-1 mapped to host ids HostID..HostID+Size-1. The
	// root filesystem must then be mounted with the same mapping (see
	// overlay.Userns). Ignored by runsc, whose kernel is in user space.
	IDMap *IDMap

	Stdin          io.Reader // nil: empty
	Stdout, Stderr io.Writer
	// OnStart is called once the runtime process has started, with its pid.
	OnStart func(pid int)
}

// IDMap maps a sandbox's ids 0..Size-1 to host ids HostID.. (uids and
// gids alike).
type IDMap struct{ HostID, Size uint32 }

// InitPath is args[0] of a sandbox booted with Spec.InitBinary: the file
// descriptor the runtime hands it over (runc and crun exec it through
// /proc; runsc loads it from the host descriptor, --exec-fd).
const InitPath = "/proc/self/fd/3"

// Result is how a sandboxed process ended.
type Result struct {
	ExitCode int
	Signal   int // -1 if not killed by a signal we know of
	Started  time.Time
	Duration time.Duration
	Rusage   syscall.Rusage
	Killed   bool // the context ended the sandbox
	// Exact: ExitCode and Signal come from the process's own wait status
	// (exit code -1 when killed by a signal). Otherwise ExitCode is the
	// runtime's, which reports a death by signal n as 128+n.
	Exact bool
}

// ExecSpec describes a process started inside a running sandbox.
type ExecSpec struct {
	Args []string
	// InitBinary, if set, wraps the process in arbor's init (handed over
	// as for Spec.InitBinary), which reports its exact wait status.
	InitBinary     string
	FileSizeLimit  int64
	Env            []string
	Cwd            string
	UID, GID       uint32
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	OnStart        func(pid int)
}

// Runtime runs sandboxes. Implementations must be safe for concurrent use.
//
// Run blocks until the sandbox has exited and been deleted, even when ctx is
// cancelled: cancellation kills the sandbox, then Run returns with
// Result.Killed set. An error means the sandbox could not be run at all.
// Cleanup removes every sandbox this runtime left behind (after a crash).
type Runtime interface {
	Name() string
	Run(ctx context.Context, spec Spec) (Result, error)
	// Exec runs a further process in the running sandbox id and blocks until
	// it exits. The process dies with the sandbox. Signals sent to the pid
	// passed to OnStart are forwarded to the process.
	Exec(ctx context.Context, id string, spec ExecSpec) (Result, error)
	// WaitRunning blocks until sandbox id has started its main process.
	WaitRunning(ctx context.Context, id string) error
	// Boot starts sandbox spec in the background and returns once its main
	// process runs (a warm sandbox). Spec.Stdin and Spec.Stdout, if files,
	// become the main process's; other stdio is discarded.
	Boot(ctx context.Context, spec Spec) error
	// Destroy kills every process of sandbox id and deletes it.
	Destroy(id string)
	// Close waits for background cleanup to finish.
	Close()
	Cleanup(ctx context.Context) error
}
