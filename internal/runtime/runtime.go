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
	"os"
	"regexp"
	"syscall"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
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
	// UserNS, with IDMap, is the path of a user namespace with IDMap's
	// mapping for the sandbox to join instead of making its own: the
	// owner of NetNS, so that an exec into the sandbox, which joins its
	// user namespace first, may then join its network namespace (see
	// netns.CreateOwned).
	UserNS string
	// Checkpointable asks for a sandbox that Checkpoint can save. Under
	// runsc an InitBinary is then copied into sandbox memory at boot (a
	// host file's mapping cannot be saved): it costs the binary's size in
	// memory and in every checkpoint. Other runtimes ignore it.
	Checkpointable bool

	Stdin          io.Reader // nil: empty
	Stdout, Stderr io.Writer
	// OnStart is called once the runtime process has started, with its pid.
	OnStart func(pid int)
}

// validID is the id charset every OCI runtime accepts.
var validID = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)

// Validate reports what in s no runtime can run, as an error of class
// errdefs.ErrInvalidArgument that names the field to fix.
func (s Spec) Validate() error {
	if !validID.MatchString(s.ID) {
		return errdefs.InvalidArgument("sandbox id %q: use 1 to 128 characters of [a-zA-Z0-9_-]", s.ID)
	}
	if len(s.Args) == 0 || s.Args[0] == "" {
		return errdefs.InvalidArgument("sandbox %s: no command (Spec.Args is empty)", s.ID)
	}
	for _, d := range []struct{ name, path string }{{"Bundle", s.Bundle}, {"Rootfs", s.Rootfs}} {
		if d.path == "" {
			return errdefs.InvalidArgument("sandbox %s: Spec.%s is empty: give an existing directory", s.ID, d.name)
		}
		if fi, err := os.Stat(d.path); err != nil || !fi.IsDir() {
			return errdefs.InvalidArgument("sandbox %s: Spec.%s %s is not a directory: create it first", s.ID, d.name, d.path)
		}
	}
	return nil
}

// ValidateExec is [Spec.Validate] for a process exec'd into sandbox id.
func ValidateExec(id string, s ExecSpec) error {
	if !validID.MatchString(id) {
		return errdefs.InvalidArgument("sandbox id %q: use 1 to 128 characters of [a-zA-Z0-9_-]", id)
	}
	if len(s.Args) == 0 || s.Args[0] == "" {
		return errdefs.InvalidArgument("exec in sandbox %s: no command (ExecSpec.Args is empty)", id)
	}
	return nil
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
	InitBinary string
	// InitMode, if set with InitBinary, runs that init mode itself (as
	// root, Args unused) instead of wrapping a command: a helper of the
	// daemon's, such as the port previews' relay.
	InitMode       []string
	FileSizeLimit  int64
	Env            []string
	Cwd            string
	UID, GID       uint32
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// OnStart is called once the process runs, with the runtime process's
	// pid, before Exec returns. If the runtime's own process does not
	// forward signals to the command (runsc without a terminal), OnSignal
	// is called first with a function that signals the command itself;
	// otherwise signals to pid reach the command.
	OnStart  func(pid int)
	OnSignal func(signal func(syscall.Signal) error)
}

