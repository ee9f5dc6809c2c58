package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	"github.com/arborsh/arbor/client/apitypes"
)

// UploadFile streams r to the server as a content-addressed file. Readers
// whose size is unknown go out chunked; nothing is buffered in memory.
// Identical content yields the same file. Only a seekable r is retried.
func (c *Client) UploadFile(ctx context.Context, r io.Reader) (*apitypes.FileResponse, error) {
	var out apitypes.FileResponse
	return &out, c.do(ctx, request{method: http.MethodPost, path: "/files", raw: r}, &out)
}

// File returns an uploaded file by sha256 (or uuid).
func (c *Client) File(ctx context.Context, ref string) (*apitypes.File, error) {
	var out apitypes.File
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/files/" + url.PathEscape(ref)}, &out)
}

// FileExists reports whether a file with this sha256 (or uuid) was uploaded.
func (c *Client) FileExists(ctx context.Context, ref string) (bool, error) {
	return c.exists(ctx, request{method: http.MethodHead, path: "/files/" + url.PathEscape(ref)})
}

// exists maps 200 to true and 404 to false.
func (c *Client) exists(ctx context.Context, req request) (bool, error) {
	err := c.do(ctx, req, nil)
	switch {
	case err == nil:
		return true, nil
	case IsNotFound(err):
		return false, nil
	}
	return false, err
}

// ListFiles lists uploaded files, newest first.
func (c *Client) ListFiles(ctx context.Context, p Page) ([]apitypes.File, error) {
	var out apitypes.FilesListResponse
	if err := c.do(ctx, request{method: http.MethodGet, path: "/files", query: p.query()}, &out); err != nil {
		return nil, err
	}
	return out.Files, nil
}

// EnsureFile makes the local file at path available on the server: it
// hashes the file and uploads it only if the server does not have that
// content yet.
func (c *Client) EnsureFile(ctx context.Context, path string) (*apitypes.FileResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("hash %s: %w", path, err)
	}
	return c.ensure(ctx, hex.EncodeToString(h.Sum(nil)), func() (io.Reader, error) {
		_, err := f.Seek(0, io.SeekStart)
		return f, err
	})
}

// EnsureBytes is EnsureFile for content in memory.
func (c *Client) EnsureBytes(ctx context.Context, data []byte) (*apitypes.FileResponse, error) {
	sum := sha256.Sum256(data)
	return c.ensure(ctx, hex.EncodeToString(sum[:]), func() (io.Reader, error) { return bytes.NewReader(data), nil })
}

func (c *Client) ensure(ctx context.Context, sum string, open func() (io.Reader, error)) (*apitypes.FileResponse, error) {
	f, err := c.File(ctx, sum)
	if err == nil {
		return &apitypes.FileResponse{UUID: f.UUID, SHA256: f.SHA256, Size: f.Size}, nil
	}
	if !IsNotFound(err) {
		return nil, err
	}
	r, err := open()
	if err != nil {
		return nil, err
	}
	up, err := c.UploadFile(ctx, r)
	if err != nil {
		return nil, err
	}
	if up.SHA256 != sum {
		return nil, fmt.Errorf("upload corrupted: the server stored sha256 %s, the content has %s", up.SHA256, sum)
	}
	return up, nil
}
