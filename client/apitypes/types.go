// Package apitypes holds the JSON wire types of arbor's REST API v1, which is
// wire-compatible with ConTree's API v1. It is shared by the server
// (internal/api, which converts the engine's requests and records to and
// from these) and the Go client. It contains no logic beyond encoding
// helpers.
package apitypes

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Operation statuses, in wire order.
const (
	StatusPending   = "PENDING"
	StatusAssigned  = "ASSIGNED"
	StatusExecuting = "EXECUTING"
	StatusSuccess   = "SUCCESS"
	StatusFailed    = "FAILED"
	StatusCancelled = "CANCELLED"
)

// IsTerminal reports whether status is SUCCESS, FAILED or CANCELLED.
func IsTerminal(status string) bool {
	return status == StatusSuccess || status == StatusFailed || status == StatusCancelled
}

// Operation kinds.
const (
	KindInstance    = "instance"
	KindImageImport = "image_import"
)

// Error is the body of every error response.
type Error struct {
	Error  string `json:"error"`
	Status int    `json:"status,omitempty"`
}

// WhoAmIResponse answers GET /v1/whoami.
type WhoAmIResponse struct {
	TokenUUID       string           `json:"token_uuid"`
	TokenExpiration *int64           `json:"token_expiration"`
	Permissions     map[string]bool  `json:"permissions"`
	Limits          map[string]int64 `json:"limits,omitempty"`
	OperationsStat  map[string]int64 `json:"operations_stat"`
	// arbor extensions.
	Account string `json:"account,omitempty"`
}

// StatusResponse answers GET /v1/status (arbor extension): the daemon's
// runtimes and the state of its warm sandbox pool.
type StatusResponse struct {
	DefaultRuntime string         `json:"default_runtime"`
	Runtimes       []string       `json:"runtimes"`
	WarmPool       WarmPoolStatus `json:"warm_pool"`
}

// WarmPoolStatus is the state of the pool of pre-booted sandboxes.
type WarmPoolStatus struct {
	Enabled bool `json:"enabled"`
	// Reason says why the pool is off (and how to turn it on); empty when on.
	Reason   string `json:"reason,omitempty"`
	PerImage int    `json:"per_image"` // sandboxes booted for each new image
	Max      int    `json:"max"`       // idle and booting sandboxes overall
	Idle     int    `json:"idle"`
	Booting  int    `json:"booting"`
	// Wanted counts sandboxes asked for that wait for a quiet moment
	// before they boot; Active the runs in flight.
	Wanted int `json:"wanted"`
	Active int `json:"active"`
	Hits   int `json:"hits"`   // runs served by a warm sandbox
	Misses int `json:"misses"` // runs that booted their own
}

// Settled reports whether the pool has nothing left to do: no run in
// flight, no boot running or waiting.
func (w WarmPoolStatus) Settled() bool { return w.Active == 0 && w.Booting == 0 && w.Wanted == 0 }

// Image is one immutable filesystem snapshot.
type Image struct {
	UUID          string  `json:"uuid"`
	Tag           *string `json:"tag"`
	CreatedAt     string  `json:"created_at"`
	OperationUUID *string `json:"operation_uuid"`
	// arbor extensions.
	ParentUUID *string `json:"parent_uuid,omitempty"`
	Depth      int     `json:"depth,omitempty"`
	LayerBytes int64   `json:"layer_bytes,omitempty"`
	// CheckpointBytes: the memory checkpoint kept with the image (POST
	// /v1/images/{uuid}/restore), absent if none.
	CheckpointBytes int64 `json:"checkpoint_bytes,omitempty"`
}

// ImageListResponse answers GET /v1/images.
type ImageListResponse struct {
	Images []Image `json:"images"`
}

// TagRequest is the body of PATCH /v1/images/{uuid}/tag.
type TagRequest struct {
	Tag string `json:"tag"`
}

