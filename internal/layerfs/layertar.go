package layerfs

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
)

// OCI whiteout names (image-spec layer.md).
const (
	ociWhiteoutPrefix = ".wh."
	ociOpaque         = ".wh..wh..opq"
)

// WriteLayerTar writes the single layer directory layer, not merged with
// anything, as an OCI layer changeset (a PAX tar) to w: an overlayfs
// whiteout (character device 0/0) becomes an empty ".wh.<name>" file, and an
// opaque directory is followed by an empty "<dir>/.wh..wh..opq". Members
// come in lexical order, each directory before its contents; a file with
// several names in the layer is written once and then as hard links to its
// first name. Ownership, mode, mtime and xattrs (except overlayfs') are kept,
// as in [FS.WriteTar], so equal layers give equal bytes. The layer's root
// directory itself is not a member.
func WriteLayerTar(ctx context.Context, w io.Writer, layer string) error {
	f := New([]string{layer})
	lw := &layerWriter{f: f, tw: tar.NewWriter(w), links: map[[2]uint64]string{}}
	if err := lw.dir(ctx, "/"); err != nil {
		return err
	}
	return lw.tw.Close()
}

type layerWriter struct {
	f     *FS
	tw    *tar.Writer
	links map[[2]uint64]string // (dev, inode) → first member name
}

func (lw *layerWriter) dir(ctx context.Context, p string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ents, err := listDir(lw.f.layers[0], p)
	if err != nil {
		return err
	}
	slices.SortFunc(ents, func(a, b dirent) int { return strings.Compare(a.name, b.name) })
	for _, e := range ents {
		cp := path.Join(p, e.name)
		name := strings.TrimPrefix(cp, "/")
		n := &node{path: cp, st: e.st}
		switch {
		case isWhiteout(&e.st):
			hdr := &tar.Header{Typeflag: tar.TypeReg, Name: path.Join(path.Dir(name), ociWhiteoutPrefix+e.name),
				Mode: int64(e.st.Mode & 0o7777), Uid: int(e.st.Uid), Gid: int(e.st.Gid), ModTime: mtime(&e.st), Format: tar.FormatPAX}
			if err := lw.tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("tar %s: %w", cp, err)
			}
		case n.isDir():
			if err := lw.f.writeTarEntry(lw.tw, n, name); err != nil {
				return err
			}
			opaque, err := isOpaque(lw.f.hostOf(n))
			if err != nil {
				return err
			}
			if opaque {
				hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name + "/" + ociOpaque, Mode: 0o644, ModTime: mtime(&e.st), Format: tar.FormatPAX}
				if err := lw.tw.WriteHeader(hdr); err != nil {
					return fmt.Errorf("tar %s: %w", cp, err)
				}
			}
			if err := lw.dir(ctx, cp); err != nil {
				return err
			}
		case n.isRegular() && e.st.Nlink > 1:
			key := [2]uint64{uint64(e.st.Dev), e.st.Ino}
			if first, ok := lw.links[key]; ok {
				hdr := &tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: first, ModTime: mtime(&e.st), Format: tar.FormatPAX}
				if err := lw.tw.WriteHeader(hdr); err != nil {
					return fmt.Errorf("tar %s: %w", cp, err)
				}
				continue
			}
			lw.links[key] = name
			if err := lw.f.writeTarEntry(lw.tw, n, name); err != nil {
				return err
			}
		default:
			if err := lw.f.writeTarEntry(lw.tw, n, name); err != nil {
				return err
			}
		}
	}
	return nil
}
