package mcp

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/arborsh/arbor/client/apitypes"
)

// clip shortens b to at most max bytes for an agent to read: the head (a
// quarter) and the tail (the rest, where test summaries and errors are),
// joined by a marker saying how much was cut. It reports whether it cut.
// Invalid UTF-8 is replaced, so the result is always valid text.
func clip(b []byte, max int) (string, bool) {
	if max <= 0 || len(b) <= max {
		return strings.ToValidUTF8(string(b), "\uFFFD"), false
	}
	return clipEnds(b, b, len(b), max), true
}

// clipEnds is clip's cut of a stream of n bytes (n > max) that begins
// with first and ends with last (each at least max bytes, or all of it).
func clipEnds(first, last []byte, n, max int) string {
	head := max / 4
	tail := max - head
	h := trimPartialRune(first[:head])
	t := last[len(last)-tail:]
	for i := 0; i < 4 && len(t) > 0 && !utf8.RuneStart(t[0]); i++ {
		t = t[1:]
	}
	omitted := n - len(h) - len(t)
	s := string(h) + fmt.Sprintf("\n…[%d bytes omitted]…\n", omitted) + string(t)
	return strings.ToValidUTF8(s, "\uFFFD")
}

// streamTail keeps of a stream that may grow without bound (a sandbox's
// output) only what clip shows of it: its first and last max bytes, and
// its length.
type streamTail struct {
	max         int
	first, last []byte
	n           int
}

func (s *streamTail) write(b []byte) {
	s.n += len(b)
	if room := s.max - len(s.first); room > 0 {
		s.first = append(s.first, b[:min(room, len(b))]...)
	}
	s.last = append(s.last, b...)
	if over := len(s.last) - s.max; over > 0 {
		s.last = append(s.last[:0], s.last[over:]...)
	}
}

// clip is clip of the whole stream.
func (s *streamTail) clip() (string, bool) {
	if s.max <= 0 || s.n <= s.max {
		return clip(s.last, s.max)
	}
	return clipEnds(s.first, s.last, s.n, s.max), true
}

// trimPartialRune drops the bytes of a UTF-8 sequence cut at the end of
// b, if that makes b valid; binary data is returned unchanged.
func trimPartialRune(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	for i := 1; i <= 3 && i < len(b); i++ {
		if utf8.Valid(b[:len(b)-i]) {
			return b[:len(b)-i]
		}
	}
	return b
}

// textResult is a tool result whose content is text written for the
// agent; the structured output is still attached by the SDK.
func textResult(format string, args ...any) *mcpsdk.CallToolResult {
	return &mcpsdk.CallToolResult{Content: []mcpsdk.Content{&mcpsdk.TextContent{Text: fmt.Sprintf(format, args...)}}}
}

// deref returns *p, or the zero value for nil.
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// ImageInfo describes one image.
type ImageInfo struct {
	UUID        string `json:"uuid" jsonschema:"image id; pass it as image= to other tools"`
	Tag         string `json:"tag,omitempty" jsonschema:"its tag (checkpoint name), if any; an image carries at most one"`
	CreatedAt   string `json:"created_at"`
	OperationID string `json:"operation_id,omitempty" jsonschema:"the run or import that produced it"`
	Parent      string `json:"parent,omitempty" jsonschema:"the image it was derived from"`
	Depth       int    `json:"depth,omitempty" jsonschema:"layers in its chain (1 for a base image)"`
	LayerBytes  int64  `json:"layer_bytes,omitempty" jsonschema:"bytes this image adds over its parent"`
}

func imageInfo(im *apitypes.Image) ImageInfo {
	return ImageInfo{
		UUID:        im.UUID,
		Tag:         deref(im.Tag),
		CreatedAt:   im.CreatedAt,
		OperationID: deref(im.OperationUUID),
		Parent:      deref(im.ParentUUID),
		Depth:       im.Depth,
		LayerBytes:  im.LayerBytes,
	}
}

// OperationInfo is an operation (a run or an import) as agents see it.
type OperationInfo struct {
	OperationID string  `json:"operation_id"`
	Kind        string  `json:"kind" jsonschema:"instance (a run) or image_import"`
	Status      string  `json:"status" jsonschema:"PENDING, ASSIGNED, EXECUTING, SUCCESS, FAILED or CANCELLED; SUCCESS means the sandbox ran, see exit_code for the command"`
	Done        bool    `json:"done" jsonschema:"whether the operation has finished"`
	Error       string  `json:"error,omitempty" jsonschema:"why the operation failed (infrastructure, not the command)"`
	Command     string  `json:"command,omitempty"`
	Image       string  `json:"image,omitempty" jsonschema:"the image the run started from"`
	ResultImage string  `json:"result_image,omitempty" jsonschema:"the image holding the filesystem after the run (or the imported image); continue from it"`
	ResultTag   string  `json:"result_tag,omitempty"`
	Disposable  bool    `json:"disposable,omitempty" jsonschema:"true when the run saved no image"`
	ExitCode    *int    `json:"exit_code,omitempty" jsonschema:"the command's exit code once it has finished"`
	TimedOut    bool    `json:"timed_out" jsonschema:"whether the command was killed at its timeout"`
	DurationS   float64 `json:"duration_s" jsonschema:"seconds the operation took (so far)"`
	Stdout      string  `json:"stdout,omitempty"`
	Stderr      string  `json:"stderr,omitempty"`
	Note        string  `json:"note,omitempty" jsonschema:"what was cut from stdout/stderr and how to see more"`
	// EgressDenied is filled by server.egressDenials, not operationInfo.
	EgressDenied string `json:"egress_denied,omitempty" jsonschema:"what the run's egress policy (allow/deny) blocked: refused names and dropped destinations; a command that needed them failed for that reason"`

	egress bool // the run had an egress policy
}

