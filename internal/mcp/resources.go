package mcp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/arborsh/arbor/client"
)

// Resource URIs. {+image} is a UUID, tag:NAME or a checkpoint name, as is
// or percent-encoded (tags hold ':' and '/'); {+path} is the absolute path
// without its leading slash. The first "/read/" or "/ls/" ends the image.
const (
	scheme          = "arbor://"
	readTemplate    = "arbor://image/{+image}/read/{+path}"
	lsTemplate      = "arbor://image/{+image}/ls/{+path}"
	lineageTemplate = "arbor://image/{+image}/lineage"
	opTemplate      = "arbor://operations/{id}"
	guideTemplate   = "arbor://guide/{section}"
	maxResource     = 4 << 20
)

func (s *server) addResources(ms *mcpsdk.Server) {
	ms.AddResourceTemplate(&mcpsdk.ResourceTemplate{
		Name:        "image-file",
		Title:       "File in an image",
		URITemplate: readTemplate,
		Description: "Content of a file in an image, read without a sandbox: text, or a blob for binary files (up to 4 MiB). Example: arbor://image/tag:env/read/etc/os-release",
	}, s.readResource)
	ms.AddResourceTemplate(&mcpsdk.ResourceTemplate{
		Name:        "image-dir",
		Title:       "Directory listing in an image",
		URITemplate: lsTemplate,
		MIMEType:    "text/plain",
		Description: "ls -l style listing of a directory in an image, without a sandbox. Example: arbor://image/tag:env/ls/root (arbor://image/X/ls/ lists /)",
	}, s.readResource)
	ms.AddResourceTemplate(&mcpsdk.ResourceTemplate{
		Name:        "image-lineage",
		Title:       "Image lineage",
		URITemplate: lineageTemplate,
		MIMEType:    "application/json",
		Description: "An image's ancestors (parent first) and children, as JSON.",
	}, s.readResource)
	ms.AddResourceTemplate(&mcpsdk.ResourceTemplate{
		Name:        "operation",
		Title:       "Operation",
		URITemplate: opTemplate,
		MIMEType:    "application/json",
		Description: "A run or import: status, exit code, stdout/stderr, result image, as JSON.",
	}, s.readResource)
	ms.AddResourceTemplate(&mcpsdk.ResourceTemplate{
		Name:        "guide",
		Title:       "arbor guide",
		URITemplate: guideTemplate,
		MIMEType:    "text/markdown",
		Description: "Guide sections: " + strings.Join(guideNames(), ", "),
	}, s.readResource)
}

// readResource serves every arbor:// resource.
func (s *server) readResource(ctx context.Context, req *mcpsdk.ReadResourceRequest) (*mcpsdk.ReadResourceResult, error) {
	uri := req.Params.URI
	rest, ok := strings.CutPrefix(uri, scheme)
	if !ok {
		return nil, mcpsdk.ResourceNotFoundError(uri)
	}
	var (
		c   *mcpsdk.ResourceContents
		err error
	)
	switch {
	case strings.HasPrefix(rest, "image/"):
		c, err = s.imageResource(ctx, uri, strings.TrimPrefix(rest, "image/"))
	case strings.HasPrefix(rest, "operations/"):
		c, err = s.operationResource(ctx, uri, strings.TrimPrefix(rest, "operations/"))
	case strings.HasPrefix(rest, "guide/"):
		text, ok := guideText(strings.TrimPrefix(rest, "guide/"))
		if !ok {
			return nil, fmt.Errorf("unknown guide section in %s: choose one of %s", uri, strings.Join(guideNames(), ", "))
		}
		c = &mcpsdk.ResourceContents{URI: uri, MIMEType: "text/markdown", Text: text}
	default:
		return nil, mcpsdk.ResourceNotFoundError(uri)
	}
	if err != nil {
		return nil, err
	}
	return &mcpsdk.ReadResourceResult{Contents: []*mcpsdk.ResourceContents{c}}, nil
}

// imageResource serves image/{image}/{read|ls}/{path} and image/{image}/lineage.
func (s *server) imageResource(ctx context.Context, uri, rest string) (*mcpsdk.ResourceContents, error) {
	var ref, op, p string
	for _, sep := range []string{"/read/", "/ls/"} {
		if i := strings.Index(rest, sep); i >= 0 && (op == "" || i < len(ref)) {
			ref, op, p = rest[:i], strings.Trim(sep, "/"), rest[i+len(sep):]
		}
	}
	if op == "" {
		r, ok := strings.CutSuffix(rest, "/lineage")
		if !ok {
			return nil, mcpsdk.ResourceNotFoundError(uri)
		}
		ref, op = r, "lineage"
	}
	ref, err := url.PathUnescape(ref)
	if err != nil {
		return nil, fmt.Errorf("bad image in %s: %v", uri, err)
	}
	if p, err = url.PathUnescape(p); err != nil {
		return nil, fmt.Errorf("bad path in %s: %v", uri, err)
	}
	im, err := s.resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	p = absPath(strings.TrimPrefix(p, "."))
	switch op {
	case "ls":
		text, err := s.b.ListDirText(ctx, im.UUID, p)
		if err != nil {
			return nil, pathError(err, im.UUID, p, "cannot list")
		}
		return &mcpsdk.ResourceContents{URI: uri, MIMEType: "text/plain", Text: text}, nil
	case "lineage":
		l, err := s.b.Lineage(ctx, im.UUID)
		if err != nil {
			return nil, explain(err)
		}
		b, err := json.MarshalIndent(l, "", "  ")
		if err != nil {
			return nil, err
		}
		return &mcpsdk.ResourceContents{URI: uri, MIMEType: "application/json", Text: string(b)}, nil
	}
	rc, size, err := s.b.Download(ctx, im.UUID, p)
	if err != nil {
		return nil, pathError(err, im.UUID, p, "cannot read")
	}
	defer rc.Close()
	if size > maxResource {
		return nil, fmt.Errorf("%s is %d bytes, more than a resource holds (%d): use the read_file tool with offset/max_bytes", p, size, maxResource)
	}
	b, err := io.ReadAll(io.LimitReader(rc, maxResource+1))
	if err != nil {
		return nil, explain(err)
	}
	if len(b) > maxResource {
		return nil, fmt.Errorf("%s is larger than a resource holds (%d bytes): use the read_file tool", p, maxResource)
	}
	if isText(b) {
		return &mcpsdk.ResourceContents{URI: uri, MIMEType: "text/plain", Text: string(b)}, nil
	}
	return &mcpsdk.ResourceContents{URI: uri, MIMEType: "application/octet-stream", Blob: b}, nil
}

// operationResource serves operations/{id} as JSON.
func (s *server) operationResource(ctx context.Context, uri, id string) (*mcpsdk.ResourceContents, error) {
	id, err := url.PathUnescape(id)
	if err != nil {
		return nil, fmt.Errorf("bad operation id in %s: %v", uri, err)
	}
	op, err := s.b.Operation(ctx, id)
	if client.IsNotFound(err) || client.IsBadRequest(err) {
		return nil, operationNotFound(id)
	}
	if err != nil {
		return nil, explain(err)
	}
	b, err := json.MarshalIndent(operationInfo(op, captureBytes), "", "  ")
	if err != nil {
		return nil, err
	}
	return &mcpsdk.ResourceContents{URI: uri, MIMEType: "application/json", Text: string(b)}, nil
}
