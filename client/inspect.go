package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/arborsh/arbor/client/apitypes"
)

func inspectPath(id, op string) string { return "/inspect/" + url.PathEscape(id) + "/" + op }

// ListDir lists the directory at path in image id (a file lists itself).
func (c *Client) ListDir(ctx context.Context, id, path string) (*apitypes.DirectoryList, error) {
	var out apitypes.DirectoryList
	return &out, c.do(ctx, request{method: http.MethodGet, path: inspectPath(id, "list"), query: url.Values{"path": {path}}}, &out)
}

// ListDirText is ListDir rendered by the server as ls -l style text.
func (c *Client) ListDirText(ctx context.Context, id, path string) (string, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: inspectPath(id, "list"), query: url.Values{"path": {path}, "text": {"1"}}})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Download streams the regular file at path in image id. size is its
// length in bytes. The caller closes the reader; a stream cut short fails
// with io.ErrUnexpectedEOF rather than ending early.
func (c *Client) Download(ctx context.Context, id, path string) (rc io.ReadCloser, size int64, err error) {
	// Identity encoding keeps Content-Length, so callers can show progress.
	resp, err := c.send(ctx, request{method: http.MethodGet, path: inspectPath(id, "download"),
		query: url.Values{"path": {path}}, header: http.Header{"Accept-Encoding": {"identity"}}})
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// ReadFile returns the content of the regular file at path in image id.
func (c *Client) ReadFile(ctx context.Context, id, path string) ([]byte, error) {
	rc, _, err := c.Download(ctx, id, path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// FileExistsIn reports whether image id has a regular file at path (after
// symlinks). It asks with HEAD of the download, which answers 200 for any
// path that exists; arbor says when it is not a regular file
// (apitypes.PathTypeHeader).
func (c *Client) FileExistsIn(ctx context.Context, id, path string) (bool, error) {
	resp, err := c.send(ctx, request{method: http.MethodHead, path: inspectPath(id, "download"), query: url.Values{"path": {path}}})
	switch {
	case IsNotFound(err):
		return false, nil
	case err != nil:
		return false, err
	}
	resp.Body.Close()
	return resp.Header.Get(apitypes.PathTypeHeader) == "", nil
}

// Archive streams a tar archive of the subtree at path in image id, member
// names relative to it. The caller closes the reader.
func (c *Client) Archive(ctx context.Context, id, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: inspectPath(id, "archive"), query: url.Values{"path": {path}}})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// PathExists reports whether path exists in image id (HEAD of its archive).
func (c *Client) PathExists(ctx context.Context, id, path string) (bool, error) {
	return c.exists(ctx, request{method: http.MethodHead, path: inspectPath(id, "archive"), query: url.Values{"path": {path}}})
}

// GrepOptions is a search of an image's files. Patterns are Go regular
// expressions (a line matches if any does); Paths default to "/"; Globs
// match base names. Case is "sensitive" (default), "insensitive" or "smart".
type GrepOptions struct {
	Patterns, Paths, Globs []string
	MaxCount, MaxTotal     int // per file and overall; 0: no limit / the server's
	Before, After          int // context lines
	Case                   string
}

// Grep searches image id's files without starting a sandbox.
func (c *Client) Grep(ctx context.Context, id string, o GrepOptions) (*apitypes.GrepResult, error) {
	q := url.Values{"pattern": o.Patterns}
	if len(o.Paths) > 0 {
		q["path"] = o.Paths
	}
	if len(o.Globs) > 0 {
		q["glob"] = o.Globs
	}
	for k, v := range map[string]int{"max_count": o.MaxCount, "max_total": o.MaxTotal, "before": o.Before, "after": o.After} {
		if v > 0 {
			q.Set(k, strconv.Itoa(v))
		}
	}
	if o.Case != "" {
		q.Set("case", o.Case)
	}
	var out apitypes.GrepResult
	return &out, c.do(ctx, request{method: http.MethodGet, path: inspectPath(id, "grep"), query: q}, &out)
}
