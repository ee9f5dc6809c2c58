package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layerfs"
	"github.com/arborsh/arbor/internal/store"
)

// imageNode is the in-memory view of an image row used to walk chains.
// parent is the row whose chain lies below layer: the image's parent, or
// for an imported image the hidden row of the layers below its top one.
type imageNode struct {
	uuid, account, parent, layer, flat string
	deleted                            bool
	hidden                             bool   // one layer of an imported chain (store.Image.Hidden)
	chain                              string // a hidden row's chain ID
}

func newImageNode(im store.Image) *imageNode {
	return &imageNode{uuid: im.UUID, account: im.Account, parent: im.MountParent(), layer: im.Layer, flat: im.Flat,
		deleted: im.Deleted, hidden: im.Hidden, chain: im.Chain}
}

func (e *Engine) loadImages(ctx context.Context) error {
	all, err := e.st.AllImages(ctx)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, im := range all {
		e.images[im.UUID] = newImageNode(im)
	}
	return nil
}

// chainLocked returns the layer ids of image u, top first, stopping at the
// nearest squashed ancestor. e.mu must be held.
func (e *Engine) chainLocked(u string) ([]string, error) {
	var out []string
	for u != "" {
		n, ok := e.images[u]
		if !ok {
			return nil, fmt.Errorf("image %s: chain broken (missing ancestor)", u)
		}
		if n.flat != "" {
			return append(out, n.flat), nil
		}
		out = append(out, n.layer)
		u = n.parent
	}
	return out, nil
}

// pinChain returns image u's layer paths (top first) and pins them against
// garbage collection until release is called.
func (e *Engine) pinChain(u string) (paths []string, release func(), err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids, err := e.chainLocked(u)
	if err != nil {
		return nil, nil, err
	}
	for _, id := range ids {
		e.pinned[id]++
		paths = append(paths, e.layerPath(id))
	}
	var once bool
	return paths, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if once {
			return
		}
		once = true
		for _, id := range ids {
			if e.pinned[id]--; e.pinned[id] <= 0 {
				delete(e.pinned, id)
			}
		}
	}, nil
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// IsUUID reports whether s is a canonical UUID.
func IsUUID(s string) bool { return uuidRE.MatchString(s) }

// ResolveImage resolves a reference: an image UUID, "tag:NAME" or a bare tag.
func (e *Engine) ResolveImage(ctx context.Context, account, ref string) (store.Image, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return store.Image{}, errdefs.InvalidArgument("image reference is empty: pass an image UUID or tag:NAME")
	}
	if IsUUID(ref) {
		return e.st.Image(ctx, account, strings.ToLower(ref))
	}
	tag := strings.TrimPrefix(ref, "tag:")
	im, err := e.st.ImageByTag(ctx, account, tag)
	if errdefs.IsNotFound(err) {
		return im, errdefs.NotFound("image %q not found: no image has tag %q (list tags with GET /v1/images?tagged=1 or `arbor images`)", ref, tag)
	}
	return im, err
}

// Image returns account's image by uuid.
func (e *Engine) Image(ctx context.Context, account, id string) (store.Image, error) {
	if !IsUUID(id) {
		return store.Image{}, errdefs.InvalidArgument("%q is not an image UUID", id)
	}
	return e.st.Image(ctx, account, strings.ToLower(id))
}

// ListImages lists account's images.
func (e *Engine) ListImages(ctx context.Context, f store.ImageFilter) ([]store.Image, error) {
	return e.st.ListImages(ctx, f)
}

var tagRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}$`)

// ValidateTag checks a tag name.
func ValidateTag(tag string) error {
	if !tagRE.MatchString(tag) || strings.HasPrefix(tag, "tag:") {
		return errdefs.InvalidArgument("invalid tag %q: use 1-255 characters from letters, digits and . _ : / @ + -, starting with a letter or digit", tag)
	}
	return nil
}

// SetTag moves tag to image id.
func (e *Engine) SetTag(ctx context.Context, account, id, tag string) (store.Image, error) {
	if err := ValidateTag(tag); err != nil {
		return store.Image{}, err
	}
	if _, err := e.Image(ctx, account, id); err != nil {
		return store.Image{}, err
	}
	if err := e.st.SetTag(ctx, account, strings.ToLower(id), tag); err != nil {
		return store.Image{}, err
	}
	return e.st.Image(ctx, account, strings.ToLower(id))
}

// RemoveTag clears image id's tag (which must equal tag when tag is non-empty).
func (e *Engine) RemoveTag(ctx context.Context, account, id, tag string) (store.Image, error) {
	if _, err := e.Image(ctx, account, id); err != nil {
		return store.Image{}, err
	}
	if err := e.st.RemoveTag(ctx, account, strings.ToLower(id), tag); err != nil {
		return store.Image{}, err
	}
	return e.st.Image(ctx, account, strings.ToLower(id))
}

// DeleteImage deletes an image. Layers that descendants still need stay;
// the rest are collected at once.
func (e *Engine) DeleteImage(ctx context.Context, account, id string) error {
	if _, err := e.Image(ctx, account, id); err != nil {
		return err
	}
	id = strings.ToLower(id)
	if err := e.st.DeleteImage(ctx, account, id); err != nil {
		return err
	}
	e.mu.Lock()
	if n := e.images[id]; n != nil {
		n.deleted = true
	}
	hooks := slices.Clone(e.onDeleted)
	e.mu.Unlock()
	_, err := e.CollectGarbage(ctx)
	for _, fn := range hooks {
		fn(ctx, account, id)
	}
	return err
}

// OnImageDeleted registers fn to run after DeleteImage deleted an image
// and collected its layers (the export registry drops its blobs).
func (e *Engine) OnImageDeleted(fn func(ctx context.Context, account, id string)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onDeleted = append(e.onDeleted, fn)
}

// GCStats reports what a collection removed.
type GCStats struct {
	Layers    int
	Bytes     int64
	ImageRows int
}

// CollectGarbage removes layers that no live image's chain needs and that no
// running operation has pinned, and purges rows of deleted images and hidden
// import layers nothing depends on. A layer shared by several rows (a
// content-addressed import layer) stays while any of them is needed.
func (e *Engine) CollectGarbage(ctx context.Context) (GCStats, error) {
	e.gcMu.Lock()
	defer e.gcMu.Unlock()
	var st GCStats
	e.mu.Lock()
	needed := map[string]bool{}
	neededImages := map[string]bool{}
	for u, n := range e.images {
		if n.deleted || n.hidden {
			continue
		}
		// Every live image needs its own layer (so it can be squashed again
		// or diffed) and the chain it mounts today.
		for cur := u; cur != ""; {
			m := e.images[cur]
			if m == nil || neededImages[cur] {
				break
			}
			neededImages[cur] = true
			needed[m.layer] = true
			if m.flat != "" {
				needed[m.flat] = true
			}
			cur = m.parent
		}
	}
	for id := range e.pinned {
		needed[id] = true
	}
	var purge []string
	for u, n := range e.images {
		if (n.deleted || n.hidden) && !neededImages[u] {
			purge = append(purge, u)
		}
	}
	e.mu.Unlock()

	ents, err := os.ReadDir(filepath.Join(e.cfg.Home, "layers"))
	if err != nil {
		return st, err
	}
	for _, ent := range ents {
		id := ent.Name()
		if needed[id] || strings.Contains(id, ".tmp") {
			continue
		}
		p := e.layerPath(id)
		st.Bytes += dirBytes(p)
		if err := os.RemoveAll(p); err != nil {
			e.log.Warn("gc: remove layer", "layer", id, "err", err)
			continue
		}
		st.Layers++
	}
	if len(purge) > 0 {
		if err := e.st.PurgeImages(ctx, purge); err != nil {
			return st, err
		}
		e.mu.Lock()
		for _, u := range purge {
			delete(e.images, u)
		}
		e.mu.Unlock()
		st.ImageRows = len(purge)
	}
	if st.Layers > 0 {
		e.log.Info("garbage collected", "layers", st.Layers, "bytes", st.Bytes, "image_rows", st.ImageRows)
	}
	return st, nil
}

// ImageFS returns a read-only view of image id for inspection. release must
// be called when done; until then the image's layers cannot be collected.
func (e *Engine) ImageFS(ctx context.Context, account, id string) (*layerfs.FS, func(), error) {
	im, err := e.Image(ctx, account, id)
	if err != nil {
		return nil, nil, err
	}
	paths, release, err := e.pinChain(im.UUID)
	if err != nil {
		return nil, nil, err
	}
	return layerfs.New(paths), release, nil
}

// commitLayer makes upper durable and moves it into the layer store, then
// writes the image row with fn's transaction work (the operation's result)
// in one transaction. A crash before the transaction leaves only an
// unreferenced layer, which recovery collects.
func (e *Engine) commitLayer(ctx context.Context, upper string, im store.Image) error {
	if err := syncTree(upper); err != nil {
		return fmt.Errorf("sync layer: %w", err)
	}
	e.gcMu.Lock()
	defer e.gcMu.Unlock()
	dst := e.layerPath(im.Layer)
	if err := os.Rename(upper, dst); err != nil {
		return fmt.Errorf("move layer into store: %w", err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	if testHookAfterRename != nil {
		testHookAfterRename()
	}
	if err := e.recordImages(ctx, im); err != nil {
		if rerr := os.RemoveAll(dst); rerr != nil {
			e.log.Warn("remove the layer of a failed commit", "layer", im.Layer, "err", rerr)
		}
		return err
	}
	return nil
}

// testHookAfterRename, when set by a test, runs between the layer's rename
// into the store and the transaction that makes it visible.
var testHookAfterRename func()

// chainDepth returns the number of layers image u mounts.
func (e *Engine) chainDepth(u string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids, _ := e.chainLocked(u)
	return len(ids)
}

// maybeSquash flattens image u's chain into one layer in the background once
// it is deeper than SquashDepth, so mounts stay shallow whatever the history.
// One squash runs at a time: while it runs, the chain keeps growing, and the
// next commit past the threshold after it finishes squashes again.
func (e *Engine) maybeSquash(u string) {
	if e.chainDepth(u) <= e.cfg.SquashDepth {
		return
	}
	e.mu.Lock()
	if len(e.squashing) > 0 {
		e.mu.Unlock()
		return
	}
	e.squashing[u] = true
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer func() {
			e.mu.Lock()
			delete(e.squashing, u)
			e.mu.Unlock()
		}()
		if err := e.squash(context.Background(), u); err != nil {
			e.log.Warn("squash failed", "image", u, "err", err)
		}
	}()
}

// squash flattens image u synchronously. The image's identity and contents
// are unchanged; only the layers it mounts become one.
func (e *Engine) squash(ctx context.Context, u string) error {
	paths, release, err := e.pinChain(u)
	if err != nil {
		return err
	}
	defer release()
	if len(paths) <= 1 {
		return nil
	}
	id := newLayerID()
	e.mu.Lock()
	e.pinned[id]++
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		if e.pinned[id]--; e.pinned[id] <= 0 {
			delete(e.pinned, id)
		}
		e.mu.Unlock()
	}()
	start := time.Now()
	if err := layerfs.New(paths).Flatten(ctx, e.layerPath(id)); err != nil {
		return err
	}
	if err := e.st.SetFlat(ctx, u, id, dirBytes(e.layerPath(id))); err != nil {
		_ = os.RemoveAll(e.layerPath(id))
		return err
	}
	e.mu.Lock()
	if n := e.images[u]; n != nil {
		n.flat = id
	}
	e.mu.Unlock()
	e.log.Info("squashed image chain", "image", u, "layers", len(paths), "took", time.Since(start))
	return nil
}
