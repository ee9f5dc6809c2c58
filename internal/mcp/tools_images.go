package mcp

import (
	"context"
	"fmt"
	"strings"
	"sync"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

// resolve returns the image ref names (a UUID, "tag:NAME" or a bare tag or
// checkpoint name), explaining an unknown reference.
func (s *server) resolve(ctx context.Context, ref string) (*apitypes.Image, error) {
	if _, err := apitypes.ParseImageRef(ref); err != nil {
		return nil, fmt.Errorf("image is required: pass an image UUID, \"tag:NAME\" or a checkpoint name (list_images shows them)")
	}
	ref = strings.TrimSpace(ref)
	im, err := s.b.ResolveImage(ctx, ref)
	if client.IsNotFound(err) || client.IsBadRequest(err) {
		return nil, s.imageNotFound(ctx, ref)
	}
	if err != nil {
		return nil, explain(err)
	}
	return im, nil
}

// ListImagesIn is the input of list_images.
type ListImagesIn struct {
	Limit     int    `json:"limit,omitempty" jsonschema:"page size, 1-1000"`
	Offset    int    `json:"offset,omitempty" jsonschema:"images to skip (newest first)"`
	Tagged    bool   `json:"tagged,omitempty" jsonschema:"only tagged images (checkpoints and named bases)"`
	TagPrefix string `json:"tag_prefix,omitempty" jsonschema:"only tags starting with this"`
	Since     string `json:"since,omitempty" jsonschema:"created after: RFC 3339 time or a duration ago like 15m, 2h, 3d"`
	Until     string `json:"until,omitempty" jsonschema:"created before: RFC 3339 time or a duration ago"`
}

// ListImagesOut is the output of list_images.
type ListImagesOut struct {
	Images     []ImageInfo `json:"images"`
	Count      int         `json:"count"`
	NextOffset int         `json:"next_offset,omitempty" jsonschema:"pass as offset for the next page; absent on the last page"`
}

// GetImageIn is the input of get_image.
type GetImageIn struct {
	Image string `json:"image" jsonschema:"image UUID, tag:NAME or checkpoint name"`
}

// ImportImageIn is the input of import_image.
type ImportImageIn struct {
	RegistryURL string `json:"registry_url" jsonschema:"image to import: docker://docker.io/library/alpine:3.20, a short reference like alpine:3.20 or python:3.12-slim, or upload://<file uuid> for a root filesystem tarball sent with upload"`
	Tag         string `json:"tag,omitempty" jsonschema:"tag (checkpoint name) for the imported image"`
	Wait        bool   `json:"wait" jsonschema:"wait for the import to finish"`
	Timeout     int    `json:"timeout" jsonschema:"seconds the import may take"`
	Username    string `json:"username,omitempty" jsonschema:"registry user, for private images"`
	Password    string `json:"password,omitempty" jsonschema:"registry password or token"`
}

// SetTagIn is the input of set_tag.
type SetTagIn struct {
	Image string `json:"image" jsonschema:"image UUID, tag:NAME or checkpoint name"`
	Tag   string `json:"tag,omitempty" jsonschema:"new tag; empty removes the image's tag. Moving a tag takes it from the image that had it"`
}

// CheckpointIn is the input of checkpoint.
type CheckpointIn struct {
	Name  string `json:"name" jsonschema:"checkpoint name (a tag): letters, digits and . _ : / @ + -"`
	Image string `json:"image" jsonschema:"the image to name, usually the result_image of the run you want to keep"`
	Retag bool   `json:"retag,omitempty" jsonschema:"allow renaming an image that already carries another tag (an image has at most one)"`
}

// CheckpointOut is the output of checkpoint.
type CheckpointOut struct {
	Name        string `json:"name"`
	Image       string `json:"image"`
	MovedFrom   string `json:"moved_from,omitempty" jsonschema:"the image the name pointed to before, now without it"`
	ReplacedTag string `json:"replaced_tag,omitempty" jsonschema:"the image's previous tag, now gone (retag=true)"`
	Next        string `json:"next"`
}

// RollbackIn is the input of rollback.
type RollbackIn struct {
	Name string `json:"name" jsonschema:"checkpoint name (or tag:NAME, or an image UUID) to go back to"`
	From string `json:"from,omitempty" jsonschema:"optional: the image you are abandoning; the answer then counts the changes you discard"`
}

// RollbackOut is the output of rollback.
type RollbackOut struct {
	Name      string    `json:"name"`
	Image     ImageInfo `json:"image" jsonschema:"the checkpoint's image: continue from its uuid"`
	Discarded *DiffStat `json:"discarded,omitempty" jsonschema:"changes in from that the rollback leaves behind"`
	Next      string    `json:"next"`
}

// DiffStat counts changes.
type DiffStat struct {
	Added    int `json:"added"`
	Modified int `json:"modified"`
	Deleted  int `json:"deleted"`
}

// LineageIn is the input of lineage.
type LineageIn struct {
	Image string `json:"image" jsonschema:"image UUID, tag:NAME or checkpoint name"`
	Max   int    `json:"max" jsonschema:"at most this many ancestors and children are listed"`
}

// LineageNode is one image in a lineage answer.
type LineageNode struct {
	UUID        string `json:"uuid"`
	Tag         string `json:"tag,omitempty"`
	CreatedAt   string `json:"created_at"`
	OperationID string `json:"operation_id,omitempty"`
	Command     string `json:"command,omitempty" jsonschema:"the command whose run produced this image, or (imported)"`
	ExitCode    *int   `json:"exit_code,omitempty"`
	Deleted     bool   `json:"deleted,omitempty"`
}

// LineageOut is the output of lineage.
type LineageOut struct {
	Image     LineageNode   `json:"image"`
	Ancestors []LineageNode `json:"ancestors" jsonschema:"parent first, base image last"`
	Children  []LineageNode `json:"children" jsonschema:"images derived directly from this one, newest first"`
	Depth     int           `json:"depth" jsonschema:"number of ancestors"`
	Truncated bool          `json:"truncated,omitempty"`
}

// DiffIn is the input of diff.
type DiffIn struct {
	From       string `json:"from,omitempty" jsonschema:"the older image (e.g. the checkpoint); default: to's parent"`
	To         string `json:"to" jsonschema:"the newer image (e.g. a branch's result_image)"`
	Path       string `json:"path,omitempty" jsonschema:"only changes below this directory"`
	MaxChanges int    `json:"max_changes" jsonschema:"list at most this many changes"`
	Patches    bool   `json:"patches" jsonschema:"include unified diffs of changed small text files"`
	MaxPatch   int    `json:"max_patch_bytes" jsonschema:"total bytes of patches to include"`
}

// DiffChange is one changed path.
type DiffChange struct {
	Path    string `json:"path"`
	Kind    string `json:"kind" jsonschema:"added, modified or deleted"`
	Type    string `json:"type" jsonschema:"file, dir, symlink or other"`
	OldSize int64  `json:"old_size"`
	NewSize int64  `json:"new_size"`
	Patch   string `json:"patch,omitempty" jsonschema:"unified diff, for small text files"`
}

// DiffOut is the output of diff.
type DiffOut struct {
	From      string       `json:"from"`
	To        string       `json:"to"`
	Path      string       `json:"path"`
	Stat      DiffStat     `json:"stat"`
	Changes   []DiffChange `json:"changes"`
	Truncated bool         `json:"truncated,omitempty" jsonschema:"true when changes or patches were cut; narrow with path"`
}

func (s *server) addImageTools(ms *mcpsdk.Server) {
	addTool(ms, &mcpsdk.Tool{
		Name:        "list_images",
		Annotations: readOnly,
		Description: "List images (filesystem snapshots), newest first. FREE: starts no sandbox. " +
			"Use tagged=true to see checkpoints and named bases. Every image can be passed as image= to run, branch, diff, list_files, read_file.",
	}, map[string]any{"limit": 50}, s.listImages)

	addTool(ms, &mcpsdk.Tool{
		Name:        "get_image",
		Annotations: readOnly,
		Description: "Show one image: uuid, tag, parent, depth, the operation that produced it. FREE. " +
			"Accepts a UUID, tag:NAME or a checkpoint name, so it also resolves names to UUIDs.",
	}, nil, s.getImage)

	addTool(ms, &mcpsdk.Tool{
		Name:        "import_image",
		Annotations: openWorld,
		Description: "Import a base image from a container registry (or a rootfs tarball uploaded with upload, as upload://<file uuid>) and optionally tag it. " +
			"Only the filesystem is imported (no ENV/ENTRYPOINT). Check list_images tagged=true first: an existing base is instant to reuse. " +
			"Takes seconds to minutes; wait=false returns an operation_id for wait_operations.",
	}, map[string]any{"wait": true, "timeout": 300}, s.importImage)

	addTool(ms, &mcpsdk.Tool{
		Name:        "set_tag",
		Annotations: naming,
		Description: "Set or remove an image's tag. FREE. A tag names one image (setting it elsewhere moves it) and an image carries at most one tag. " +
			"For naming states while exploring, prefer checkpoint, which refuses to silently rename a tagged image.",
	}, nil, s.setTag)

	addTool(ms, &mcpsdk.Tool{
		Name:        "checkpoint",
		Annotations: naming,
		Description: "Name an image so you can come back to it: checkpoint name=\"env\" image=<result_image>. FREE (a tag; no copy). " +
			"Workflow: checkpoint → branch → compare (diff) → keep the winner (checkpoint it) → rollback when a path fails. " +
			"Afterwards pass image=\"env\" to run/branch/diff. Reusing a name moves it to the new image (the answer says from where).",
	}, nil, s.checkpoint)

	addTool(ms, &mcpsdk.Tool{
		Name:        "rollback",
		Annotations: readOnly,
		Description: "Go back to a checkpoint: returns the image the name points to, so you continue with run image=<that uuid>. FREE; nothing is deleted, " +
			"the abandoned images stay reachable by UUID (lineage lists them). Pass from=<current image> to see how many changes you leave behind.",
	}, nil, s.rollback)

	addTool(ms, &mcpsdk.Tool{
		Name:        "lineage",
		Annotations: readOnly,
		Description: "Show an image's ancestry (parent first, back to the base) and its children, with the command that produced each. FREE. " +
			"Use it to recover after a crash (what did I run?) and to find sibling branches.",
	}, map[string]any{"max": 25}, s.lineage)

	addTool(ms, &mcpsdk.Tool{
		Name:        "diff",
		Annotations: readOnly,
		Description: "Compare two images' filesystems: added, modified and deleted paths, with unified diffs of small text files. FREE: starts no sandbox. " +
			"Typical: diff from=\"env\" to=<branch result_image> to see exactly what a candidate fix changed before keeping it.",
	}, map[string]any{"max_changes": 200, "patches": true, "max_patch_bytes": 16000}, s.diff)
}

func (s *server) listImages(ctx context.Context, _ *mcpsdk.CallToolRequest, in ListImagesIn) (*mcpsdk.CallToolResult, ListImagesOut, error) {
	if in.Limit < 1 || in.Limit > 1000 {
		return nil, ListImagesOut{}, fmt.Errorf("limit must be between 1 and 1000")
	}
	ims, err := s.b.ListImages(ctx, client.ImageListOptions{
		Page:      client.Page{Limit: in.Limit, Offset: in.Offset, Since: in.Since, Until: in.Until},
		Tagged:    in.Tagged,
		TagPrefix: in.TagPrefix,
	})
	if err != nil {
		return nil, ListImagesOut{}, explain(err)
	}
	out := ListImagesOut{Images: make([]ImageInfo, 0, len(ims)), Count: len(ims)}
	for i := range ims {
		out.Images = append(out.Images, imageInfo(&ims[i]))
	}
	if len(ims) == in.Limit {
		out.NextOffset = in.Offset + len(ims)
	}
	return nil, out, nil
}

func (s *server) getImage(ctx context.Context, _ *mcpsdk.CallToolRequest, in GetImageIn) (*mcpsdk.CallToolResult, ImageInfo, error) {
	im, err := s.resolve(ctx, in.Image)
	if err != nil {
		return nil, ImageInfo{}, err
	}
	return nil, imageInfo(im), nil
}

// normalizeRegistryURL turns short references (alpine, python:3.12,
// ghcr.io/o/i:t) into docker://host/path:tag; URLs with a scheme pass.
func normalizeRegistryURL(ref string) string {
	ref = strings.TrimSpace(ref)
	if ref == "" || strings.Contains(ref, "://") {
		return ref
	}
	first, _, hasSlash := strings.Cut(ref, "/")
	switch {
	case !hasSlash:
		ref = "docker.io/library/" + ref
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		ref = "docker.io/" + ref
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	if !strings.Contains(last, ":") && !strings.Contains(last, "@") {
		ref += ":latest"
	}
	return "docker://" + ref
}

func (s *server) importImage(ctx context.Context, _ *mcpsdk.CallToolRequest, in ImportImageIn) (*mcpsdk.CallToolResult, OperationInfo, error) {
	url := normalizeRegistryURL(in.RegistryURL)
	if url == "" {
		return nil, OperationInfo{}, fmt.Errorf("registry_url is required, e.g. alpine:3.20 or docker://docker.io/library/python:3.12-slim")
	}
	if in.Timeout <= 0 {
		return nil, OperationInfo{}, fmt.Errorf("timeout must be a positive number of seconds")
	}
	req := apitypes.ImageImportRequest{Registry: apitypes.ImageImportRegistry{URL: url}, Timeout: ptr(float64(in.Timeout))}
	if in.Tag != "" {
		req.Tag = ptr(in.Tag)
	}
	if in.Username != "" || in.Password != "" {
		req.Registry.Credentials = &apitypes.Credentials{Username: in.Username, Password: in.Password}
	}
	id, err := s.b.ImportImage(ctx, req)
	if err != nil {
		return nil, OperationInfo{}, fmt.Errorf("import %s: %w", url, explain(err))
	}
	if !in.Wait {
		oi := OperationInfo{OperationID: id, Kind: apitypes.KindImageImport, Status: apitypes.StatusPending}
		return textResult("%s", renderOperation(oi, "wait_operations operation_ids=[\""+id+"\"] to get the image")), oi, nil
	}
	op, err := s.b.Wait(ctx, id)
	if err != nil {
		return nil, OperationInfo{}, fmt.Errorf("waiting for import %s: %w", id, explain(err))
	}
	oi := operationInfo(op, s.opts.MaxOutput)
	if op.Status != apitypes.StatusSuccess {
		return nil, oi, fmt.Errorf("import of %s %s: %s (operation %s); check the reference, or whether this server can reach registries (it can always import upload://<file uuid>)", url, strings.ToLower(op.Status), oi.Error, id)
	}
	next := "run image=\"" + oi.ResultImage + "\""
	if oi.ResultTag != "" {
		next = "run image=\"" + oi.ResultTag + "\""
	}
	return textResult("%s", renderOperation(oi, next)), oi, nil
}

func (s *server) setTag(ctx context.Context, _ *mcpsdk.CallToolRequest, in SetTagIn) (*mcpsdk.CallToolResult, ImageInfo, error) {
	im, err := s.resolve(ctx, in.Image)
	if err != nil {
		return nil, ImageInfo{}, err
	}
	if strings.TrimSpace(in.Tag) == "" {
		out, err := s.b.RemoveTag(ctx, im.UUID, "")
		if err != nil {
			return nil, ImageInfo{}, explain(err)
		}
		return nil, imageInfo(out), nil
	}
	out, err := s.b.SetTag(ctx, im.UUID, strings.TrimSpace(in.Tag))
	if err != nil {
		return nil, ImageInfo{}, explain(err)
	}
	return nil, imageInfo(out), nil
}

func (s *server) checkpoint(ctx context.Context, _ *mcpsdk.CallToolRequest, in CheckpointIn) (*mcpsdk.CallToolResult, CheckpointOut, error) {
	name := strings.TrimPrefix(strings.TrimSpace(in.Name), "tag:")
	if name == "" {
		return nil, CheckpointOut{}, fmt.Errorf("name is required, e.g. \"env\" or \"fix-retry\"")
	}
	im, err := s.resolve(ctx, in.Image)
	if err != nil {
		return nil, CheckpointOut{}, err
	}
	out, err := s.name(ctx, im, name, in.Retag)
	if err != nil {
		return nil, CheckpointOut{}, err
	}
	return nil, out, nil
}

// name gives im the checkpoint name. It refuses to rename an image that
// carries another name unless retag, since an image has one tag and the
// old name would silently stop resolving.
func (s *server) name(ctx context.Context, im *apitypes.Image, name string, retag bool) (CheckpointOut, error) {
	out := CheckpointOut{Name: name, Image: im.UUID}
	old := deref(im.Tag)
	if old == name {
		out.Next = fmt.Sprintf("already checkpointed; continue with run image=%q, or branch from it", name)
		return out, nil
	}
	if old != "" && !retag {
		return CheckpointOut{}, fmt.Errorf("image %s is already checkpointed as %q and an image carries one name: use %q to refer to it, or call checkpoint again with retag=true to rename it (%q then stops resolving)", im.UUID, old, old, old)
	}
	if prev, err := s.b.ResolveImage(ctx, name); err == nil && prev.UUID != im.UUID {
		out.MovedFrom = prev.UUID
	}
	if _, err := s.b.SetTag(ctx, im.UUID, name); err != nil {
		return CheckpointOut{}, fmt.Errorf("checkpoint %q: %w", name, explain(err))
	}
	out.ReplacedTag = old
	out.Next = fmt.Sprintf("continue with run image=%q or branch image=%q; come back later with rollback name=%q", name, name, name)
	if out.MovedFrom != "" {
		out.Next += fmt.Sprintf(" (the name used to point to %s, still reachable by UUID)", out.MovedFrom)
	}
	return out, nil
}

func (s *server) rollback(ctx context.Context, _ *mcpsdk.CallToolRequest, in RollbackIn) (*mcpsdk.CallToolResult, RollbackOut, error) {
	im, err := s.resolve(ctx, in.Name)
	if err != nil {
		return nil, RollbackOut{}, err
	}
	out := RollbackOut{Name: strings.TrimSpace(in.Name), Image: imageInfo(im)}
	if in.From != "" {
		from, err := s.resolve(ctx, in.From)
		if err != nil {
			return nil, RollbackOut{}, fmt.Errorf("from: %w", err)
		}
		if from.UUID != im.UUID {
			d, err := s.b.Diff(ctx, im.UUID, client.DiffOptions{To: from.UUID})
			if err != nil {
				return nil, RollbackOut{}, fmt.Errorf("comparing %s with the checkpoint: %w", from.UUID, explain(err))
			}
			st := diffStat(d.Changes)
			out.Discarded = &st
		} else {
			out.Discarded = &DiffStat{}
		}
	}
	out.Next = fmt.Sprintf("continue from image %s: run image=%q (or branch from it). Nothing was deleted; lineage image=%q lists the branches you left", im.UUID, im.UUID, im.UUID)
	return nil, out, nil
}

func diffStat(cs []apitypes.DiffChange) DiffStat {
	var st DiffStat
	for _, c := range cs {
		switch c.Kind {
		case apitypes.ChangeAdded:
			st.Added++
		case apitypes.ChangeModified:
			st.Modified++
		case apitypes.ChangeDeleted:
			st.Deleted++
		}
	}
	return st
}

func (s *server) lineage(ctx context.Context, _ *mcpsdk.CallToolRequest, in LineageIn) (*mcpsdk.CallToolResult, LineageOut, error) {
	if in.Max < 1 {
		return nil, LineageOut{}, fmt.Errorf("max must be at least 1")
	}
	im, err := s.resolve(ctx, in.Image)
	if err != nil {
		return nil, LineageOut{}, err
	}
	l, err := s.b.Lineage(ctx, im.UUID)
	if err != nil {
		return nil, LineageOut{}, explain(err)
	}
	out := LineageOut{Depth: len(l.Ancestors), Ancestors: []LineageNode{}, Children: []LineageNode{}}
	anc, kids := l.Ancestors, l.Children
	if len(anc) > in.Max {
		anc, out.Truncated = anc[:in.Max], true
	}
	if len(kids) > in.Max {
		kids, out.Truncated = kids[:in.Max], true
	}
	nodes := make([]*LineageNode, 0, 1+len(anc)+len(kids))
	add := func(li apitypes.LineageImage) *LineageNode {
		n := &LineageNode{UUID: li.UUID, Tag: deref(li.Tag), CreatedAt: li.CreatedAt, Deleted: li.Deleted}
		if li.Operation != nil {
			n.OperationID = li.Operation.UUID
		} else {
			n.OperationID = deref(li.OperationUUID)
		}
		nodes = append(nodes, n)
		return n
	}
	self := add(l.Image)
	for _, a := range anc {
		add(a)
	}
	for _, c := range kids {
		add(c)
	}
	s.fillCommands(ctx, nodes)
	out.Image = *self
	for _, n := range nodes[1 : 1+len(anc)] {
		out.Ancestors = append(out.Ancestors, *n)
	}
	for _, n := range nodes[1+len(anc):] {
		out.Children = append(out.Children, *n)
	}
	return nil, out, nil
}

// fillCommands looks up the command and exit code of each node's operation,
// a few at a time. Failures leave the fields empty.
func (s *server) fillCommands(ctx context.Context, nodes []*LineageNode) {
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n.OperationID == "" {
			n.Command = "(imported)"
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			op, err := s.b.Operation(ctx, n.OperationID)
			if err != nil {
				return
			}
			oi := operationInfo(op, 0)
			n.Command, n.ExitCode = oi.Command, oi.ExitCode
			if oi.Kind == apitypes.KindImageImport {
				n.Command = "(imported)"
			}
		}()
	}
	wg.Wait()
}

func (s *server) diff(ctx context.Context, _ *mcpsdk.CallToolRequest, in DiffIn) (*mcpsdk.CallToolResult, DiffOut, error) {
	if in.MaxChanges < 1 {
		return nil, DiffOut{}, fmt.Errorf("max_changes must be at least 1")
	}
	to, err := s.resolve(ctx, in.To)
	if err != nil {
		return nil, DiffOut{}, fmt.Errorf("to: %w", err)
	}
	var d *apitypes.ImageDiff
	if strings.TrimSpace(in.From) == "" {
		if deref(to.ParentUUID) == "" {
			return nil, DiffOut{}, fmt.Errorf("image %s has no parent to compare with: pass from=<image or checkpoint name>", to.UUID)
		}
		d, err = s.b.Diff(ctx, to.UUID, client.DiffOptions{Path: in.Path})
	} else {
		from, ferr := s.resolve(ctx, in.From)
		if ferr != nil {
			return nil, DiffOut{}, fmt.Errorf("from: %w", ferr)
		}
		d, err = s.b.Diff(ctx, from.UUID, client.DiffOptions{To: to.UUID, Path: in.Path})
	}
	if err != nil {
		return nil, DiffOut{}, fmt.Errorf("diff: %w", explain(err))
	}
	out := DiffOut{From: d.From, To: d.To, Path: d.Path, Stat: diffStat(d.Changes), Changes: []DiffChange{}}
	budget := in.MaxPatch
	for i, c := range d.Changes {
		if i == in.MaxChanges {
			out.Truncated = true
			break
		}
		dc := DiffChange{Path: c.Path, Kind: c.Kind, Type: c.Type, OldSize: c.OldSize, NewSize: c.NewSize}
		if in.Patches && c.Diff != "" {
			if len(c.Diff) <= budget {
				dc.Patch, budget = c.Diff, budget-len(c.Diff)
			} else {
				out.Truncated = true
			}
		}
		out.Changes = append(out.Changes, dc)
	}
	return textResult("%s", renderDiff(out)), out, nil
}

// renderDiff writes a diff as a change list followed by the patches.
func renderDiff(d DiffOut) string {
	var b strings.Builder
	fmt.Fprintf(&b, "diff %s → %s (path %s): %d added, %d modified, %d deleted\n", d.From, d.To, d.Path, d.Stat.Added, d.Stat.Modified, d.Stat.Deleted)
	mark := map[string]string{apitypes.ChangeAdded: "A", apitypes.ChangeModified: "M", apitypes.ChangeDeleted: "D"}
	for _, c := range d.Changes {
		fmt.Fprintf(&b, "%s %s (%s, %d → %d bytes)\n", mark[c.Kind], c.Path, c.Type, c.OldSize, c.NewSize)
	}
	for _, c := range d.Changes {
		if c.Patch != "" {
			b.WriteString(c.Patch)
			if !strings.HasSuffix(c.Patch, "\n") {
				b.WriteString("\n")
			}
		}
	}
	if d.Truncated {
		b.WriteString("(truncated: narrow with path=, or raise max_changes / max_patch_bytes)\n")
	}
	return b.String()
}