// FileResponse answers POST /v1/files.
type FileResponse struct {
	UUID   string `json:"uuid"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// File is an uploaded, content-addressed file.
type File struct {
	UUID      string `json:"uuid"`
	SHA256    string `json:"sha256"`
	Size      int64  `json:"size"`
	CreatedAt string `json:"created_at"`
	UpdatedAt string `json:"updated_at"`
}

// FilesListResponse answers GET /v1/files.
type FilesListResponse struct {
	Files []File `json:"files"`
}

// FileSpec places an uploaded file into an instance.
type FileSpec struct {
	UUID string   `json:"uuid"`
	Mode FileMode `json:"mode"`
	UID  int      `json:"uid"`
	GID  int      `json:"gid"`
}

// FileMode is a permission mode that decodes leniently from "0644", "0o644",
// "0o100644", "04755" or a JSON integer, and encodes as a 4-digit octal string.
type FileMode uint32

// MarshalJSON encodes the mode as a 4-digit octal string ("0644").
func (m FileMode) MarshalJSON() ([]byte, error) {
	return json.Marshal(fmt.Sprintf("%04o", uint32(m)&0o7777))
}

// UnmarshalJSON accepts the mode forms listed on FileMode.
func (m *FileMode) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*m = 0o644
		return nil
	}
	// A JSON number only: json.Number also takes a quoted number, which
	// would read the string "4755" (how MarshalJSON writes setuid 0755)
	// as decimal.
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil && len(b) > 0 && b[0] != '"' {
		v, err := strconv.ParseUint(n.String(), 10, 32)
		if err != nil {
			return fmt.Errorf("file mode %s: want an octal string like \"0644\"", b)
		}
		// A JSON integer is taken as the numeric mode (e.g. 420 = 0644).
		*m = FileMode(uint32(v) & 0o7777)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("file mode must be an octal string like \"0644\"")
	}
	v, err := ParseMode(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// ParseMode parses an octal mode string, with an optional "0o" prefix and
// file-type bits, masked to permission and special bits. "" means 0644.
func ParseMode(s string) (FileMode, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0o644, nil
	}
	t = strings.TrimPrefix(strings.TrimPrefix(t, "0o"), "0O")
	v, err := strconv.ParseUint(t, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("file mode %q is not octal: use a form like \"0644\" or \"0755\"", s)
	}
	return FileMode(uint32(v) & 0o7777), nil
}

// StreamRepr is a captured byte stream.
type StreamRepr struct {
	Value     string `json:"value"`
	Encoding  string `json:"encoding"`
	Truncated bool   `json:"truncated"`
}

// NewStreamRepr encodes b as "ascii" when every byte is printable ASCII or
// \t \n \r, else as "base64" (the rule ConTree clients use).
func NewStreamRepr(b []byte, truncated bool) StreamRepr {
	if isPrintableASCII(b) {
		return StreamRepr{Value: string(b), Encoding: "ascii", Truncated: truncated}
	}
	return StreamRepr{Value: base64.StdEncoding.EncodeToString(b), Encoding: "base64", Truncated: truncated}
}

func isPrintableASCII(b []byte) bool {
	for _, c := range b {
		if (c < 32 || c > 126) && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

// Bytes decodes the stream value.
func (s StreamRepr) Bytes() ([]byte, error) { return decodeValue(s.Value, s.Encoding) }

func decodeValue(v, enc string) ([]byte, error) {
	switch strings.ToLower(enc) {
	case "", "ascii", "utf-8", "utf8", "text":
		return []byte(v), nil
	case "base64":
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("stdin value is not valid base64: %v", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("unknown encoding %q: use \"ascii\" or \"base64\"", enc)
}

// ClosableStreamRepr is stdin for a process: bytes and whether to close it after.
type ClosableStreamRepr struct {
	Value    string `json:"value"`
	Encoding string `json:"encoding,omitempty"`
	Close    *bool  `json:"close,omitempty"`
}

// Bytes decodes the value.
func (s ClosableStreamRepr) Bytes() ([]byte, error) { return decodeValue(s.Value, s.Encoding) }

// ResourcesLimits bounds what a run may consume.
type ResourcesLimits struct {
	MaxLayerBytes *int64 `json:"max_layer_bytes,omitempty"`
	// arbor extensions.
	MemoryBytes *int64   `json:"memory_bytes,omitempty"`
	Pids        *int64   `json:"pids,omitempty"`
	CPUs        *float64 `json:"cpus,omitempty"`
}

// Networking configures a run's network.
type Networking struct {
	Enabled *bool `json:"enabled,omitempty"`
	// arbor extension: narrow outbound access (needs Enabled).
	Egress *Egress `json:"egress,omitempty"`
}

// InstanceSpawnRequest is the body of POST /v1/instances. Optional fields are
// pointers so absent and null both mean "server default".
type InstanceSpawnRequest struct {
	Command          string              `json:"command"`
	Image            string              `json:"image"`
	Disposable       *bool               `json:"disposable,omitempty"`
	Hostname         *string             `json:"hostname,omitempty"`
	Args             []string            `json:"args,omitempty"`
	Shell            *bool               `json:"shell,omitempty"`
	Env              map[string]string   `json:"env,omitempty"`
	PreserveEnv      *bool               `json:"preserve_env,omitempty"`
	Cwd              *string             `json:"cwd,omitempty"`
	UID              *int                `json:"uid,omitempty"`
	GID              *int                `json:"gid,omitempty"`
	ResourcesLimits  *ResourcesLimits    `json:"resources_limits,omitempty"`
	Networking       *Networking         `json:"networking,omitempty"`
	Stdin            *ClosableStreamRepr `json:"stdin,omitempty"`
	Timeout          *float64            `json:"timeout,omitempty"`
	TruncateOutputAt *int64              `json:"truncate_output_at,omitempty"`
	Files            map[string]FileSpec `json:"files,omitempty"`
	// arbor extension: the OCI runtime to use ("runsc", "runc", "crun"); default is the daemon's.
	Runtime *string `json:"runtime,omitempty"`
	// arbor extension: tag the result image NAME when the run records it,
	// if the command exited 0 and changed the image (the operation's
	// result.tag then says so). Needs disposable=false.
	ResultTag *string `json:"result_tag,omitempty"`
}

// InstanceMetadata is the spawn request echoed with every default filled in,
// plus the result once the main process has exited.
type InstanceMetadata struct {
	Command          string              `json:"command"`
	Image            string              `json:"image"`
	Disposable       bool                `json:"disposable"`
	Hostname         string              `json:"hostname"`
	Args             []string            `json:"args"`
	Shell            bool                `json:"shell"`
	Env              map[string]string   `json:"env"`
	PreserveEnv      bool                `json:"preserve_env"`
	Cwd              string              `json:"cwd"`
	UID              int                 `json:"uid"`
	GID              int                 `json:"gid"`
	ResourcesLimits  ResourcesLimits     `json:"resources_limits"`
	Networking       NetworkingEcho      `json:"networking"`
	Stdin            StdinEcho           `json:"stdin"`
	Timeout          int                 `json:"timeout"`
	TruncateOutputAt int64               `json:"truncate_output_at"`
	Files            map[string]FileSpec `json:"files"`
	Runtime          string              `json:"runtime,omitempty"`
	Result           *InstanceResult     `json:"result"`
}

// NetworkingEcho is the defaulted networking echo.
type NetworkingEcho struct {
	Enabled bool    `json:"enabled"`
	Egress  *Egress `json:"egress,omitempty"` // arbor extension: the policy that applied
}

// StdinEcho is the defaulted stdin echo.
type StdinEcho struct {
	Value    string `json:"value"`
	Encoding string `json:"encoding"`
	Close    bool   `json:"close"`
}

// InstanceSpawnResponse answers POST /v1/instances: the operation uuid plus the echo.
type InstanceSpawnResponse struct {
	UUID string `json:"uuid"`
	InstanceMetadata
}

// InstanceResult is the outcome of one process.
type InstanceResult struct {
	Resources InstanceResultResources `json:"resources"`
	State     InstanceResultState     `json:"state"`
	Stdout    StreamRepr              `json:"stdout"`
	Stderr    StreamRepr              `json:"stderr"`
}

// InstanceResultResources is resource usage in ConTree's naming.
type InstanceResultResources struct {
	BlockInput          int64   `json:"block_input"`
	BlockOutput         int64   `json:"block_output"`
	Cost                float64 `json:"cost"`
	ElapsedTime         float64 `json:"elapsed_time"`
	InvoluntarySwitches int64   `json:"involuntary_switches"`
	MaxRSS              int64   `json:"max_rss"`
	MonotonicTime       float64 `json:"monotonic_time"`
	PageFaults          int64   `json:"page_faults"`
	PageFaultsIO        int64   `json:"page_faults_io"`
	SharedMemory        int64   `json:"shared_memory"`
	Signals             int64   `json:"signals"`
	Swaps               int64   `json:"swaps"`
	SystemCPUTime       float64 `json:"system_cpu_time"`
	UnsharedMemory      int64   `json:"unshared_memory"`
	UserCPUTime         float64 `json:"user_cpu_time"`
	VoluntarySwitches   int64   `json:"voluntary_switches"`
}

// InstanceResultState is how a process ended. While running, ExitCode and Signal are -1.
type InstanceResultState struct {
	Continued bool `json:"continued"`
	CoreDump  bool `json:"core_dump"`
	ExitCode  int  `json:"exit_code"`
	Pid       int  `json:"pid"`
	Signal    int  `json:"signal"`
	Stopped   bool `json:"stopped"`
	TimedOut  bool `json:"timed_out"`
}

// ImageImportRequest is the body of POST /v1/images/import.
type ImageImportRequest struct {
	Registry ImageImportRegistry `json:"registry"`
	Tag      *string             `json:"tag,omitempty"`
	Timeout  *float64            `json:"timeout,omitempty"`
}

// ImageImportRegistry names the image to import.
type ImageImportRegistry struct {
	URL         string       `json:"url"`
	Credentials *Credentials `json:"credentials,omitempty"`
}

// Credentials for a registry; empty strings mean anonymous.
type Credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// ImageImportMetadata is the import request echoed, password masked.
type ImageImportMetadata struct {
	Registry ImageImportRegistry `json:"registry"`
	Tag      *string             `json:"tag"`
	Timeout  int                 `json:"timeout"`
}

// OperationResult names the image an operation produced.
type OperationResult struct {
	Image *string `json:"image"`
	Tag   *string `json:"tag"`
}

// OperationSummary is one row of GET /v1/operations.
type OperationSummary struct {
	UUID            string  `json:"uuid"`
	Kind            string  `json:"kind"`
	Status          string  `json:"status"`
	Error           *string `json:"error"`
	CreatedAt       string  `json:"created_at"`
	Duration        float64 `json:"duration"`
	ImageSize       int64   `json:"image_size"`
	ConsumedCPU     float64 `json:"consumed_cpu"`
	ConsumedMemory  int64   `json:"consumed_memory"`
	ImageUUID       *string `json:"image_uuid"`
	ResultImageUUID *string `json:"result_image_uuid"`
	// QueuePosition (arbor extension) is a PENDING run's place in the queue
	// of runs waiting for a slot or for memory, 1 for the next to execute;
	// absent when it is not waiting.
	QueuePosition int `json:"queue_position,omitempty"`
}

// OperationResponse answers GET /v1/operations/{id}. Metadata is an
// InstanceMetadata or an ImageImportMetadata, by Kind.
type OperationResponse struct {
	OperationSummary
	Metadata json.RawMessage `json:"metadata"`
	Result   OperationResult `json:"result"`
}

// OperationEvent is one entry of an operation's event log.
type OperationEvent struct {
	ID   int64           `json:"id"`
	TS   string          `json:"ts"`
	Spid int             `json:"spid"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// StreamBytes decodes the bytes of a stdout or stderr event.
func (e OperationEvent) StreamBytes() ([]byte, error) {
	var d EventDataStream
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return nil, fmt.Errorf("decode %s event: %w", e.Type, err)
	}
	return StreamRepr{Value: d.Value, Encoding: d.Encoding}.Bytes()
}

