package engine

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layers"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/store"
)

// Imported images are chains of content-addressed layers, so a layer that
// several images share (a common base) is extracted and stored once.
//
// A layer directory is named after the digest of the layer's uncompressed
// tar, its diff ID: "sha256-<hex>" under layers/. Extracting a layer into
// an empty directory is a function of its tar alone (whiteouts become 0/0
// character devices whether or not anything lies below, an opaque marker
// becomes an xattr and prunes nothing, hard links must point into the same
// layer, and no path resolves through the layers below), so the same diff
// ID always yields the same directory, whatever it is stacked on. Its place
// in a chain is what the chain ID adds: each layer below an imported
// image's top one is a hidden image row (store.Image.Hidden), one per
// account and chain ID, whose layer column names the shared directory. The
// visible image is the top layer on the hidden row below it (its Base).
//
// Garbage collection needs nothing new: a layer directory stays while any
// row that a live image's chain reaches names it, and hidden rows no
// visible image reaches are purged like deleted ones.

// ImportLayer is one layer of an image being imported.
type ImportLayer struct {
	// DiffID is "sha256:<hex>" of the layer's uncompressed tar. Fill must
	// fail unless what it writes has this digest.
	DiffID string
	// ChainID is "sha256:<hex>", the OCI chain ID of this layer and the
	// ones below it.
	ChainID string
	// Fill writes the layer into the empty directory dir. It runs only
	// when no layer with DiffID is stored yet.
	Fill func(dir string) error
	// Verify runs instead of Fill when the layer is stored but no image of
	// the account uses it: it must prove that the source's content has
	// DiffID (read and hash it), so no account reaches another's layer by
	// naming its digest. Nil: Fill runs into a scratch directory that is
	// then discarded.
	Verify func() error
	// Shared, if set, is called when the layer is stored and already the
	// account's: nothing is read or written for it.
	Shared func()
}

