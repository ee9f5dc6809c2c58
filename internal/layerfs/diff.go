package layerfs

import (
	"bytes"
	"cmp"
	"context"
	"io"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
)

const defaultContentLimit = 64 << 10

// DiffOptions tune [Diff].
type DiffOptions struct {
	// ContentLimit is the largest file size for which a modified text file
	// gets a unified diff; 0 means 64 KiB.
	ContentLimit int64
	// Path is the subtree to compare (a final symlink is followed); "" means "/".
	Path string
}

// Change is one difference between two images.
type Change struct {
	// Path is DiffOptions.Path, cleaned, joined with the names below it.
	Path string
	Kind string // "added", "modified" or "deleted"
	// Type is the entry's type in the new image ("file", "dir", "symlink"
	// or "other"), or in the old one if deleted.
	Type             string
	OldSize, NewSize int64 // 0 for directories and for the missing side
	// Diff is a unified diff for a modified text file whose sizes are both
	// within ContentLimit, "" otherwise.
	Diff string
}

// Diff compares the merged views a (old) and b (new). An entry is modified if
// its type, mode, owner, size, symlink target, device number or content
// differ; modification times are ignored. An added or deleted directory, or
// one that replaces or is replaced by another type, is reported once, without
// its contents. Changes come in walk order: by path, component by component.
//
// Entries that both images take from the same host path are equal without
// being read, and so are whole directories merged from the same host
// directories, so diffing an image against its parent reads little more than
// the new layer.
func Diff(ctx context.Context, a, b *FS, opts DiffOptions) ([]Change, error) {
	if opts.ContentLimit < 0 {
		return nil, errdefs.InvalidArgument("content limit must not be negative")
	}
	p := cmp.Or(opts.Path, "/")
	an, err := resolveOptional(a, p)
	if err != nil {
		return nil, err
	}
	bn, err := resolveOptional(b, p)
	if err != nil {
		return nil, err
	}
	if an == nil && bn == nil {
		return nil, errdefs.NotFound("path not found: %s", p)
	}
	d := &differ{a: a, b: b, limit: cmp.Or(opts.ContentLimit, defaultContentLimit), changes: []Change{}}
	if err := d.compare(ctx, path.Clean("/"+p), an, bn); err != nil {
		return nil, err
	}
	return d.changes, nil
}

// resolveOptional resolves p in f, following a final symlink; it returns nil
// if p does not exist.
func resolveOptional(f *FS, p string) (*node, error) {
	n, err := f.resolve(p, true)
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	return n, err
}

type differ struct {
	a, b    *FS
	limit   int64
	changes []Change
}

// compare records the changes from an to bn, either of which may be nil, at p.
func (d *differ) compare(ctx context.Context, p string, an, bn *node) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case an == nil:
		d.changes = append(d.changes, Change{Path: p, Kind: "added", Type: typeName(bn), NewSize: size(bn)})
		return nil
	case bn == nil:
		d.changes = append(d.changes, Change{Path: p, Kind: "deleted", Type: typeName(an), OldSize: size(an)})
		return nil
	case d.sameTree(an, bn):
		return nil
	}
	if err := d.compareEntries(p, an, bn); err != nil {
		return err
	}
	if !an.isDir() || !bn.isDir() {
		return nil
	}
	ac, err := d.a.readDir(an)
	if err != nil {
		return err
	}
	bc, err := d.b.readDir(bn)
	if err != nil {
		return err
	}
	for len(ac) > 0 || len(bc) > 0 {
		var x, y *node
		switch {
		case len(bc) == 0:
			x, ac = ac[0], ac[1:]
		case len(ac) == 0:
			y, bc = bc[0], bc[1:]
		default:
			switch c := strings.Compare(path.Base(ac[0].path), path.Base(bc[0].path)); {
			case c < 0:
				x, ac = ac[0], ac[1:]
			case c > 0:
				y, bc = bc[0], bc[1:]
			default:
				x, y, ac, bc = ac[0], bc[0], ac[1:], bc[1:]
			}
		}
		name := path.Base(cmp.Or(x, y).path)
		if err := d.compare(ctx, path.Join(p, name), x, y); err != nil {
			return err
		}
	}
	return nil
}