// Event types.
const (
	EventInit       = "init"
	EventNetwork    = "network"
	EventSpawn      = "spawn"
	EventStdin      = "stdin"
	EventStdout     = "stdout"
	EventStderr     = "stderr"
	EventTruncated  = "truncated"
	EventSizeCap    = "size_cap"
	EventExit       = "exit"
	EventShutdown   = "shutdown"
	EventCompletion = "completion"
	EventProgress   = "progress" // arbor extension: import progress
)

// EventDataInit is the data of an init event.
type EventDataInit struct {
	StartedAt   string `json:"started_at"`
	RuntimePath string `json:"runtime_path"`
	Verbose     bool   `json:"verbose"`
	InitPid     int    `json:"init_pid"`
	Hostname    string `json:"hostname,omitempty"`
	Kernel      string `json:"kernel,omitempty"`
	Machine     string `json:"machine,omitempty"`
}

// EventDataSpawn is the data of a spawn event.
type EventDataSpawn struct {
	Pid        int               `json:"pid"`
	Command    string            `json:"command"`
	Args       []string          `json:"args"`
	Shell      bool              `json:"shell"`
	Cwd        string            `json:"cwd"`
	UID        int               `json:"uid"`
	GID        int               `json:"gid"`
	Timeout    int               `json:"timeout"`
	TruncateAt int64             `json:"truncate_at"`
	Env        map[string]string `json:"env"`
}

