package mcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

// UploadIn is the input of upload.
type UploadIn struct {
	Content       string `json:"content,omitempty" jsonschema:"text content to upload"`
	ContentBase64 string `json:"content_base64,omitempty" jsonschema:"binary content, base64-encoded"`
	Path          string `json:"path,omitempty" jsonschema:"a local file to upload (only when the server runs on your machine, as arbor mcp)"`
}

// UploadOut is the output of upload.
type UploadOut struct {
	UUID   string `json:"uuid" jsonschema:"file uuid: pass it in run/branch files, e.g. files={\"/root/app.py\": uuid}"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Reused bool   `json:"reused" jsonschema:"the server already had this content, nothing was sent"`
}

// SyncIn is the input of sync.
type SyncIn struct {
	Source      string   `json:"source" jsonschema:"local directory on this machine"`
	Destination string   `json:"destination" jsonschema:"absolute directory in the sandbox, e.g. /root/project"`
	Exclude     []string `json:"exclude" jsonschema:"glob patterns of names or relative paths to leave out; [] syncs everything"`
}

// SyncOut is the output of sync.
type SyncOut struct {
	SyncID        string `json:"sync_id" jsonschema:"pass it in run/branch syncs=[...] to place these files before the command"`
	Source        string `json:"source"`
	Destination   string `json:"destination"`
	Files         int    `json:"files" jsonschema:"files in the sync"`
	Uploaded      int    `json:"uploaded" jsonschema:"files sent, because the server did not have their content"`
	Unchanged     int    `json:"unchanged" jsonschema:"files whose content the server already had (not sent)"`
	BytesUploaded int64  `json:"bytes_uploaded"`
	Skipped       int    `json:"skipped" jsonschema:"symlinks and special files, which are not synced"`
	Next          string `json:"next"`
}

// Limits of one sync.
const (
	maxSyncFiles = 20000
	maxSyncBytes = 2 << 30
)

func (s *server) addFileTools(ms *mcpsdk.Server) {
	desc := "Upload content to arbor's content-addressed file store and get a file uuid to place into sandboxes with run/branch files={\"/abs/path\": uuid}. " +
		"FREE (no sandbox). Identical content is stored once."
	if s.opts.LocalFiles {
		desc += " Give content (text), content_base64, or path (a local file)."
	} else {
		desc += " Give content (text) or content_base64."
	}
	addTool(ms, &mcpsdk.Tool{Name: "upload", Annotations: additive, Description: desc}, nil, s.upload)

	if !s.opts.LocalFiles {
		return
	}
	addTool(ms, &mcpsdk.Tool{
		Name:        "sync",
		Annotations: additive,
		Description: "Mirror a local directory into sandboxes: hashes every file locally and uploads only content the server does not have yet, " +
			"so re-syncing after an edit sends just the changed files. Returns a sync_id: pass syncs=[sync_id] to run or branch to place the files at destination " +
			"before the command (file modes kept; symlinks and empty directories are not synced). FREE: starts no sandbox. " +
			"Typical: sync source=./repo destination=/root/repo, then run with syncs and disposable=false to get an image with the code, and checkpoint it.",
	}, map[string]any{"exclude": []string{".git", "node_modules", "__pycache__", ".venv", "*.pyc"}}, s.sync)
}

func (s *server) upload(ctx context.Context, _ *mcpsdk.CallToolRequest, in UploadIn) (*mcpsdk.CallToolResult, UploadOut, error) {
	given := 0
	for _, v := range []string{in.Content, in.ContentBase64, in.Path} {
		if v != "" {
			given++
		}
	}
	if given != 1 {
		if s.opts.LocalFiles {
			return nil, UploadOut{}, errors.New("give exactly one of content, content_base64 or path")
		}
		return nil, UploadOut{}, errors.New("give exactly one of content or content_base64 (path is not available over this connection: send the bytes)")
	}
	var data []byte
	switch {
	case in.Content != "":
		data = []byte(in.Content)
	case in.ContentBase64 != "":
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(in.ContentBase64))
		if err != nil {
			return nil, UploadOut{}, fmt.Errorf("content_base64 is not valid base64: %v", err)
		}
		data = b
	default:
		if !s.opts.LocalFiles {
			return nil, UploadOut{}, errors.New("path is not available over this connection (the server does not share your filesystem): send content or content_base64")
		}
		f, err := s.ensureLocal(ctx, in.Path)
		if err != nil {
			return nil, UploadOut{}, err
		}
		return nil, f, nil
	}
	sum := sha256.Sum256(data)
	out, err := s.ensure(ctx, hex.EncodeToString(sum[:]), func() (io.Reader, error) { return bytes.NewReader(data), nil })
	if err != nil {
		return nil, UploadOut{}, err
	}
	return nil, out, nil
}

// ensureLocal uploads the local file at p unless the server has its content.
func (s *server) ensureLocal(ctx context.Context, p string) (UploadOut, error) {
	p, err := filepath.Abs(strings.TrimSpace(p))
	if err != nil {
		return UploadOut{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return UploadOut{}, fmt.Errorf("cannot read local file: %v", err)
	}
	if !fi.Mode().IsRegular() {
		return UploadOut{}, fmt.Errorf("%s is not a regular file (for a directory use sync)", p)
	}
	sum, err := s.hashes.sum(p, fi)
	if err != nil {
		return UploadOut{}, err
	}
	return s.ensure(ctx, sum, func() (io.Reader, error) { return os.Open(p) })
}

// ensure returns the server's file with sha256 sum, uploading open()'s
// content only if the server does not have it (GET /v1/files/{sha256}).
func (s *server) ensure(ctx context.Context, sum string, open func() (io.Reader, error)) (UploadOut, error) {
	f, err := s.b.File(ctx, sum)
	if err == nil {
		return UploadOut{UUID: f.UUID, SHA256: f.SHA256, Size: f.Size, Reused: true}, nil
	}
	if !client.IsNotFound(err) {
		return UploadOut{}, explain(err)
	}
	r, err := open()
	if err != nil {
		return UploadOut{}, err
	}
	if c, ok := r.(io.Closer); ok {
		defer c.Close()
	}
	up, err := s.b.UploadFile(ctx, r)
	if err != nil {
		return UploadOut{}, fmt.Errorf("upload: %w", explain(err))
	}
	if up.SHA256 != sum {
		return UploadOut{}, fmt.Errorf("upload corrupted: the server stored sha256 %s, the content has %s (a local file changed while uploading?): retry", up.SHA256, sum)
	}
	return UploadOut{UUID: up.UUID, SHA256: up.SHA256, Size: up.Size}, nil
}

// excluded reports whether rel (slash-separated, relative to the sync root)
// matches one of the patterns, by base name or whole path.
func excluded(rel string, patterns []string) bool {
	base := path.Base(rel)
	for _, p := range patterns {
		if ok, _ := path.Match(p, base); ok {
			return true
		}
		if ok, _ := path.Match(p, rel); ok {
			return true
		}
	}
	return false
}

// localFile is one file found by a sync walk.
type localFile struct {
	abs, rel string
	info     fs.FileInfo
}

func (s *server) sync(ctx context.Context, _ *mcpsdk.CallToolRequest, in SyncIn) (*mcpsdk.CallToolResult, SyncOut, error) {
	if strings.TrimSpace(in.Source) == "" {
		return nil, SyncOut{}, errors.New("source is required: a local directory")
	}
	src, err := filepath.Abs(strings.TrimSpace(in.Source))
	if err != nil {
		return nil, SyncOut{}, err
	}
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		return nil, SyncOut{}, fmt.Errorf("source %s is not a local directory (relative paths are taken from %s)", src, cwd())
	}
	dest := strings.TrimSpace(in.Destination)
	if !strings.HasPrefix(dest, "/") {
		return nil, SyncOut{}, fmt.Errorf("destination must be an absolute sandbox path, e.g. /root/%s", filepath.Base(src))
	}
	for _, p := range in.Exclude {
		if _, err := path.Match(p, ""); err != nil {
			return nil, SyncOut{}, fmt.Errorf("exclude pattern %q: %v", p, err)
		}
	}
	dest = path.Clean(dest)
	out := SyncOut{Source: src, Destination: dest}
	var files []localFile
	var total int64
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == src {
			return nil
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, src+string(filepath.Separator)))
		if excluded(rel, in.Exclude) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			out.Skipped++
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, localFile{abs: p, rel: rel, info: fi})
		total += fi.Size()
		if len(files) > maxSyncFiles || total > maxSyncBytes {
			return fmt.Errorf("more than %d files or %d bytes: exclude build outputs and dependencies (exclude=[...]) or sync a subdirectory", maxSyncFiles, int64(maxSyncBytes))
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, SyncOut{}, fmt.Errorf("sync %s: %w", src, err)
	}
	set := make(map[string]apitypes.FileSpec, len(files))
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		first error
	)
	sem := make(chan struct{}, 8)
	for _, f := range files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			up, err := s.ensureLocal(ctx, f.abs)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = fmt.Errorf("%s: %w", f.rel, err)
				}
				return
			}
			set[path.Join(dest, f.rel)] = apitypes.FileSpec{UUID: up.UUID, Mode: apitypes.FileMode(f.info.Mode().Perm())}
			if up.Reused {
				out.Unchanged++
			} else {
				out.Uploaded++
				out.BytesUploaded += up.Size
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, SyncOut{}, fmt.Errorf("sync %s: %w", src, first)
	}
	out.Files = len(set)
	out.SyncID = s.syncs.put(set)
	out.Next = fmt.Sprintf("run image=... syncs=[%q] command=\"cd %s && ...\" places the files; with disposable=false the result image keeps them", out.SyncID, dest)
	return nil, out, nil
}

func cwd() string {
	d, err := os.Getwd()
	if err != nil {
		return "the server's working directory"
	}
	return d
}

// syncStore keeps the file sets of recent syncs by id.
type syncStore struct {
	mu    sync.Mutex
	sets  map[string]map[string]apitypes.FileSpec
	order []string
}

// maxSyncs bounds how many sync ids are remembered.
const maxSyncs = 256

func newSyncStore() *syncStore {
	return &syncStore{sets: map[string]map[string]apitypes.FileSpec{}}
}

func (st *syncStore) put(set map[string]apitypes.FileSpec) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	id := "sync-" + hex.EncodeToString(b[:])
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sets[id] = set
	st.order = append(st.order, id)
	if len(st.order) > maxSyncs {
		delete(st.sets, st.order[0])
		st.order = st.order[1:]
	}
	return id
}

func (st *syncStore) get(id string) (map[string]apitypes.FileSpec, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	set, ok := st.sets[strings.TrimSpace(id)]
	return set, ok
}

// hashCache remembers local files' sha256 by path, size and mtime, so a
// re-sync hashes only files that changed.
type hashCache struct {
	mu sync.Mutex
	m  map[string]hashEntry
}

type hashEntry struct {
	size  int64
	mtime time.Time
	sum   string
}

func newHashCache() *hashCache { return &hashCache{m: map[string]hashEntry{}} }

// sum returns the sha256 of the file at p, described by fi.
func (c *hashCache) sum(p string, fi fs.FileInfo) (string, error) {
	c.mu.Lock()
	e, ok := c.m[p]
	c.mu.Unlock()
	if ok && e.size == fi.Size() && e.mtime.Equal(fi.ModTime()) {
		return e.sum, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	c.mu.Lock()
	c.m[p] = hashEntry{size: fi.Size(), mtime: fi.ModTime(), sum: sum}
	c.mu.Unlock()
	return sum, nil
}
