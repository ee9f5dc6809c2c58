package mcp

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode/utf8"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

// ListFilesIn is the input of list_files.
type ListFilesIn struct {
	Image string `json:"image" jsonschema:"image UUID, tag:NAME or checkpoint name"`
	Path  string `json:"path" jsonschema:"absolute directory path in the image"`
	Limit int    `json:"limit" jsonschema:"list at most this many entries"`
}

// FileEntry is one directory entry.
type FileEntry struct {
	Name   string `json:"name"`
	Path   string `json:"path" jsonschema:"absolute path in the image"`
	Type   string `json:"type" jsonschema:"file, dir, symlink, socket, fifo or other"`
	Size   int64  `json:"size"`
	Mode   string `json:"mode" jsonschema:"permission bits in octal, e.g. 0644"`
	Target string `json:"target,omitempty" jsonschema:"symlink target"`
}

// ListFilesOut is the output of list_files.
type ListFilesOut struct {
	Image     string      `json:"image"`
	Path      string      `json:"path"`
	Count     int         `json:"count" jsonschema:"entries in the directory"`
	Entries   []FileEntry `json:"entries"`
	Truncated bool        `json:"truncated,omitempty"`
}

// ReadFileIn is the input of read_file.
type ReadFileIn struct {
	Image    string `json:"image" jsonschema:"image UUID, tag:NAME or checkpoint name"`
	Path     string `json:"path" jsonschema:"absolute file path in the image"`
	Offset   int64  `json:"offset,omitempty" jsonschema:"byte offset to start reading at"`
	MaxBytes int    `json:"max_bytes" jsonschema:"read at most this many bytes"`
}

// ReadFileOut is the output of read_file.
type ReadFileOut struct {
	Image      string `json:"image"`
	Path       string `json:"path"`
	Size       int64  `json:"size" jsonschema:"the file's size in bytes"`
	Offset     int64  `json:"offset"`
	Content    string `json:"content"`
	Encoding   string `json:"encoding" jsonschema:"utf-8, or base64 for binary content"`
	Truncated  bool   `json:"truncated" jsonschema:"true when the file continues after this chunk"`
	NextOffset int64  `json:"next_offset,omitempty" jsonschema:"offset of the next chunk when truncated"`
}

// GrepIn is the input of grep.
type GrepIn struct {
	Image      string `json:"image" jsonschema:"image UUID, tag:NAME or checkpoint name"`
	Pattern    string `json:"pattern" jsonschema:"regular expression (Go/RE2 syntax)"`
	Path       string `json:"path" jsonschema:"directory or file to search"`
	Glob       string `json:"glob,omitempty" jsonschema:"only files whose base name matches, e.g. *.py"`
	IgnoreCase bool   `json:"ignore_case,omitempty"`
	MaxMatches int    `json:"max_matches" jsonschema:"stop after this many matching lines"`
	Context    int    `json:"context,omitempty" jsonschema:"lines of context before and after each match"`
}

// GrepLine is one matching (or context) line.
type GrepLine struct {
	Path    string `json:"path"`
	Line    int    `json:"line"`
	Text    string `json:"text"`
	Context bool   `json:"context,omitempty" jsonschema:"a context line, not a match"`
}

// GrepOut is the output of grep.
type GrepOut struct {
	Image     string     `json:"image"`
	Matches   int        `json:"matches"`
	Lines     []GrepLine `json:"lines"`
	Truncated bool       `json:"truncated,omitempty"`
}

// DownloadIn is the input of download.
type DownloadIn struct {
	Image       string `json:"image" jsonschema:"image UUID, tag:NAME or checkpoint name"`
	Path        string `json:"path" jsonschema:"absolute file path in the image"`
	Destination string `json:"destination" jsonschema:"local file path to write (on this machine); parent directories are created"`
	Executable  bool   `json:"executable,omitempty" jsonschema:"make the local file executable"`
}

// DownloadOut is the output of download.
type DownloadOut struct {
	Image       string `json:"image"`
	Path        string `json:"path"`
	Destination string `json:"destination"`
	Size        int64  `json:"size"`
}