// EventDataStream is the data of stdin/stdout/stderr events.
type EventDataStream struct {
	Value     string `json:"value"`
	Encoding  string `json:"encoding"`
	Truncated bool   `json:"truncated,omitempty"`
}

// EventDataTruncated reports that a stream hit its cap.
type EventDataTruncated struct {
	Stream       string `json:"stream"`
	BytesEmitted int64  `json:"bytes_emitted"`
	BytesDropped int64  `json:"bytes_dropped"`
}

// EventDataSizeCap reports that the filesystem growth cap was hit.
type EventDataSizeCap struct {
	LimitBytes int64 `json:"limit_bytes"`
	FileSize   int64 `json:"file_size"`
}

// EventResources is resource usage in the exit event.
type EventResources struct {
	UserTimeUs             int64 `json:"user_time_us"`
	SysTimeUs              int64 `json:"sys_time_us"`
	MaxRSSKB               int64 `json:"max_rss_kb"`
	SharedMemory           int64 `json:"shared_memory"`
	UnsharedMemory         int64 `json:"unshared_memory"`
	Swaps                  int64 `json:"swaps"`
	MinorFaults            int64 `json:"minor_faults"`
	MajorFaults            int64 `json:"major_faults"`
	VoluntaryCtxSwitches   int64 `json:"voluntary_ctx_switches"`
	InvoluntaryCtxSwitches int64 `json:"involuntary_ctx_switches"`
	BlockInputOps          int64 `json:"block_input_ops"`
	BlockOutputOps         int64 `json:"block_output_ops"`
	IPCMsgsSent            int64 `json:"ipc_msgs_sent"`
	IPCMsgsReceived        int64 `json:"ipc_msgs_received"`
	SignalsReceived        int64 `json:"signals_received"`
}

