package layerfs

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
)

// Flatten writes the merged view as a single full layer into dst, which must
// not exist: no whiteouts or opaque markers, with mode (setuid, setgid and
// sticky bits included), ownership, times, symlinks, device nodes, fifos and
// xattrs (except overlayfs' own) preserved. Files hard linked to each other in
// the image stay hard linked. The layer is built in a temporary sibling of
// dst, synced, and renamed into place, so a crash or an error never leaves a
// partial dst: every file and directory it writes is fsynced before the
// rename (a power loss must not leave a complete-looking layer of empty
// files), and dst's parent after it.
func (f *FS) Flatten(ctx context.Context, dst string) (err error) {
	dst = filepath.Clean(dst)
	if _, err := os.Lstat(dst); err == nil {
		return errdefs.Conflict("destination already exists: %s", dst)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	root, err := f.root()
	if err != nil {
		return err
	}
	tmp := dst + ".tmp-" + rand.Text()
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	fl := &flattener{f: f, links: map[inode]string{}}
	if err := fl.copyDir(ctx, root, tmp); err != nil {
		return err
	}
	// NOREPLACE: another writer may have created dst since the check above.
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE); err != nil {
		if err == unix.EEXIST {
			return errdefs.Conflict("destination already exists: %s", dst)
		}
		return &os.LinkError{Op: "rename", Old: tmp, New: dst, Err: err}
	}
	return syncDir(filepath.Dir(dst))
}

type inode struct{ dev, ino uint64 }

type flattener struct {
	f *FS
	// links maps a multiply linked host file to its first copy, which later
	// paths to the same file are linked to.
	links map[inode]string
}

// copyDir fills the existing directory dir with n's merged contents, then
// gives it n's metadata; the mtime is set last, as adding entries changes it.
func (fl *flattener) copyDir(ctx context.Context, n *node, dir string) error {
	children, err := fl.f.readDir(n)
	if err != nil {
		return err
	}
	for _, c := range children {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fl.copy(ctx, c, filepath.Join(dir, path.Base(c.path))); err != nil {
			return err
		}
	}
	if err := fl.setMetadata(n, dir); err != nil {
		return err
	}
	return syncDir(dir)
}

func (fl *flattener) copy(ctx context.Context, n *node, target string) error {
	switch n.st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := os.Mkdir(target, 0o700); err != nil {
			return err
		}
		return fl.copyDir(ctx, n, target)
	case unix.S_IFREG:
		return fl.copyFile(n, target)
	case unix.S_IFLNK:
		linkname, err := fl.f.readlink(n)
		if err != nil {
			return err
		}
		if err := os.Symlink(linkname, target); err != nil {
			return err
		}
	default:
		if err := unix.Mknod(target, n.st.Mode, int(n.st.Rdev)); err != nil {
			return hostError("mknod", target, err)
		}
	}
	return fl.setMetadata(n, target)
}

func (fl *flattener) copyFile(n *node, target string) error {
	if n.st.Nlink > 1 {
		id := inode{dev: uint64(n.st.Dev), ino: n.st.Ino}
		if first, ok := fl.links[id]; ok {
			return os.Link(first, target)
		}
		fl.links[id] = target
	}
	src, err := fl.f.open(n)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	err = copySparse(dst, src, n.st.Size)
	if err == nil {
		err = fl.setMetadata(n, target)
	}
	if err == nil {
		err = syncFile(dst)
	}
	return errors.Join(err, dst.Close())
}

// copySparse copies the size bytes of src to the empty dst and leaves src's
// holes as holes: a 2 GiB sparse file must not become 2 GiB of disk when a
// chain is squashed.
func copySparse(dst, src *os.File, size int64) error {
	fd := int(src.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // only a hole is left
		}
		if err != nil {
			// No SEEK_DATA here: copy the rest as it reads.
			if _, err := src.Seek(off, io.SeekStart); err != nil {
				return err
			}
			if _, err := dst.Seek(off, io.SeekStart); err != nil {
				return err
			}
			_, err = io.Copy(dst, src)
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return hostError("lseek", src.Name(), err)
		}
		if _, err := src.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := dst.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyN(dst, src, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return dst.Truncate(size)
}

// setMetadata gives target n's ownership, mode, xattrs and times, in that
// order: chown clears setuid and setgid bits and file capabilities.
func (fl *flattener) setMetadata(n *node, target string) error {
	if err := os.Lchown(target, int(n.st.Uid), int(n.st.Gid)); err != nil {
		return err
	}
	if !n.isSymlink() {
		if err := unix.Chmod(target, n.st.Mode&0o7777); err != nil {
			return hostError("chmod", target, err)
		}
	}
	attrs, err := xattrs(fl.f.hostOf(n))
	if err != nil {
		return err
	}
	for _, x := range attrs {
		if err := unix.Lsetxattr(target, x.name, x.value, 0); err != nil {
			return hostError("lsetxattr "+x.name, target, err)
		}
	}
	ts := []unix.Timespec{n.st.Atim, n.st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return hostError("utimensat", target, err)
	}
	return nil
}

// syncFile makes f durable. Every file Flatten writes and every directory
// it fills or renames into goes through it (a test records them).
var syncFile = (*os.File).Sync

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(syncFile(d), d.Close())
}