// ImportStats says how an imported image's layers were stored.
type ImportStats struct {
	Layers      int   // in the image
	Extracted   int   // written now
	Shared      int   // already stored and reused, not extracted again
	SharedBytes int64 // the reused layers' bytes: what sharing saved
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// contentLayerID is the directory name of the layer with diff ID d, the
// nth occurrence of that diff ID in one image (an image may repeat a layer;
// one overlay mount cannot use a directory twice).
func contentLayerID(d string, nth int) string {
	id := "sha256-" + strings.TrimPrefix(d, "sha256:")
	if nth > 0 {
		id += fmt.Sprintf("-%d", nth+1)
	}
	return id
}

// NewLayeredImage creates an image from layers, bottom first: layers
// already stored are shared, the others extracted with their Fill, and one
// transaction makes the hidden rows below the top layer and the visible
// image exist together, so a failed or interrupted import leaves nothing
// visible (and recovery collects whatever it had stored).
func (e *Engine) NewLayeredImage(ctx context.Context, account string, layers []ImportLayer) (_ string, st ImportStats, err error) {
	st = ImportStats{Layers: len(layers)}
	if err := checkAccount(account); err != nil {
		return "", st, err
	}
	if len(layers) == 0 {
		return "", st, errdefs.InvalidArgument("an image needs at least one layer")
	}
	ids := make([]string, len(layers))
	seen := map[string]int{}
	for i, l := range layers {
		if !digestRE.MatchString(l.DiffID) || !digestRE.MatchString(l.ChainID) || l.Fill == nil {
			return "", st, fmt.Errorf("layer %d: diff ID %q, chain ID %q: want sha256 digests and a Fill", i+1, l.DiffID, l.ChainID)
		}
		ids[i] = contentLayerID(l.DiffID, seen[l.DiffID])
		seen[l.DiffID]++
	}

	// Lease every layer before looking at the store: a collection either
	// finished deciding before (and what it removed is not stored now) or
	// keeps them.
	lease := e.layers.Lease(ids...)
	e.mu.Lock()
	owned := map[string]bool{}
	for _, n := range e.images {
		if n.account == account {
			owned[n.layer] = true
		}
	}
	e.mu.Unlock()
	defer func() {
		lease.Release()
		if err != nil && st.Extracted > 0 {
			// The layers this import stored belong to no image: remove
			// them now rather than at the next collection.
			if _, gerr := e.CollectGarbage(context.WithoutCancel(ctx)); gerr != nil {
				e.log.Warn("collect the layers of a failed import", "operation", opID(ctx), "err", gerr)
			}
		}
	}()

	sizes := make([]int64, len(layers))
	for i, l := range layers {
		shared, n, err := e.storeLayer(ctx, ids[i], l, owned[ids[i]])
		if err != nil {
			return "", st, fmt.Errorf("layer %d of %d: %w", i+1, len(layers), err)
		}
		sizes[i] = n
		if shared {
			st.Shared++
			st.SharedBytes += n
			Progress(ctx, oplog.EventDataProgress{Phase: "shared", Done: int64(i + 1), Total: int64(len(layers)), Unit: "layers",
				Message: fmt.Sprintf("layer %d of %d (%s) is already stored: not extracted again", i+1, len(layers), shortID(l.DiffID))})
		} else {
			st.Extracted++
		}
	}

	// The account pays for each layer its images do not hold yet, once,
	// whoever extracted it.
	var need int64
	counted := map[string]bool{}
	for i, id := range ids {
		if !owned[id] && !counted[id] {
			counted[id] = true
			need += sizes[i]
		}
	}
	if err := e.checkImportQuota(ctx, account, need); err != nil {
		return "", st, err
	}
	// Before the commit: an import's commit is its completion, the last event.
	Progress(ctx, oplog.EventDataProgress{Phase: "stored", Done: int64(st.Extracted), Total: int64(st.Layers), Unit: "layers",
		Message: fmt.Sprintf("%d of %d layers extracted, %d shared with stored images (%d bytes not written again)", st.Extracted, st.Layers, st.Shared, st.SharedBytes)})
	id, err := e.commitChain(ctx, account, layers, ids, sizes)
	if err != nil {
		return "", st, err
	}
	e.log.Info("imported layered image", "operation", opID(ctx), "image", id, "layers", st.Layers, "extracted", st.Extracted, "shared", st.Shared, "shared_bytes", st.SharedBytes)
	e.maybeSquash(id)
	return id, st, nil
}

func shortID(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// storeLayer makes sure layer id is stored, extracting it unless it is,
// and returns whether it was shared and its size. id is leased.
func (e *Engine) storeLayer(ctx context.Context, id string, l ImportLayer, owned bool) (bool, int64, error) {
	if dst, err := e.layers.Get(ctx, id); err == nil {
		if owned && l.Shared != nil {
			l.Shared()
		}
		if !owned {
			verify := l.Verify
			if verify == nil {
				verify = func() error { return e.fillScratch(ctx, l.Fill) }
			}
			if err := verify(); err != nil {
				return false, 0, err
			}
		}
		return true, dirBytes(dst), nil
	}
	tmp, err := e.stagingDir(ctx)
	if err != nil {
		return false, 0, err
	}
	defer os.RemoveAll(tmp) // after the rename, a no-op
	if err := os.Chmod(tmp, 0o755); err != nil {
		return false, 0, err
	}
	if err := l.Fill(tmp); err != nil {
		return false, 0, err
	}
	n := dirBytes(tmp)
	if err := e.layers.Put(ctx, id, tmp); err != nil {
		if errdefs.IsConflict(err) {
			return true, n, nil // a concurrent import stored it first
		}
		return false, 0, err
	}
	stagedLayer(ctx, n)
	return false, n, nil
}

// fillScratch runs fill into a directory that is then removed: the check of
// a source that offers no cheaper one.
func (e *Engine) fillScratch(ctx context.Context, fill func(dir string) error) error {
	tmp, err := e.stagingDir(ctx)
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	return fill(tmp)
}

// commitChain writes the hidden rows the account lacks and the visible
// image in one transaction. Existing hidden rows with the same chain IDs
// are reused, leased so that no collection purges them meanwhile; the new
// rows' layers are leased by the caller.
func (e *Engine) commitChain(ctx context.Context, account string, layers []ImportLayer, ids []string, sizes []int64) (string, error) {
	now := e.now()
	var rows []store.Image
	base := ""
	var leases []*imageLease
	defer func() {
		for _, l := range leases {
			l.Release()
		}
	}()
	e.mu.Lock()
	for i := range len(layers) - 1 {
		var found *imageNode
		for _, n := range e.images {
			if n.hidden && !n.purging && n.account == account && n.chain == layers[i].ChainID {
				found = n
				break
			}
		}
		if found != nil {
			if found.layer != ids[i] || found.parent != base {
				e.mu.Unlock()
				return "", fmt.Errorf("stored chain %s of account %s does not match the image's layers", layers[i].ChainID, account)
			}
			leases = append(leases, e.leaseLocked(found.uuid))
			base = found.uuid
			continue
		}
		im := store.Image{UUID: newID(), Account: account, Base: base, Layer: ids[i], Depth: i + 1, LayerBytes: sizes[i],
			CreatedAt: now, Hidden: true, Chain: layers[i].ChainID}
		rows = append(rows, im)
		base = im.UUID
	}
	e.mu.Unlock()
	top := len(layers) - 1
	im := store.Image{UUID: newID(), Account: account, Base: base, Layer: ids[top], Depth: len(layers), LayerBytes: sizes[top], CreatedAt: now}
	rows = append(rows, im)
	if testHookBeforeChainCommit != nil {
		if err := testHookBeforeChainCommit(); err != nil {
			return "", err
		}
	}
	if err := e.recordImages(ctx, rows...); err != nil {
		return "", fmt.Errorf("record image: %w", err)
	}
	return im.UUID, nil
}

// testHookBeforeChainCommit, when set by a test, runs after an import's
// layers are stored and before the transaction that makes it visible; an
// error fails the import there.
var testHookBeforeChainCommit func() error

// LayerStats counts the layers in the store and their bytes (as stored:
// compressed in an object store).
func (e *Engine) LayerStats() (n int, bytes int64, err error) {
	ctx := context.Background()
	if sz, ok := e.layers.Storage().(layers.Sizer); ok {
		return sz.StoredBytes(ctx) // without fetching every layer
	}
	ids, err := e.layers.Storage().List(ctx)
	if err != nil {
		return 0, 0, err
	}
	for _, id := range ids {
		if p, err := e.layers.Get(ctx, id); err == nil {
			n++
			bytes += dirBytes(p)
		}
	}
	return n, bytes, nil
}

// ImageLayers returns the layer directories image id mounts, top first
// (ending at the nearest squashed ancestor's flat layer), pinned against
// collection until release is called. Layer directories never change, and
// a directory's name identifies its content.
func (e *Engine) ImageLayers(ctx context.Context, account, id string) (paths []string, release func(), err error) {
	im, err := e.Image(ctx, account, id)
	if err != nil {
		return nil, nil, err
	}
	return e.pinChain(im.UUID)
}
