package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
)

var shaRE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// IsSHA256 reports whether s is a hex sha256 digest.
func IsSHA256(s string) bool { return shaRE.MatchString(s) }

func (e *Engine) blobPath(sha string) string {
	return filepath.Join(e.cfg.Home, "blobs", "sha256", strings.ToLower(sha))
}

// PutFile stores r's content for account, content-addressed and deduplicated.
// The body streams to disk while being hashed, so uploads larger than memory
// work; maxBytes (0: unlimited) bounds it.
func (e *Engine) PutFile(ctx context.Context, account string, r io.Reader, maxBytes int64) (File, error) {
	if err := checkAccount(account); err != nil {
		return File{}, err
	}
	room, err := e.newUploadRoom(ctx, account) // disk reserve and quota (upload.go)
	if err != nil {
		return File{}, err
	}
	tmp, err := os.CreateTemp(filepath.Join(e.cfg.Home, "tmp"), "upload-*")
	if err != nil {
		return File{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	src := r
	if maxBytes > 0 {
		src = io.LimitReader(r, maxBytes+1)
	}
	n, err := io.Copy(io.MultiWriter(room, tmp, h), src)
	if err != nil {
		return File{}, room.failed(n, err)
	}
	if maxBytes > 0 && n > maxBytes {
		return File{}, errdefs.TooLarge("upload exceeds the %d-byte limit", maxBytes)
	}
	if err := tmp.Sync(); err != nil {
		return File{}, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	dst := e.blobPath(sum)
	e.filesMu.Lock() // against retention removing this content meanwhile
	defer e.filesMu.Unlock()
	if _, err := os.Stat(dst); err != nil {
		if err := os.Rename(tmp.Name(), dst); err != nil {
			return File{}, err
		}
		if err := syncDir(filepath.Dir(dst)); err != nil {
			return File{}, err
		}
	}
	release, err := e.shareBlob(ctx, sum)
	if err != nil {
		return File{}, err
	}
	defer release()
	f, err := e.st.PutFile(ctx, store.File{UUID: newID(), Account: account, SHA256: sum, Size: n, UpdatedAt: e.now()})
	return toFile(f), err
}

// File finds account's file by uuid or sha256.
func (e *Engine) File(ctx context.Context, account, ref string) (File, error) {
	var f store.File
	var err error
	switch {
	case IsUUID(ref):
		f, err = e.st.FileByUUID(ctx, account, strings.ToLower(ref))
	case IsSHA256(ref):
		f, err = e.st.FileBySHA(ctx, account, ref)
	default:
		return File{}, errdefs.InvalidArgument("%q is neither a file UUID nor a sha256 hex digest", ref)
	}
	return toFile(f), err
}

// ListFiles lists account's files.
func (e *Engine) ListFiles(ctx context.Context, account string, since, until time.Time, limit, offset int) ([]File, error) {
	rs, err := e.st.ListFiles(ctx, account, since, until, limit, offset)
	out := make([]File, 0, len(rs))
	for _, r := range rs {
		out = append(out, toFile(r))
	}
	return out, err
}

// OpenFile opens an uploaded file's content.
func (e *Engine) OpenFile(ctx context.Context, account, ref string) (*os.File, File, error) {
	f, err := e.File(ctx, account, ref)
	if err != nil {
		return nil, f, err
	}
	if err := e.ensureBlob(ctx, f.SHA256); err != nil {
		return nil, f, err
	}
	fh, err := os.Open(e.blobPath(f.SHA256))
	return fh, f, err
}

func (e *Engine) checkStorage(ctx context.Context, account string) error {
	if e.cfg.MaxStorageBytes <= 0 {
		return nil
	}
	n, err := e.storedBytes(ctx, account)
	if err != nil {
		return err
	}
	if n >= e.cfg.MaxStorageBytes {
		return errdefs.Forbidden("account storage quota reached (%d of %d bytes): delete images (arbor rmi) or ask for a larger quota", n, e.cfg.MaxStorageBytes)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