// EventDataExit is the data of an exit event.
type EventDataExit struct {
	Pid        int            `json:"pid"`
	Code       int            `json:"code"`
	Signal     int            `json:"signal"`
	CoreDump   bool           `json:"core_dump"`
	TimedOut   bool           `json:"timed_out"`
	DurationMs int64          `json:"duration_ms"`
	Resources  EventResources `json:"resources"`
}

// EventDataShutdown is the data of a shutdown event.
type EventDataShutdown struct {
	StoppedAt string `json:"stopped_at"`
	Reason    string `json:"reason"`
}

// EventDataCompletion is the data of the final completion event.
type EventDataCompletion struct {
	Status          string  `json:"status"`
	ResultImageUUID *string `json:"result_image_uuid"`
	Error           *string `json:"error"`
	DurationMs      int64   `json:"duration_ms"`
	ImageSizeBytes  int64   `json:"image_size_bytes"`
}

// EventDataProgress reports import progress (arbor extension).
type EventDataProgress struct {
	Phase   string `json:"phase"`
	Done    int64  `json:"done"`
	Total   int64  `json:"total"`
	Unit    string `json:"unit"`
	Message string `json:"message,omitempty"`
}

// Timestamp formats t as RFC 3339 with nanoseconds and a Z offset.
func Timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ExecSpec is the body of POST /v1/operations/{id}/subprocesses.
type ExecSpec struct {
	Command          string              `json:"command"`
	Args             []string            `json:"args,omitempty"`
	Shell            *bool               `json:"shell,omitempty"`
	Env              map[string]string   `json:"env,omitempty"`
	Cwd              *string             `json:"cwd,omitempty"`
	UID              *int                `json:"uid,omitempty"`
	GID              *int                `json:"gid,omitempty"`
	Stdin            *ClosableStreamRepr `json:"stdin,omitempty"`
	TruncateOutputAt *int64              `json:"truncate_output_at,omitempty"`
}

// SubprocessResponse answers subprocess creation.
type SubprocessResponse struct {
	Spid int `json:"spid"`
}

// DirectoryList answers GET /v1/inspect/{uuid}/list.
type DirectoryList struct {
	Path  string     `json:"path"`
	Files []FileItem `json:"files"`
}

