package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/arborsh/arbor/client/apitypes"
)

// Status reports the daemon's runtimes and the state of its warm sandbox
// pool: on or off and why, its size, hits and misses (arbor extension).
func (c *Client) Status(ctx context.Context) (*apitypes.StatusResponse, error) {
	var out apitypes.StatusResponse
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/status"}, &out)
}

// WhoAmI describes the token in use, its permissions, the server's limits
// and the account's usage.
func (c *Client) WhoAmI(ctx context.Context) (*apitypes.WhoAmIResponse, error) {
	var out apitypes.WhoAmIResponse
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/whoami"}, &out)
}

// Page selects one page of a list: Limit 1..1000 (0: the server's default,
// 100) starting at Offset. Since and Until bound creation times; each is an
// RFC 3339 time, a duration before now ("15m", "2h", "3d", "1w") or a number
// of seconds before now.
type Page struct {
	Limit, Offset int
	Since, Until  string
}

func (p Page) query() url.Values {
	q := url.Values{}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Offset > 0 {
		q.Set("offset", strconv.Itoa(p.Offset))
	}
	if p.Since != "" {
		q.Set("since", p.Since)
	}
	if p.Until != "" {
		q.Set("until", p.Until)
	}
	return q
}

// ImageListOptions filters ListImages.
type ImageListOptions struct {
	Page
	Tagged    bool   // only tagged images
	TagPrefix string // tags starting with this; an exact match comes first
	UUID      string // only this image
	// UUIDPrefix keeps images whose UUID starts with it (an arbor
	// extension; at least apitypes.MinUUIDPrefix characters).
	UUIDPrefix string
}

// ListImages lists images, newest first.
func (c *Client) ListImages(ctx context.Context, o ImageListOptions) ([]apitypes.Image, error) {
	q := o.query()
	if o.Tagged {
		q.Set("tagged", "1")
	}
	if o.TagPrefix != "" {
		q.Set("tag", o.TagPrefix)
	}
	if o.UUID != "" {
		q.Set("uuid", o.UUID)
	}
	if o.UUIDPrefix != "" {
		q.Set("uuid_prefix", o.UUIDPrefix)
	}
	var out apitypes.ImageListResponse
	if err := c.do(ctx, request{method: http.MethodGet, path: "/images", query: q}, &out); err != nil {
		return nil, err
	}
	return out.Images, nil
}

// ImportImage starts an import and returns its operation id. URLs are
// docker://host/path:tag, or upload://<file uuid or sha256> for a rootfs
// tarball uploaded with UploadFile.
func (c *Client) ImportImage(ctx context.Context, req apitypes.ImageImportRequest) (string, error) {
	var out struct {
		UUID string `json:"uuid"`
	}
	if err := c.do(ctx, request{method: http.MethodPost, path: "/images/import", json: req}, &out); err != nil {
		return "", err
	}
	return out.UUID, nil
}

// SetTag moves tag to image id and returns the image.
func (c *Client) SetTag(ctx context.Context, id, tag string) (*apitypes.Image, error) {
	var out apitypes.Image
	return &out, c.do(ctx, request{method: http.MethodPatch, path: "/images/" + url.PathEscape(id) + "/tag",
		json: apitypes.TagRequest{Tag: tag}}, &out)
}

// RemoveTag clears image id's tag; if tag is not empty the image must carry it.
func (c *Client) RemoveTag(ctx context.Context, id, tag string) (*apitypes.Image, error) {
	q := url.Values{}
	if tag != "" {
		q.Set("tag", tag)
	}
	var out apitypes.Image
	return &out, c.do(ctx, request{method: http.MethodDelete, path: "/images/" + url.PathEscape(id) + "/tag", query: q}, &out)
}

// DeleteImage deletes image id (arbor extension). Layers other images need stay.
func (c *Client) DeleteImage(ctx context.Context, id string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: "/images/" + url.PathEscape(id)}, nil)
}

// Lineage returns image id's ancestors and children, each with the
// operation that produced it (arbor extension).
func (c *Client) Lineage(ctx context.Context, id string) (*apitypes.Lineage, error) {
	var out apitypes.Lineage
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/images/" + url.PathEscape(id) + "/lineage"}, &out)
}

// DiffOptions selects the other side of Diff: To (the changes from the
// image to To) or From (the changes from From to the image), each a UUID or
// tag; neither compares with the image's parent. Path limits it to a subtree.
type DiffOptions struct {
	To, From, Path string
}

// Diff lists the changes between two images (arbor extension).
func (c *Client) Diff(ctx context.Context, id string, o DiffOptions) (*apitypes.ImageDiff, error) {
	q := url.Values{}
	for k, v := range map[string]string{"to": o.To, "from": o.From, "path": o.Path} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var out apitypes.ImageDiff
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/images/" + url.PathEscape(id) + "/diff", query: q}, &out)
}

// FindImageByTag returns the uuid of the image tagged tag (a "tag:" prefix
// is stripped). The server answers 302 with the uuid in Location.
func (c *Client) FindImageByTag(ctx context.Context, tag string) (string, error) {
	q := url.Values{"tag": {strings.TrimPrefix(tag, "tag:")}}
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/inspect/", query: q, redirect: true})
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	segs := strings.Split(resp.Header.Get("Location"), "/")
	for i := len(segs) - 1; i >= 0; i-- {
		if segs[i] != "" {
			return segs[i], nil
		}
	}
	return "", &Error{Status: resp.StatusCode, Message: "find-by-tag answer has no Location", RequestID: resp.Header.Get("X-Request-ID")}
}

// Image returns image id.
func (c *Client) Image(ctx context.Context, id string) (*apitypes.Image, error) {
	var out apitypes.Image
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/inspect/" + url.PathEscape(id) + "/"}, &out)
}

// ResolveImage returns the image a reference names: a UUID, "tag:NAME" or
// a bare tag (apitypes.ParseImageRef).
func (c *Client) ResolveImage(ctx context.Context, ref string) (*apitypes.Image, error) {
	r, err := apitypes.ParseImageRef(ref)
	if err != nil {
		return nil, err
	}
	id := r.UUID
	if id == "" {
		if id, err = c.FindImageByTag(ctx, r.Tag); err != nil {
			return nil, err
		}
	}
	return c.Image(ctx, id)
}
