package engine

import "github.com/arborsh/arbor/internal/oplog"

// The requests the engine takes. api decodes and checks the wire shape
// (JSON, field types) and converts to these; the engine applies its rules
// (defaults, limits, what an image or a file must be). A nil pointer takes
// the engine's default.

// SpawnRequest asks for a run of Command on Image.
type SpawnRequest struct {
	Command          string
	Image            string // an image UUID, "tag:NAME" or a bare tag
	Disposable       *bool
	Hostname         *string
	Args             []string
	Shell            *bool
	Env              map[string]string
	PreserveEnv      *bool
	Cwd              *string
	UID              *int
	GID              *int
	ResourcesLimits  *oplog.ResourcesLimits
	Networking       *Networking
	Stdin            *Stdin
	Timeout          *float64 // seconds
	TruncateOutputAt *int64
	Files            map[string]oplog.FileSpec // destination path → file
	Runtime          *string                   // "runsc", "runc", "crun"; nil or "": the daemon's default
	// ResultTag (arbor extension) tags the result image in the transaction
	// that records the run, if its command exited 0 and it changed the
	// image: a client that dies after spawning still gets its tag moved.
	ResultTag *string
}

// Networking asks for outbound network access, narrowed by Egress (nil:
// the account's or daemon's default policy, if any).
type Networking struct {
	Enabled *bool
	Egress  *Egress
}

// Stdin is a process's input: Value in Encoding ("ascii" or "base64"),
// closed after it unless Close is false (nil: closed).
type Stdin struct {
	Value    string
	Encoding string
	Close    *bool
}

// Bytes decodes the input.
func (s Stdin) Bytes() ([]byte, error) { return oplog.Decode(s.Value, s.Encoding) }

// ExecRequest asks for a further process in a running instance; nil and
// empty fields take the main process's settings.
type ExecRequest struct {
	Command          string
	Args             []string
	Shell            *bool
	Env              map[string]string
	Cwd              *string
	UID              *int
	GID              *int
	Stdin            *Stdin
	TruncateOutputAt *int64
}

// ImportRequest asks for an image import from Registry (a registry
// reference or upload://<file>), tagged Tag.
type ImportRequest struct {
	Registry oplog.ImportSource
	Tag      *string
	Timeout  *float64 // seconds
}

// ForkRequest asks to branch a running instance, memory and all, into
// Count running copies (1 to MaxForks; 0 is 1). PauseParent leaves the
// instance stopped at the fork point until a CONT to its main process.
type ForkRequest struct {
	Count       int
	PauseParent bool
}

// MaxForks bounds ForkRequest.Count.
const MaxForks = 16

// ForkResult is a fork's outcome: the fork point's image (the copies'
// later snapshots descend from it), the copies' operations, and the size
// of the memory checkpoint they were restored from.
type ForkResult struct {
	Image           string
	Operations      []string
	CheckpointBytes int64
}