// FileItem is one directory entry.
type FileItem struct {
	Size      int64  `json:"size"`
	Path      string `json:"path"`
	Owner     any    `json:"owner"`
	Group     any    `json:"group"`
	UID       int    `json:"uid"`
	GID       int    `json:"gid"`
	Mode      uint32 `json:"mode"`
	Mtime     int64  `json:"mtime"`
	Nlink     int64  `json:"nlink"`
	IsDir     bool   `json:"is_dir"`
	IsRegular bool   `json:"is_regular"`
	IsSymlink bool   `json:"is_symlink"`
	IsSocket  bool   `json:"is_socket"`
	IsFifo    bool   `json:"is_fifo"`
	SymlinkTo string `json:"symlink_to"`
}

// GrepResult answers GET /v1/inspect/{uuid}/grep.
type GrepResult struct {
	Path      string      `json:"path"`
	Patterns  []string    `json:"patterns"`
	Matches   []GrepMatch `json:"matches"`
	Truncated bool        `json:"truncated"`
}

// GrepMatch is one matching or context line.
type GrepMatch struct {
	Path           string         `json:"path"`
	LineNumber     int            `json:"line_number"`
	AbsoluteOffset int64          `json:"absolute_offset"`
	LineText       string         `json:"line_text"`
	LineBytes      int            `json:"line_bytes"`
	Submatches     []GrepSubmatch `json:"submatches"`
	Type           string         `json:"type"`
}

// GrepSubmatch is one match within a line.
type GrepSubmatch struct {
	Text  string `json:"text"`
	Start int    `json:"start"`
	End   int    `json:"end"`
}

// LineageImage is an image in a lineage answer: the image, whether it was
// deleted (deleted ancestors stay while descendants need their layers), and a
// summary of the operation that produced it (null for imported images).
type LineageImage struct {
	Image
	Deleted   bool              `json:"deleted,omitempty"`
	Operation *OperationSummary `json:"operation"`
}

// Lineage answers GET /v1/images/{uuid}/lineage (arbor extension).
type Lineage struct {
	Image     LineageImage   `json:"image"`
	Ancestors []LineageImage `json:"ancestors"` // parent first, base image last
	Children  []LineageImage `json:"children"`  // direct children, newest first
}

// Diff change kinds.
const (
	ChangeAdded    = "added"
	ChangeModified = "modified"
	ChangeDeleted  = "deleted"
)

// DiffChange is one difference between two images.
type DiffChange struct {
	Path    string `json:"path"`
	Kind    string `json:"kind"` // "added", "modified" or "deleted"
	Type    string `json:"type"` // "file", "dir", "symlink" or "other"
	OldSize int64  `json:"old_size"`
	NewSize int64  `json:"new_size"`
	// Diff is a unified diff for a modified small text file, else "".
	Diff string `json:"diff"`
}

// ImageDiff answers GET /v1/images/{uuid}/diff (arbor extension): the changes
// that turn image From into image To below Path.
type ImageDiff struct {
	From    string       `json:"from"`
	To      string       `json:"to"`
	Path    string       `json:"path"`
	Changes []DiffChange `json:"changes"`
}

// TokenCreateRequest is the body of POST /v1/tokens (arbor extension). Only
// tokens of the "default" account may name another account.
type TokenCreateRequest struct {
	Account    *string `json:"account,omitempty"`
	Name       *string `json:"name,omitempty"`
	TTLSeconds *int64  `json:"ttl_seconds,omitempty"`
}

// Token describes a bearer token; the secret is never listed.
type Token struct {
	UUID      string  `json:"uuid"`
	Account   string  `json:"account"`
	Name      string  `json:"name"`
	CreatedAt string  `json:"created_at"`
	ExpiresAt *string `json:"expires_at"`
	RevokedAt *string `json:"revoked_at"`
	// ParentUUID is the token that created this one; revoking it revokes
	// this one too. Absent for the daemon's own tokens.
	ParentUUID *string `json:"parent_uuid,omitempty"`
}

// TokenCreateResponse answers POST /v1/tokens. Secret is shown only here.
type TokenCreateResponse struct {
	Token
	Secret string `json:"token"`
}

// TokenListResponse answers GET /v1/tokens.
type TokenListResponse struct {
	Tokens []Token `json:"tokens"`
}

// PathTypeHeader (arbor extension) is set on a 200 answer to
// HEAD /v1/inspect/{uuid}/download for a path that exists but is not a
// regular file: "directory" or "other". ConTree's clients use that HEAD as
// an existence probe, so it answers 200 for any path.
const PathTypeHeader = "X-Arbor-Path-Type"
