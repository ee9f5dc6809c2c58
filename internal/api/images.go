package api

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layerfs"
)

// listImages answers GET /v1/images: {"images": [...]}, newest first, with
// an exact tag match first when filtering by tag prefix (the contree CLI
// resolves a tag by taking images[0]).
func (s *server) listImages(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, offset, err := page(q)
	if err != nil {
		return err
	}
	since, until, err := timeRange(q, time.Now())
	if err != nil {
		return err
	}
	tagged, err := flag(q, "tagged")
	if err != nil {
		return err
	}
	f := engine.ImageFilter{Account: accountOf(r), TagPrefix: tagQuery(r), Tagged: tagged, Since: since, Until: until,
		Limit: limit, Offset: offset}
	if v := q.Get("uuid"); v != "" {
		if f.UUID, err = uuidParam("image", v); err != nil {
			return err
		}
	}
	if v := q.Get("uuid_prefix"); v != "" {
		if !apitypes.IsUUIDPrefix(v) {
			return errdefs.InvalidArgument("uuid_prefix %q is not the start of a UUID: pass at least %d characters of one, e.g. 123e4567", v, apitypes.MinUUIDPrefix)
		}
		f.UUIDPrefix = strings.ToLower(v)
	}
	ims, err := s.e.ListImages(r.Context(), f)
	if err != nil {
		return err
	}
	out := apitypes.ImageListResponse{Images: make([]apitypes.Image, 0, len(ims))}
	for _, im := range ims {
		out.Images = append(out.Images, imageView(im))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// importBody is ImageImportRequest as sent by every client generation:
// "registry" is an object, or (legacy) a plain reference string with
// credentials at the top level.
type importBody struct {
	Registry    json.RawMessage       `json:"registry"`
	Credentials *apitypes.Credentials `json:"credentials"`
	Tag         *string               `json:"tag"`
	Timeout     *float64              `json:"timeout"`
}

// importImage answers POST /v1/images/import: 201 {"uuid": op} + Location.
func (s *server) importImage(w http.ResponseWriter, r *http.Request) error {
	var b importBody
	if err := s.decode(w, r, &b); err != nil {
		return err
	}
	req := apitypes.ImageImportRequest{Tag: b.Tag, Timeout: b.Timeout}
	raw := strings.TrimSpace(string(b.Registry))
	switch {
	case raw == "" || raw == "null":
		return errdefs.InvalidArgument(`registry is required: {"registry": {"url": "docker://docker.io/library/busybox:latest"}}`)
	case strings.HasPrefix(raw, `"`):
		var ref string
		if err := json.Unmarshal(b.Registry, &ref); err != nil {
			return jsonError(err)
		}
		if ref != "" && !strings.Contains(ref, "://") {
			ref = "docker://" + ref
		}
		req.Registry = apitypes.ImageImportRegistry{URL: ref, Credentials: b.Credentials}
	default:
		if err := json.Unmarshal(b.Registry, &req.Registry); err != nil {
			return prefixField("registry", jsonError(err))
		}
		if req.Registry.Credentials == nil {
			req.Registry.Credentials = b.Credentials
		}
	}
	if req.Registry.Credentials != nil && *req.Registry.Credentials == (apitypes.Credentials{}) {
		req.Registry.Credentials = nil // empty strings mean anonymous (contree-mcp)
	}
	op, err := s.e.Import(r.Context(), accountOf(r), importRequest(req))
	if err != nil {
		return err
	}
	w.Header().Set("Location", apiPath(r, "/v1/operations/"+op))
	writeJSON(w, http.StatusCreated, struct {
		UUID string `json:"uuid"`
	}{op})
	return nil
}

// prefixField qualifies the field named by a decoding error of a nested
// object, so {"registry": {"url": 1}} reports "registry.url".
func prefixField(parent string, err error) error {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, `field "`); ok {
		return errdefs.InvalidArgument(`field "%s.%s`, parent, rest)
	}
	if strings.HasPrefix(msg, "request body must be a JSON object") {
		return errdefs.InvalidArgument("field %q must be an object or a reference string", parent)
	}
	return err
}

// setTag answers PATCH /v1/images/{uuid}/tag with the tagged Image.
func (s *server) setTag(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("image", r.PathValue("uuid"))
	if err != nil {
		return err
	}
	var b apitypes.TagRequest
	if err := s.decode(w, r, &b); err != nil {
		return err
	}
	if strings.TrimSpace(b.Tag) == "" {
		return errdefs.InvalidArgument(`tag is required: {"tag": "name"}`)
	}
	im, err := s.e.SetTag(r.Context(), accountOf(r), id, b.Tag)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, imageView(im))
	return nil
}