// operationInfo condenses op, showing up to maxOutput bytes per stream.
func operationInfo(op *apitypes.OperationResponse, maxOutput int) OperationInfo {
	oi := OperationInfo{
		OperationID: op.UUID,
		Kind:        op.Kind,
		Status:      op.Status,
		Done:        apitypes.IsTerminal(op.Status),
		Error:       deref(op.Error),
		Image:       deref(op.ImageUUID),
		ResultImage: deref(op.ResultImageUUID),
		ResultTag:   deref(op.Result.Tag),
		DurationS:   round2(op.Duration),
	}
	if oi.ResultImage == "" {
		oi.ResultImage = deref(op.Result.Image)
	}
	if op.Kind != apitypes.KindInstance || len(op.Metadata) == 0 {
		return oi
	}
	var m apitypes.InstanceMetadata
	if json.Unmarshal(op.Metadata, &m) != nil {
		return oi
	}
	oi.Command = commandLine(m.Command, m.Args, m.Shell)
	oi.Disposable = m.Disposable
	oi.egress = m.Networking.Egress != nil
	if oi.Image == "" {
		oi.Image = m.Image
	}
	if m.Result == nil {
		return oi
	}
	st := m.Result.State
	if st.ExitCode >= 0 || oi.Done {
		oi.ExitCode = ptr(st.ExitCode)
	}
	oi.TimedOut = st.TimedOut
	var notes []string
	out, n := streamText(m.Result.Stdout, "stdout", maxOutput)
	oi.Stdout, notes = out, append(notes, n...)
	errText, n := streamText(m.Result.Stderr, "stderr", maxOutput)
	oi.Stderr, notes = errText, append(notes, n...)
	if st.Signal > 0 && !st.TimedOut {
		notes = append(notes, fmt.Sprintf("the command was killed by signal %d", st.Signal))
	}
	if len(notes) > 0 {
		oi.Note = strings.Join(notes, "; ")
	}
	return oi
}

// streamText decodes one captured stream and clips it.
func streamText(s apitypes.StreamRepr, name string, max int) (string, []string) {
	b, err := s.Bytes()
	if err != nil {
		return "", []string{name + " could not be decoded: " + err.Error()}
	}
	var notes []string
	text, cut := clip(b, max)
	if cut {
		notes = append(notes, fmt.Sprintf("%s has %d bytes, showing the first and last %d: call get_operation with a larger max_output, or write output to a file and read_file it", name, len(b), max))
	}
	if s.Truncated {
		notes = append(notes, fmt.Sprintf("%s was capped by the sandbox after %d bytes", name, len(b)))
	}
	if !utf8.Valid(b) {
		notes = append(notes, name+" is not valid UTF-8 (binary bytes replaced)")
	}
	return text, notes
}

// commandLine renders a command as it was run.
func commandLine(cmd string, args []string, shell bool) string {
	if shell || len(args) == 0 {
		return cmd
	}
	return cmd + " " + strings.Join(args, " ")
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// short abbreviates s to n runes for tables.
func short(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// renderOperation writes an operation for the agent to read.
func renderOperation(oi OperationInfo, next string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "operation %s (%s): %s", oi.OperationID, oi.Kind, oi.Status)
	if oi.ExitCode != nil {
		fmt.Fprintf(&b, ", exit code %d", *oi.ExitCode)
	}
	if oi.TimedOut {
		b.WriteString(", TIMED OUT")
	}
	fmt.Fprintf(&b, ", %.2f s\n", oi.DurationS)
	if oi.Command != "" {
		fmt.Fprintf(&b, "command: %s\n", oi.Command)
	}
	if oi.Image != "" {
		fmt.Fprintf(&b, "image: %s\n", oi.Image)
	}
	switch {
	case oi.ResultImage != "":
		fmt.Fprintf(&b, "result_image: %s\n", oi.ResultImage)
	case oi.Disposable:
		b.WriteString("result_image: none (disposable run)\n")
	}
	if oi.Error != "" {
		fmt.Fprintf(&b, "error: %s\n", oi.Error)
	}
	if oi.Kind == apitypes.KindInstance && oi.Done {
		fmt.Fprintf(&b, "--- stdout ---\n%s", oi.Stdout)
		if oi.Stdout != "" && !strings.HasSuffix(oi.Stdout, "\n") {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "--- stderr ---\n%s", oi.Stderr)
		if oi.Stderr != "" && !strings.HasSuffix(oi.Stderr, "\n") {
			b.WriteString("\n")
		}
		b.WriteString("---\n")
	}
	if oi.EgressDenied != "" {
		fmt.Fprintf(&b, "egress policy blocked: %s\n", oi.EgressDenied)
	}
	if oi.Note != "" {
		fmt.Fprintf(&b, "note: %s\n", oi.Note)
	}
	if next != "" {
		fmt.Fprintf(&b, "next: %s\n", next)
	}
	return b.String()
}
