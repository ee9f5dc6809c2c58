// Package oplog is the vocabulary of the operation record as the engine
// keeps it: statuses and kinds, the event log's types and payloads, and the
// metadata documents of runs and imports (the request echo and the result).
// The engine writes these as JSON into the metadata store and reads them
// back; internal/api converts them to the wire types of client/apitypes.
//
// Their JSON is ConTree's wire form today, so api converts by re-decoding
// (see api's TestRecordMatchesWire, which fails when the two drift), but
// the engine owns this package: a later wire version changes apitypes and
// api's conversion, not the engine or what the store holds.
package oplog

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Operation statuses.
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
	EventProgress   = "progress" // import progress
)

// Timestamp formats t as RFC 3339 with nanoseconds and a Z offset.
func Timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

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

// EventDataNetwork is the data of a network event.
type EventDataNetwork struct {
	Interfaces []NetworkInterface `json:"interfaces"`
	Configured *NetworkConfigured `json:"configured,omitempty"`
	Error      *string            `json:"error,omitempty"`
}

// NetworkInterface is one interface of a sandbox with its counters.
type NetworkInterface struct {
	Name      string `json:"name"`
	RxBytes   int64  `json:"rx_bytes"`
	RxPackets int64  `json:"rx_packets"`
	RxErrs    int64  `json:"rx_errs"`
	RxDrop    int64  `json:"rx_drop"`
	TxBytes   int64  `json:"tx_bytes"`
	TxPackets int64  `json:"tx_packets"`
	TxErrs    int64  `json:"tx_errs"`
	TxDrop    int64  `json:"tx_drop"`
}

// NetworkConfigured is the addressing given to a sandbox.
type NetworkConfigured struct {
	IP4        string `json:"ip4,omitempty"`
	IP4Gw      string `json:"ip4_gw,omitempty"`
	IP6        string `json:"ip6,omitempty"`
	IP6Gw      string `json:"ip6_gw,omitempty"`
	GwMAC      string `json:"gw_mac,omitempty"`
	Nameserver string `json:"nameserver,omitempty"`
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

// EventDataStream is the data of stdin, stdout and stderr events.
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

// EventResources is a process's resource usage, in the exit event.
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

// EventDataCompletion is the data of an operation's last event.
type EventDataCompletion struct {
	Status          string  `json:"status"`
	ResultImageUUID *string `json:"result_image_uuid"`
	Error           *string `json:"error"`
	DurationMs      int64   `json:"duration_ms"`
	ImageSizeBytes  int64   `json:"image_size_bytes"`
}

// EventDataProgress reports an import's progress.
type EventDataProgress struct {
	Phase   string `json:"phase"`
	Done    int64  `json:"done"`
	Total   int64  `json:"total"`
	Unit    string `json:"unit"`
	Message string `json:"message,omitempty"`
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
	for _, c := range b {
		if (c < 32 || c > 126) && c != '\t' && c != '\n' && c != '\r' {
			return StreamRepr{Value: base64.StdEncoding.EncodeToString(b), Encoding: "base64", Truncated: truncated}
		}
	}
	return StreamRepr{Value: string(b), Encoding: "ascii", Truncated: truncated}
}

// Bytes decodes the stream's value.
func (s StreamRepr) Bytes() ([]byte, error) { return Decode(s.Value, s.Encoding) }

// Decode decodes a stream value written in encoding enc ("ascii" and its
// aliases, or "base64").
func Decode(v, enc string) ([]byte, error) {
	switch strings.ToLower(enc) {
	case "", "ascii", "utf-8", "utf8", "text":
		return []byte(v), nil
	case "base64":
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("value is not valid base64: %v", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("unknown encoding %q: use \"ascii\" or \"base64\"", enc)
}

// FileSpec is an uploaded file placed into a run.
type FileSpec struct {
	UUID string   `json:"uuid"`
	Mode FileMode `json:"mode"`
	UID  int      `json:"uid"`
	GID  int      `json:"gid"`
}

// FileMode is a permission mode; it encodes as a 4-digit octal string.
type FileMode uint32

// MarshalJSON encodes the mode as a 4-digit octal string ("0644").
func (m FileMode) MarshalJSON() ([]byte, error) {
	return json.Marshal(fmt.Sprintf("%04o", uint32(m)&0o7777))
}

// UnmarshalJSON decodes the octal string MarshalJSON writes.
func (m *FileMode) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("file mode %s: want an octal string like \"0644\"", b)
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return fmt.Errorf("file mode %q is not octal", s)
	}
	*m = FileMode(v & 0o7777)
	return nil
}

// ResourcesLimits bounds what a run may consume; nil takes the default.
type ResourcesLimits struct {
	MaxLayerBytes *int64   `json:"max_layer_bytes,omitempty"`
	MemoryBytes   *int64   `json:"memory_bytes,omitempty"`
	Pids          *int64   `json:"pids,omitempty"`
	CPUs          *float64 `json:"cpus,omitempty"`
}

// InstanceMetadata is a run's metadata document: its request with every
// default filled in, and the result once its main process has exited.
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

// NetworkingEcho is a run's network setting.
type NetworkingEcho struct {
	Enabled bool        `json:"enabled"`
	Egress  *EgressEcho `json:"egress,omitempty"` // arbor extension
}

// StdinEcho is a run's stdin as it was given.
type StdinEcho struct {
	Value    string `json:"value"`
	Encoding string `json:"encoding"`
	Close    bool   `json:"close"`
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

// InstanceResultState is how a process ended; while it runs, ExitCode and
// Signal are -1.
type InstanceResultState struct {
	Continued bool `json:"continued"`
	CoreDump  bool `json:"core_dump"`
	ExitCode  int  `json:"exit_code"`
	Pid       int  `json:"pid"`
	Signal    int  `json:"signal"`
	Stopped   bool `json:"stopped"`
	TimedOut  bool `json:"timed_out"`
}

// ImageImportMetadata is an import's metadata document: its source with
// the password masked, its tag and timeout.
type ImageImportMetadata struct {
	Registry ImportSource `json:"registry"`
	Tag      *string      `json:"tag"`
	Timeout  int          `json:"timeout"`
}

// ImportSource names what an import reads: a registry reference or an
// uploaded archive, with credentials for a registry.
type ImportSource struct {
	URL         string       `json:"url"`
	Credentials *Credentials `json:"credentials,omitempty"`
}

// Credentials for a registry; empty strings mean anonymous.
type Credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}