func (s *server) addInspectTools(ms *mcpsdk.Server) {
	addTool(ms, &mcpsdk.Tool{
		Name:        "list_files",
		Annotations: readOnly,
		Description: "List a directory of any image without starting a sandbox. FREE and instant: prefer it to run \"ls\". " +
			"Works on checkpoints and on every run's result_image.",
	}, map[string]any{"path": "/", "limit": 500}, s.listFiles)

	addTool(ms, &mcpsdk.Tool{
		Name:        "read_file",
		Annotations: readOnly,
		Description: "Read a file of any image without starting a sandbox. FREE and instant: prefer it to run \"cat\". " +
			"Text comes back as UTF-8, binary as base64; large files are read in chunks (offset/next_offset).",
	}, map[string]any{"max_bytes": 65536}, s.readFile)

	addTool(ms, &mcpsdk.Tool{
		Name:        "grep",
		Annotations: readOnly,
		Description: "Search the files of any image with a regular expression, without starting a sandbox. FREE: prefer it to run \"grep -r\".",
	}, map[string]any{"path": "/", "max_matches": 100}, s.grep)

	if !s.opts.LocalFiles {
		return
	}
	addTool(ms, &mcpsdk.Tool{
		Name:        "download",
		Annotations: localWrite,
		Description: "Copy a file from an image to this machine's filesystem (for example a build artifact or a report). FREE: starts no sandbox. " +
			"To just look at a file use read_file.",
	}, nil, s.download)
}

// isText reports whether b reads as text: valid UTF-8 without NUL bytes.
func isText(b []byte) bool {
	return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0
}

// absPath cleans p as an absolute path in an image.
func absPath(p string) string {
	return path.Clean("/" + strings.TrimSpace(p))
}

// pathError explains an inspection failure at p in image id.
func pathError(err error, id, p, what string) error {
	if client.IsNotFound(err) {
		return fmt.Errorf("%s not found in image %s (%s): list_files image=%q path=%q shows what is there", p, id, message(err), id, path.Dir(p))
	}
	if client.IsBadRequest(err) {
		return fmt.Errorf("%s %s in image %s: %s", what, p, id, message(err))
	}
	return explain(err)
}

func entryType(f apitypes.FileItem) string {
	switch {
	case f.IsDir:
		return "dir"
	case f.IsSymlink:
		return "symlink"
	case f.IsRegular:
		return "file"
	case f.IsSocket:
		return "socket"
	case f.IsFifo:
		return "fifo"
	}
	return "other"
}

func (s *server) listFiles(ctx context.Context, _ *mcpsdk.CallToolRequest, in ListFilesIn) (*mcpsdk.CallToolResult, ListFilesOut, error) {
	if in.Limit < 1 {
		return nil, ListFilesOut{}, fmt.Errorf("limit must be at least 1")
	}
	im, err := s.resolve(ctx, in.Image)
	if err != nil {
		return nil, ListFilesOut{}, err
	}
	p := absPath(in.Path)
	dl, err := s.b.ListDir(ctx, im.UUID, p)
	if err != nil {
		return nil, ListFilesOut{}, pathError(err, im.UUID, p, "cannot list")
	}
	out := ListFilesOut{Image: im.UUID, Path: p, Count: len(dl.Files), Entries: []FileEntry{}}
	for i, f := range dl.Files {
		if i == in.Limit {
			out.Truncated = true
			break
		}
		out.Entries = append(out.Entries, FileEntry{
			Name:   f.Path,
			Path:   path.Join(p, f.Path),
			Type:   entryType(f),
			Size:   f.Size,
			Mode:   fmt.Sprintf("%04o", f.Mode&0o7777),
			Target: f.SymlinkTo,
		})
	}
	return nil, out, nil
}

func (s *server) readFile(ctx context.Context, _ *mcpsdk.CallToolRequest, in ReadFileIn) (*mcpsdk.CallToolResult, ReadFileOut, error) {
	if in.MaxBytes < 1 || in.MaxBytes > 4<<20 {
		return nil, ReadFileOut{}, fmt.Errorf("max_bytes must be between 1 and 4194304")
	}
	if in.Offset < 0 {
		return nil, ReadFileOut{}, fmt.Errorf("offset must not be negative")
	}
	im, err := s.resolve(ctx, in.Image)
	if err != nil {
		return nil, ReadFileOut{}, err
	}
	p := absPath(in.Path)
	rc, size, err := s.b.Download(ctx, im.UUID, p)
	if err != nil {
		if client.IsBadRequest(err) || strings.Contains(message(err), "directory") {
			return nil, ReadFileOut{}, fmt.Errorf("cannot read %s in image %s: %s (for a directory use list_files)", p, im.UUID, message(err))
		}
		return nil, ReadFileOut{}, pathError(err, im.UUID, p, "cannot read")
	}
	defer rc.Close()
	if in.Offset > 0 {
		if _, err := io.CopyN(io.Discard, rc, in.Offset); err != nil && err != io.EOF {
			return nil, ReadFileOut{}, explain(err)
		}
	}
	buf, err := io.ReadAll(io.LimitReader(rc, int64(in.MaxBytes)+1))
	if err != nil {
		return nil, ReadFileOut{}, explain(err)
	}
	out := ReadFileOut{Image: im.UUID, Path: p, Size: size, Offset: in.Offset}
	if len(buf) > in.MaxBytes {
		buf, out.Truncated = buf[:in.MaxBytes], true
		buf = trimPartialRune(buf) // do not split a character of a text file
		out.NextOffset = in.Offset + int64(len(buf))
	}
	if size < 0 {
		out.Size = in.Offset + int64(len(buf))
	}
	if isText(buf) {
		out.Content, out.Encoding = string(buf), "utf-8"
	} else {
		out.Content, out.Encoding = base64.StdEncoding.EncodeToString(buf), "base64"
	}
	return nil, out, nil
}

