package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/arborsh/arbor/imageref"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layerfs"
	"github.com/arborsh/arbor/internal/layers"
	"github.com/arborsh/arbor/internal/store"
)

// imageNode is the in-memory view of an image row used to walk chains.
// parent is the row whose chain lies below layer: the image's parent, or
// for an imported image the hidden row of the layers below its top one.
type imageNode struct {
	uuid, account, parent, layer, flat string
	deleted                            bool
	expiring                           bool   // retention is deleting it: no new leases, layers kept
	purging                            bool   // a collection is purging the row: no new leases
	hidden                             bool   // one layer of an imported chain (store.Image.Hidden)
	chain                              string // a hidden row's chain ID
	bytes, flatBytes                   int64  // disk of layer and flat, as recorded
}

func newImageNode(im store.Image) *imageNode {
	return &imageNode{uuid: im.UUID, account: im.Account, parent: im.MountParent(), layer: im.Layer, flat: im.Flat,
		deleted: im.Deleted, hidden: im.Hidden, chain: im.Chain,
		bytes: im.LayerBytes, flatBytes: im.FlatBytes}
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

// pinChain leases image u (deleted or not, while its row is kept) and
// returns its layer paths (top first), pinned until release is called.
func (e *Engine) pinChain(u string) (paths []string, release func(), err error) {
	if err := e.syncImage(context.Background(), u); err != nil { // made on another node
		return nil, nil, err
	}
	l, err := e.leaseImage(u, "", true)
	if err != nil {
		return nil, nil, err
	}
	e.mu.Lock()
	ids, err := e.chainLocked(u)
	e.mu.Unlock()
	if err == nil {
		var rel func()
		if paths, rel, err = e.layers.View(context.Background(), ids); err == nil {
			return paths, func() { rel(); l.Release() }, nil
		}
	}
	l.Release()
	return nil, nil, err
}

// prepare makes dir an active view on image u's chain for a run, whose
// lease keeps the image; remove unpins it and deletes dir (after unmount).
func (e *Engine) prepare(ctx context.Context, dir, u string) (*layers.Active, func(), error) {
	e.mu.Lock()
	ids, err := e.chainLocked(u)
	e.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	a, err := e.layers.Prepare(ctx, dir, ids)
	if err != nil {
		return nil, nil, err
	}
	return a, func() {
		if err := e.layers.Remove(a); err != nil {
			e.log.Warn("remove run dir", "operation", opID(ctx), "dir", dir, "err", err)
		}
	}, nil
}

// IsUUID reports whether s is a canonical UUID (see imageref.IsUUID).
func IsUUID(s string) bool { return imageref.IsUUID(s) }

// ResolveImage resolves a reference: an image UUID, "tag:NAME" or a bare tag.
func (e *Engine) ResolveImage(ctx context.Context, account, ref string) (Image, error) {
	im, err := e.resolveImage(ctx, account, ref)
	return toImage(im), err
}

func (e *Engine) resolveImage(ctx context.Context, account, ref string) (store.Image, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return store.Image{}, errdefs.InvalidArgument("image reference is empty: pass an image UUID or tag:NAME")
	}
	if IsUUID(ref) {
		if isQueued(ctx) { // a queued run keeps its image (cluster.go)
			im, err := e.st.ImageAny(ctx, strings.ToLower(ref))
			if err == nil && im.Account != account {
				err = errdefs.NotFound("image %s not found", ref)
			}
			return im, err
		}
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
func (e *Engine) Image(ctx context.Context, account, id string) (Image, error) {
	if !IsUUID(id) {
		return Image{}, errdefs.InvalidArgument("%q is not an image UUID", id)
	}
	im, err := e.st.Image(ctx, account, strings.ToLower(id))
	if err != nil {
		return toImage(im), err
	}
	ims, err := e.withCheckpoints(ctx, []Image{toImage(im)})
	if err != nil {
		return Image{}, err
	}
	return ims[0], nil
}

// ListImages lists account's images.
func (e *Engine) ListImages(ctx context.Context, f ImageFilter) ([]Image, error) {
	rs, err := e.st.ListImages(ctx, f.row())
	if err != nil {
		return toImages(rs), err
	}
	return e.withCheckpoints(ctx, toImages(rs))
}

// ValidateTag checks a tag name (see imageref.ValidTag).
func ValidateTag(tag string) error {
	if err := imageref.ValidTag(tag); err != nil {
		return errdefs.InvalidArgument("%v", err)
	}
	return nil
}

// SetTag moves tag to image id.
func (e *Engine) SetTag(ctx context.Context, account, id, tag string) (Image, error) {
	if err := ValidateTag(tag); err != nil {
		return Image{}, err
	}
	if _, err := e.Image(ctx, account, id); err != nil {
		return Image{}, err
	}
	if err := e.st.SetTag(ctx, account, strings.ToLower(id), tag); err != nil {
		return Image{}, err
	}
	return e.Image(ctx, account, id)
}

// RemoveTag clears image id's tag (which must equal tag when tag is non-empty).
func (e *Engine) RemoveTag(ctx context.Context, account, id, tag string) (Image, error) {
	if _, err := e.Image(ctx, account, id); err != nil {
		return Image{}, err
	}
	if err := e.st.RemoveTag(ctx, account, strings.ToLower(id), tag); err != nil {
		return Image{}, err
	}
	return e.Image(ctx, account, id)
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
	Bytes     int64 // the removed layers' recorded sizes
	ImageRows int
}

// gcRootsLocked returns the layers and image rows that live or leased
// images need, treating the images in expire as deleted too, and the
// recorded size of every layer a row names. e.mu must be held.
func (e *Engine) gcRootsLocked(expire map[string]bool) (needed, neededImages map[string]bool, sizes map[string]int64) {
	needed, neededImages, sizes = map[string]bool{}, map[string]bool{}, map[string]int64{}
	for u, n := range e.images {
		sizes[n.layer] = max(sizes[n.layer], n.bytes)
		if n.flat != "" {
			sizes[n.flat] = max(sizes[n.flat], n.flatBytes)
		}
		if (n.deleted || n.hidden || expire[u]) && e.leased[u] == 0 {
			continue
		}
		// Every live or leased image needs its own layer (so it can be
		// squashed again or diffed) and the chain it mounts today.
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
	return needed, neededImages, sizes
}

// CollectGarbage removes layers that no live image's chain needs and that no
// lease pins (a run's image, a view, an import in progress), and purges rows
// of deleted images and hidden import layers nothing depends on. A layer
// shared by several rows (a content-addressed import layer) stays while any
// of them is needed. Commits wait only while the collection decides and
// unlinks, not while it deletes (see layers.Snapshotter.Collect).
func (e *Engine) CollectGarbage(ctx context.Context) (GCStats, error) {
	// On a cluster node the view of images may lag other nodes' commits;
	// what it picks is deleted from the shared bucket only if the database
	// agrees (layers/s3store's Guard: no image row names the layer, no node
	// holds it, older than the grace period).
	var st GCStats
	var purge []string
	var sizes map[string]int64
	ids, err := e.layers.CollectIDs(ctx, func() map[string]bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		needed, neededImages, sz := e.gcRootsLocked(nil)
		sizes = sz
		for u, n := range e.images {
			if (n.deleted || n.hidden) && !neededImages[u] {
				n.purging = true
				purge = append(purge, u)
			}
		}
		return needed
	})
	st.Layers = len(ids)
	for _, id := range ids {
		st.Bytes += sizes[id]
	}
	e.cfg.Observer.GarbageCollected(len(ids), err)
	if err != nil {
		return st, err
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
// records the image row (with the outcome of the operation it is the result
// of, in one transaction: see recordImages). A crash before the transaction leaves only an
// unreferenced layer, which recovery collects.
func (e *Engine) commitLayer(ctx context.Context, upper string, im store.Image) error {
	return e.layers.Commit(ctx, upper, im.Layer, func() error {
		if testHookAfterRename != nil {
			testHookAfterRename()
		}
		return e.recordImages(ctx, im)
	})
}

// testHookAfterRename, when set by a test, runs between the layer's rename
// into the store and the transaction that makes it visible.
var testHookAfterRename func()

// chainDepth returns the number of layers image u mounts.
func (e *Engine) chainDepth(u string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids, _ := e.chainLocked(u) // a broken chain counts 0: nothing to squash
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
		if err := e.squash(e.ctx, u); err != nil {
			e.log.Warn("squash failed", "image", u, "err", err)
		}
	}()
}

// squash flattens image u synchronously. The image's identity and contents
// are unchanged; only the layers it mounts become one.
func (e *Engine) squash(ctx context.Context, u string) error {
	l, err := e.leaseImage(u, "", true)
	if err != nil {
		return err
	}
	defer l.Release()
	e.mu.Lock()
	ids, err := e.chainLocked(u)
	e.mu.Unlock()
	if err != nil || len(ids) <= 1 {
		return err
	}
	if testHookSquashChain != nil {
		testHookSquashChain(u)
	}
	id := newLayerID()
	start := time.Now()
	if err := e.layers.Squash(ctx, ids, id, func(dir string) error {
		fb := dirBytes(dir)
		if err := e.st.SetFlat(ctx, u, id, fb); err != nil {
			return err
		}
		e.mu.Lock()
		if n := e.images[u]; n != nil {
			n.flat, n.flatBytes = id, fb
		}
		e.mu.Unlock()
		return nil
	}); err != nil {
		return err
	}
	e.log.Info("squashed image chain", "image", u, "layers", len(ids), "took", time.Since(start))
	return nil
}

// testHookSquashChain, when set by a test, runs once squash has leased image
// u and read its chain, before the chain is flattened.
var testHookSquashChain func(u string)
