package layerfs

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// WriteTar writes a PAX tar archive of the subtree at p to w, following a
// final symlink. For a directory the members are named relative to it (the
// directory itself is not a member); a single file is archived under the base
// name of p. Symlinks are archived as symlinks, hard links as separate
// regular files, sockets are left out, and ownership, mode, mtime and xattrs
// (except overlayfs') are kept.
func (f *FS) WriteTar(ctx context.Context, w io.Writer, p string) error {
	n, err := f.resolve(p, true)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	if n.isDir() {
		prefix := strings.TrimSuffix(n.path, "/") + "/"
		err = f.walk(ctx, n, func(c *node) error {
			if c == n {
				return nil
			}
			return f.writeTarEntry(tw, c, strings.TrimPrefix(c.path, prefix))
		})
	} else {
		// Resolution only ends on a non-directory at a named component, so
		// the lexical base of p is that name.
		err = f.writeTarEntry(tw, n, path.Base(path.Clean("/"+p)))
	}
	if err != nil {
		return err
	}
	return tw.Close()
}

func (f *FS) writeTarEntry(tw *tar.Writer, n *node, name string) error {
	h := f.hostOf(n)
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(n.st.Mode & 0o7777),
		Uid:     int(n.st.Uid),
		Gid:     int(n.st.Gid),
		ModTime: mtime(&n.st),
		Format:  tar.FormatPAX,
	}
	switch n.st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = n.st.Size
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFLNK:
		target, err := f.readlink(n)
		if err != nil {
			return err
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
	case unix.S_IFCHR:
		hdr.Typeflag = tar.TypeChar
	case unix.S_IFBLK:
		hdr.Typeflag = tar.TypeBlock
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil // sockets cannot be archived
	}
	if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
		hdr.Devmajor = int64(unix.Major(uint64(n.st.Rdev)))
		hdr.Devminor = int64(unix.Minor(uint64(n.st.Rdev)))
	}
	attrs, err := xattrs(h)
	if err != nil {
		return err
	}
	for _, x := range attrs {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+x.name] = string(x.value)
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("tar %s: %w", n.path, err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	file, err := f.open(n)
	if err != nil {
		return err
	}
	defer file.Close()
	if _, err := io.CopyN(tw, file, hdr.Size); err != nil {
		return fmt.Errorf("tar %s: %w", n.path, err)
	}
	return nil
}