// Runtime runs sandboxes: it is the seam between the engine, which
// decides what runs where, and whatever isolates the process (runsc, runc
// and crun through [OCI]; an in-memory fake in tests, see
// runtime/fakeruntime). Every implementation must pass the conformance
// suite in runtime/runtimetest. Implementations are safe for concurrent
// use; calls on different ids never wait for each other.
//
// # Lifecycle
//
// A sandbox is named by its Spec.ID, unique within the Runtime. It is in
// one of three states:
//
//	absent   never created, or deleted
//	running  created by Run (until Run returns) or by Boot; its main
//	         process has been started
//	stopped  booted, and its main process has exited by itself; it stays
//	         until Destroy
//
// Run takes an absent id to running and back to absent: it returns only
// once the main process has exited and the sandbox is deleted. Boot takes
// an absent id to running and returns once the main process runs; the
// sandbox then stays until Destroy, whatever its main process does. Exec
// starts a further process in a running sandbox (booted, or one whose Run
// is in progress and WaitRunning has returned for). Destroy takes any state
// to absent.
//
// # Results and errors
//
// Run and Exec return a [Result] and a nil error whenever the process was
// started, however it ended: an exit code or a death by signal is a result,
// not an error. An error means the process could not be run, and then
// nothing of the sandbox is left behind:
//
//   - a Spec the runtime cannot run (no ID, an ID with characters outside
//     [a-zA-Z0-9_-], no Args, no Bundle or Rootfs directory) is refused
//     before anything starts, with an error of class
//     errdefs.ErrInvalidArgument (see [Spec.Validate]);
//   - an id already in use is refused with errdefs.ErrConflict;
//   - Exec on an absent sandbox fails with errdefs.ErrNotFound; on a
//     stopped one with errdefs.ErrFailedPrecondition where that is cheap to
//     tell (the fake; runc and crun booted sandboxes, through a pidfd on
//     their init), else the runtime's refusal is a non-zero exit code;
//   - for Run and Boot, a runtime that could not create the sandbox, or
//     that died under it (a crashed runtime process), is an error naming
//     the runtime; the sandbox is killed and deleted before the call
//     returns. (A command
//     that cannot be executed in a created sandbox is a non-zero exit,
//     127 through arbor's init.)
//
// A death by signal is reported as precisely as the implementation knows
// it. With Result.Exact, ExitCode and Signal are the process's own wait
// status: an exit has Signal -1, a death by signal n has Signal n and
// ExitCode -1. Without it, only the runtime's word is known: ExitCode is
// 128+n for a death by signal n (indistinguishable from exit(128+n)) and
// Signal is -1. Exec with ExecSpec.InitBinary is Exact unless the
// wrapper died too (its sandbox destroyed under it).
//
// # Cancellation
//
// Cancelling ctx of Run kills every process of the sandbox, waits for
// them, deletes the sandbox and returns a Result with Killed set and a nil
// error: a killed process is an outcome the caller asked for. Cancelling
// ctx of Exec returns likewise, with Killed set, and leaves the sandbox
// running; NOTE: the OCI driver then kills only the runtime's exec
// process, and the process in the sandbox lives on until the sandbox ends
// (none of runc, crun and runsc can kill one exec'd process tree; the
// engine never cancels an Exec, it destroys the sandbox). Cancelling ctx of Boot before it
// returns kills and deletes the half-booted sandbox and returns an error.
// Cancelling ctx of WaitRunning, Destroy, Cleanup or Close stops the wait
// and returns ctx's error; what was started finishes in the background and
// Close waits for it.
//
// # Checkpoint and restore
//
// Checkpoint takes a running sandbox's state into an image directory and
// leaves it running; Restore starts a new sandbox (an absent id, like Boot)
// from that image, any number of times: every copy continues from the
// checkpointed memory, then diverges. The restored main process reads and
// writes the stdio files given to Restore. What runs in the copy is the
// checkpointed sandbox, whose configuration the image keeps: of Restore's
// Spec only ID, Bundle, Rootfs, Hostname (if set), NetNS, Stdin and Stdout
// are used. Rootfs must hold exactly the files the sandbox's root held when the image was
// written (files are reopened by path, and a root that changed since is
// not detected: data is silently corrupted). [CheckpointOptions].Quiet is
// the moment to copy it. Processes started with Exec are killed in the
// copies (runsc cannot restore them). A runtime that cannot checkpoint
// (runc, crun, the fake) fails both with errdefs.ErrFailedPrecondition;
// Checkpoint on an absent id fails with errdefs.ErrNotFound, on a stopped
// sandbox with errdefs.ErrFailedPrecondition. A failed Checkpoint leaves
// the sandbox running and no image; a failed Restore leaves nothing.
// NOTE: runsc resolves an id by prefix for these commands, so no id may
// be a prefix of another (the engine's ids have one length).
//
// Destroy is idempotent: destroying an absent id, or destroying twice,
// returns nil. It returns once every process of the sandbox is dead (so
// its root filesystem may be unmounted); deleting the runtime's state for
// it may finish in the background. An error means a process may still be
// alive.
type Runtime interface {
	// Name reports the runtime's kind ("runsc", "runc", "crun", "fake").
	// It is a constant, so it alone takes no ctx and returns no error.
	Name() string
	// Run runs spec's process in a new sandbox and blocks until it has
	// exited and the sandbox is deleted. OnStart, if set, is called once
	// the process is being started, before Run can return, with the pid of
	// a host process that forwards signals to it, or 0 if there is none.
	Run(ctx context.Context, spec Spec) (Result, error)
	// Boot starts spec's sandbox in the background and returns once its
	// main process runs (a warm sandbox). Spec.Stdin and Spec.Stdout, if
	// files, become the main process's; other stdio is discarded.
	// Spec.OnStart is not called. If ctx ends first, Boot stops at once
	// and returns an error having left nothing of the sandbox.
	Boot(ctx context.Context, spec Spec) error
	// WaitRunning blocks until sandbox id, whose Run may be in progress
	// in another goroutine, has started its main process. It fails if the
	// sandbox has stopped, or does not appear before ctx ends.
	WaitRunning(ctx context.Context, id string) error
	// Exec runs a further process in running sandbox id and blocks until it
	// exits. The process dies with the sandbox. Signals sent to the pid
	// passed to OnStart (if not 0) are forwarded to the process, except
	// under runsc, whose exec exits 143 on SIGTERM and leaves the process
	// running (see runtimetest.Options.ExecSignals).
	Exec(ctx context.Context, id string, spec ExecSpec) (Result, error)
	// Destroy kills every process of sandbox id and deletes it.
	Destroy(ctx context.Context, id string) error
	// Cleanup kills and deletes every sandbox this runtime's state holds
	// and frees what the runtime keeps on the host (runsc's null-netns
	// mount), after a crash: it must be called before the first sandbox
	// starts, never alongside sandboxes in use.
	Cleanup(ctx context.Context) error
	// Close waits for background deletes to finish and frees what the
	// runtime keeps on the host. Every sandbox must have been destroyed.
	Close(ctx context.Context) error
	// Checkpoint saves running sandbox id (memory, processes, open files)
	// into a new image directory and leaves it running; see
	// [CheckpointOptions] and "Checkpoint and restore" above.
	Checkpoint(ctx context.Context, id string, opt CheckpointOptions) error
	// Restore takes absent spec.ID to running from an image Checkpoint
	// wrote, and returns once it runs, like Boot (stdio files included).
	Restore(ctx context.Context, spec Spec, image string) error
	// Resume lets sandbox id run again after a Checkpoint with
	// CheckpointOptions.KeepPaused; on a running sandbox it is a no-op.
	Resume(ctx context.Context, id string) error
}