// sameTree reports whether an and bn are backed by the same host entries, and
// directories also by the same host directories below: then they and their
// subtrees are equal, layers being immutable.
func (d *differ) sameTree(an, bn *node) bool {
	if d.a.hostOf(an) != d.b.hostOf(bn) {
		return false
	}
	return !an.isDir() || slices.EqualFunc(an.dirs, bn.dirs, func(i, j int) bool {
		return d.a.host(i, an.path) == d.b.host(j, bn.path)
	})
}

// compareEntries records a modification of the entry itself (not of a
// directory's contents).
func (d *differ) compareEntries(p string, an, bn *node) error {
	changed := an.st.Mode != bn.st.Mode || an.st.Uid != bn.st.Uid || an.st.Gid != bn.st.Gid
	var text string
	if an.st.Mode&unix.S_IFMT == bn.st.Mode&unix.S_IFMT {
		switch an.st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
		case unix.S_IFREG:
			contentChanged, t, err := d.compareFiles(p, an, bn)
			if err != nil {
				return err
			}
			changed, text = changed || contentChanged, t
		case unix.S_IFLNK:
			at, err := d.a.readlink(an)
			if err != nil {
				return err
			}
			bt, err := d.b.readlink(bn)
			if err != nil {
				return err
			}
			changed = changed || at != bt
		default:
			changed = changed || an.st.Rdev != bn.st.Rdev
		}
	}
	if changed {
		d.changes = append(d.changes, Change{Path: p, Kind: "modified", Type: typeName(bn), OldSize: size(an), NewSize: size(bn), Diff: text})
	}
	return nil
}

// compareFiles compares two regular files backed by different host files.
func (d *differ) compareFiles(p string, an, bn *node) (changed bool, diff string, err error) {
	if an.st.Size > d.limit || bn.st.Size > d.limit {
		if an.st.Size != bn.st.Size {
			return true, "", nil
		}
		same, err := d.sameContent(an, bn)
		return !same, "", err
	}
	ad, err := readAll(d.a, an)
	if err != nil {
		return false, "", err
	}
	bd, err := readAll(d.b, bn)
	if err != nil {
		return false, "", err
	}
	if bytes.Equal(ad, bd) {
		return false, "", nil
	}
	if bytes.IndexByte(ad, 0) >= 0 || bytes.IndexByte(bd, 0) >= 0 {
		return true, "", nil
	}
	return true, unifiedDiff("a"+p, "b"+p, ad, bd), nil
}

// sameContent compares two large files of equal size chunk by chunk.
func (d *differ) sameContent(an, bn *node) (bool, error) {
	af, err := d.a.open(an)
	if err != nil {
		return false, err
	}
	defer af.Close()
	bf, err := d.b.open(bn)
	if err != nil {
		return false, err
	}
	defer bf.Close()
	abuf, bbuf := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, aerr := io.ReadFull(af, abuf)
		nb, berr := io.ReadFull(bf, bbuf)
		for _, err := range []error{aerr, berr} {
			if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
				return false, err
			}
		}
		if !bytes.Equal(abuf[:na], bbuf[:nb]) {
			return false, nil
		}
		if aerr != nil || berr != nil {
			return aerr != nil && berr != nil, nil
		}
	}
}

func readAll(f *FS, n *node) ([]byte, error) {
	file, err := f.open(n)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	return io.ReadAll(io.LimitReader(file, n.st.Size))
}

func typeName(n *node) string {
	switch n.st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	default:
		return "other"
	}
}

// size is the size a Change reports: a directory's is not meaningful.
func size(n *node) int64 {
	if n.isDir() {
		return 0
	}
	return n.st.Size
}