func (s *server) grep(ctx context.Context, _ *mcpsdk.CallToolRequest, in GrepIn) (*mcpsdk.CallToolResult, GrepOut, error) {
	if strings.TrimSpace(in.Pattern) == "" {
		return nil, GrepOut{}, fmt.Errorf("pattern is required")
	}
	if in.MaxMatches < 1 {
		return nil, GrepOut{}, fmt.Errorf("max_matches must be at least 1")
	}
	im, err := s.resolve(ctx, in.Image)
	if err != nil {
		return nil, GrepOut{}, err
	}
	o := client.GrepOptions{Patterns: []string{in.Pattern}, Paths: []string{absPath(in.Path)}, MaxTotal: in.MaxMatches,
		Before: in.Context, After: in.Context}
	if in.Glob != "" {
		o.Globs = []string{in.Glob}
	}
	if in.IgnoreCase {
		o.Case = "insensitive"
	}
	r, err := s.b.Grep(ctx, im.UUID, o)
	if err != nil {
		if client.IsBadRequest(err) {
			return nil, GrepOut{}, fmt.Errorf("grep: %s (patterns use Go RE2 syntax: no backreferences or lookaround)", message(err))
		}
		return nil, GrepOut{}, pathError(err, im.UUID, absPath(in.Path), "cannot search")
	}
	out := GrepOut{Image: im.UUID, Lines: []GrepLine{}, Truncated: r.Truncated}
	for _, m := range r.Matches {
		isCtx := m.Type == "context"
		if !isCtx {
			out.Matches++
		}
		text, _ := clip([]byte(strings.TrimRight(m.LineText, "\r\n")), 500)
		out.Lines = append(out.Lines, GrepLine{Path: m.Path, Line: m.LineNumber, Text: text, Context: isCtx})
	}
	return nil, out, nil
}

func (s *server) download(ctx context.Context, _ *mcpsdk.CallToolRequest, in DownloadIn) (*mcpsdk.CallToolResult, DownloadOut, error) {
	dest := strings.TrimSpace(in.Destination)
	if dest == "" {
		return nil, DownloadOut{}, fmt.Errorf("destination is required: a local file path")
	}
	dest, err := filepath.Abs(dest)
	if err != nil {
		return nil, DownloadOut{}, err
	}
	if fi, err := os.Stat(dest); err == nil && fi.IsDir() {
		dest = filepath.Join(dest, path.Base(absPath(in.Path)))
	}
	im, err := s.resolve(ctx, in.Image)
	if err != nil {
		return nil, DownloadOut{}, err
	}
	p := absPath(in.Path)
	rc, _, err := s.b.Download(ctx, im.UUID, p)
	if err != nil {
		return nil, DownloadOut{}, pathError(err, im.UUID, p, "cannot download")
	}
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return nil, DownloadOut{}, err
	}
	mode := fs.FileMode(0o644)
	if in.Executable {
		mode = 0o755
	}
	n, err := writeAtomic(dest, rc, mode)
	if err != nil {
		return nil, DownloadOut{}, fmt.Errorf("writing %s: %w", dest, explain(err))
	}
	return nil, DownloadOut{Image: im.UUID, Path: p, Destination: dest, Size: n}, nil
}

// writeAtomic writes r to path through a temporary file in the same
// directory, so a failed download leaves no partial file.
func writeAtomic(dest string, r io.Reader, mode fs.FileMode) (int64, error) {
	f, err := os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".*")
	if err != nil {
		return 0, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	n, err := io.Copy(f, r)
	if err != nil {
		return 0, err
	}
	if err := f.Chmod(mode); err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(f.Name(), dest); err != nil {
		return 0, err
	}
	ok = true
	return n, nil
}