// removeTag answers DELETE /v1/images/{uuid}/tag[?tag=] with the untagged
// Image (200 with a body: one SDK generation parses it).
func (s *server) removeTag(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("image", r.PathValue("uuid"))
	if err != nil {
		return err
	}
	im, err := s.e.RemoveTag(r.Context(), accountOf(r), id, tagQuery(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, imageView(im))
	return nil
}

// deleteImage answers DELETE /v1/images/{uuid} (arbor extension) with 204.
// Layers that other images still need are kept.
func (s *server) deleteImage(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("image", r.PathValue("uuid"))
	if err != nil {
		return err
	}
	if err := s.e.DeleteImage(r.Context(), accountOf(r), id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// lineage answers GET /v1/images/{uuid}/lineage (arbor extension).
func (s *server) lineage(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("image", r.PathValue("uuid"))
	if err != nil {
		return err
	}
	account := accountOf(r)
	l, err := s.e.Lineage(r.Context(), account, id)
	if err != nil {
		return err
	}
	view := func(im engine.Image) apitypes.LineageImage {
		v := apitypes.LineageImage{Image: imageView(im), Deleted: im.Deleted}
		if im.Operation != "" {
			if o, err := s.e.Operation(r.Context(), account, im.Operation); err == nil {
				sum := summaryView(o)
				v.Operation = &sum
			}
		}
		return v
	}
	out := apitypes.Lineage{Image: view(l.Image), Ancestors: []apitypes.LineageImage{}, Children: []apitypes.LineageImage{}}
	for _, im := range l.Ancestors {
		out.Ancestors = append(out.Ancestors, view(im))
	}
	for _, im := range l.Children {
		out.Children = append(out.Children, view(im))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// diff answers GET /v1/images/{uuid}/diff (arbor extension). With ?to=X it
// lists the changes from {uuid} to X; with ?from=X the changes from X to
// {uuid}; with neither, the changes {uuid} made to its parent. X may be a
// UUID or a tag. ?path= limits the comparison to a subtree.
func (s *server) diff(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("image", r.PathValue("uuid"))
	if err != nil {
		return err
	}
	ctx, account, q := r.Context(), accountOf(r), r.URL.Query()
	other := func(name string) (string, error) {
		im, err := s.e.ResolveImage(ctx, account, q.Get(name))
		return im.UUID, err
	}
	var from, to string
	switch {
	case q.Get("to") != "" && q.Get("from") != "":
		return errdefs.InvalidArgument("pass either to= or from=, not both: the path's image is the other side")
	case q.Get("to") != "":
		from = id
		if to, err = other("to"); err != nil {
			return err
		}
	case q.Get("from") != "":
		to = id
		if from, err = other("from"); err != nil {
			return err
		}
	default:
		im, err := s.e.Image(ctx, account, id)
		if err != nil {
			return err
		}
		if im.Parent == "" {
			return errdefs.InvalidArgument("image %s has no parent to compare with: pass to=<image> or from=<image>", id)
		}
		from, to = im.Parent, id
	}
	p := path.Clean("/" + q.Get("path"))
	changes, err := s.e.Diff(ctx, account, from, to, layerfs.DiffOptions{Path: p})
	if err != nil {
		return err
	}
	out := apitypes.ImageDiff{From: from, To: to, Path: p, Changes: make([]apitypes.DiffChange, 0, len(changes))}
	for _, c := range changes {
		out.Changes = append(out.Changes, apitypes.DiffChange{Path: c.Path, Kind: c.Kind, Type: c.Type,
			OldSize: c.OldSize, NewSize: c.NewSize, Diff: c.Diff})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// tagQuery reads the tag query parameter leniently. ConTree's CLI puts a
// tag raw into the URL, so a '+' (valid in a tag) must stay a '+', not
// become the space form decoding makes of it; tags hold no spaces, and
// an encoded one (%2B) decodes as usual.
func tagQuery(r *http.Request) string {
	for _, kv := range strings.Split(r.URL.RawQuery, "&") {
		if k, v, _ := strings.Cut(kv, "="); k == "tag" {
			if s, err := url.PathUnescape(v); err == nil {
				return s
			}
			return v
		}
	}
	return ""
}
