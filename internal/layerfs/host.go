package layerfs

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
)

// isWhiteout reports whether st is an overlayfs whiteout, a character device 0/0.
func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// opaqueXattrs mark a directory that hides the lower layers' contents; the
// user.* form is what overlayfs writes when mounted with userxattr.
var opaqueXattrs = []string{"trusted.overlay.opaque", "user.overlay.opaque"}

// isOpaque reports whether the host directory h is an opaque overlay directory.
func isOpaque(h string) (bool, error) {
	var buf [2]byte
	for _, name := range opaqueXattrs {
		n, err := unix.Lgetxattr(h, name, buf[:])
		switch err {
		case nil:
			if n == 1 && buf[0] == 'y' {
				return true, nil
			}
		case unix.ENODATA, unix.ENOTSUP, unix.ERANGE:
			// Absent, or a value longer than "y": not opaque.
		default:
			return false, hostError("lgetxattr", h, err)
		}
	}
	return false, nil
}

// isOverlayXattr reports whether name is overlayfs' own metadata, which must
// not leak into a flattened layer or an archive.
func isOverlayXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

type xattr struct {
	name  string
	value []byte
}

// xattrs returns the extended attributes of host path h, sorted by name and
// without overlayfs' own.
func xattrs(h string) ([]xattr, error) {
	size, err := unix.Llistxattr(h, nil)
	if err == unix.ENOTSUP {
		return nil, nil
	}
	if err != nil {
		return nil, hostError("llistxattr", h, err)
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(h, buf)
	if err != nil {
		return nil, hostError("llistxattr", h, err)
	}
	var attrs []xattr
	for name := range bytes.SplitSeq(buf[:size], []byte{0}) {
		if len(name) == 0 || isOverlayXattr(string(name)) {
			continue
		}
		x := xattr{name: string(name)}
		n, err := unix.Lgetxattr(h, x.name, nil)
		if err != nil {
			return nil, hostError("lgetxattr", h, err)
		}
		x.value = make([]byte, n)
		n, err = unix.Lgetxattr(h, x.name, x.value)
		if err != nil {
			return nil, hostError("lgetxattr", h, err)
		}
		x.value = x.value[:n]
		attrs = append(attrs, x)
	}
	slices.SortFunc(attrs, func(a, b xattr) int { return strings.Compare(a.name, b.name) })
	return attrs, nil
}

type dirent struct {
	name string
	st   unix.Stat_t
}

// listDir lists image directory p of one layer with lstat information.
func listDir(layer, p string) ([]dirent, error) {
	d, err := openBeneath(layer, p, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	ents := make([]dirent, len(names))
	for i, name := range names {
		ents[i].name = name
		if err := unix.Fstatat(int(d.Fd()), name, &ents[i].st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, hostError("lstat", filepath.Join(d.Name(), name), err)
		}
	}
	return ents, nil
}

// openBeneath opens image path p of the layer rooted at layer. The kernel
// refuses to cross any symlink or to leave the layer, so even a layer changed
// behind our back cannot redirect the open to another host file.
func openBeneath(layer, p string, flags int) (*os.File, error) {
	rel := strings.TrimPrefix(p, "/")
	if rel == "" {
		rel = "."
	}
	root, err := unix.Open(layer, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, hostError("open", layer, err)
	}
	defer unix.Close(root)
	how := &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NOCTTY),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	name := filepath.Join(layer, rel)
	for {
		fd, err := unix.Openat2(root, rel, how)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, hostError("openat2", name, err)
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}

// hostError wraps a failed host syscall. A name too long for the host can
// only come from a client path, so it is the client's error, reported without
// the host path.
func hostError(op, path string, err error) error {
	if err == unix.ENAMETOOLONG {
		return errdefs.InvalidArgument("file name too long")
	}
	return &os.PathError{Op: op, Path: path, Err: err}
}

// fileMode converts st_mode to an fs.FileMode as package os does.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}
