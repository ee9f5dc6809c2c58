package engine

import (
	"context"
	"strings"

	"github.com/arborsh/arbor/internal/errdefs"

	"github.com/arborsh/arbor/internal/layerfs"
	"github.com/arborsh/arbor/internal/store"
)

// Lineage is an image's place in its tree.
type Lineage struct {
	Image     Image
	Ancestors []Image // parent first, up to the base image
	Children  []Image // direct children, newest first
}

// Lineage returns image id's ancestors and children. Deleted ancestors are
// included (their rows remain while descendants need their layers) and
// marked Deleted.
func (e *Engine) Lineage(ctx context.Context, account, id string) (Lineage, error) {
	im, err := e.Image(ctx, account, id)
	if err != nil {
		return Lineage{}, err
	}
	l := Lineage{Image: im}
	for p := im.Parent; p != ""; {
		a, err := e.st.ImageAny(ctx, p)
		if err != nil || a.Account != account {
			break
		}
		l.Ancestors = append(l.Ancestors, toImage(a))
		p = a.Parent
	}
	kids, err := e.st.ListImages(ctx, store.ImageFilter{Account: account, Parent: im.UUID, Limit: 1000})
	if err != nil {
		return l, err
	}
	l.Children = toImages(kids)
	return l, nil
}

// Diff compares two of account's images.
func (e *Engine) Diff(ctx context.Context, account, from, to string, opts layerfs.DiffOptions) ([]layerfs.Change, error) {
	a, relA, err := e.diffFS(ctx, account, from)
	if err != nil {
		return nil, err
	}
	defer relA()
	b, relB, err := e.diffFS(ctx, account, to)
	if err != nil {
		return nil, err
	}
	defer relB()
	return layerfs.Diff(ctx, a, b, opts)
}

// diffFS is ImageFS that also accepts a deleted image of the account whose
// layers are still kept (an ancestor of a live image), so "diff against the
// parent" keeps working after the parent is deleted.
func (e *Engine) diffFS(ctx context.Context, account, id string) (*layerfs.FS, func(), error) {
	fs, release, err := e.ImageFS(ctx, account, id)
	if err == nil || !errdefs.IsNotFound(err) || !IsUUID(id) {
		return fs, release, err
	}
	im, aerr := e.st.ImageAny(ctx, strings.ToLower(id))
	if aerr != nil || im.Account != account || im.Hidden {
		return nil, nil, err
	}
	paths, release, perr := e.pinChain(im.UUID)
	if perr != nil {
		return nil, nil, err
	}
	return layerfs.New(paths), release, nil
}
