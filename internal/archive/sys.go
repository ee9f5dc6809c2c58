package archive

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Overlay xattrs. Archives and source trees must never set these themselves:
// trusted.overlay.redirect or .metacopy could make the kernel serve another
// layer's files, so only this package writes them, and only "opaque".
const (
	xattrOpaque          = "trusted.overlay.opaque"
	trustedOverlayPrefix = "trusted.overlay."
	userOverlayPrefix    = "user.overlay." // the same keys when mounted with userxattr
)

// isOverlayXattr reports whether key belongs to overlayfs and must not be
// copied from untrusted input.
func isOverlayXattr(key string) bool {
	return strings.HasPrefix(key, trustedOverlayPrefix) || strings.HasPrefix(key, userOverlayPrefix)
}

// node names a filesystem object without following a symlink in its final
// component: name inside the directory dirfd, or, when name is "", the
// object that dirfd itself refers to (dirfd may be an O_PATH descriptor).
type node struct {
	dirfd int
	name  string
}

// at returns the path and flags for a *at syscall on n.
func (n node) at(flags int) (string, int) {
	if n.name == "" {
		return "", flags | unix.AT_EMPTY_PATH
	}
	return n.name, flags
}

// procPath is a path for the path-only xattr syscalls. It reaches the object
// through the already-open (and so already-checked) directory descriptor,
// never through a path the archive controls.
func (n node) procPath() string {
	if n.name == "" {
		return fmt.Sprintf("/proc/self/fd/%d", n.dirfd)
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", n.dirfd, n.name)
}

func (n node) lchown(uid, gid int) error {
	p, fl := n.at(unix.AT_SYMLINK_NOFOLLOW)
	return unix.Fchownat(n.dirfd, p, uid, gid, fl)
}

// chmod sets mode on n, which must not be a symlink. It prefers fchmodat2
// (Linux 6.6) so the final component is never followed; older kernels fall
// back to plain fchmodat, which is safe because callers created n themselves
// or checked its type.
func (n node) chmod(mode uint32) error {
	p, fl := n.at(unix.AT_SYMLINK_NOFOLLOW)
	if n.name == "" {
		fl &^= unix.AT_SYMLINK_NOFOLLOW
	}
	err := unix.Fchmodat(n.dirfd, p, mode, fl)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		if n.name == "" {
			return unix.Chmod(n.procPath(), mode)
		}
		return unix.Fchmodat(n.dirfd, n.name, mode, 0)
	}
	return err
}

func (n node) utimes(atime, mtime unix.Timespec) error {
	p, fl := n.at(unix.AT_SYMLINK_NOFOLLOW)
	return unix.UtimesNanoAt(n.dirfd, p, []unix.Timespec{atime, mtime}, fl)
}

// setxattr sets key on n without following a symlink at n.
func (n node) setxattr(key string, value []byte) error {
	if n.name == "" {
		// Following /proc/self/fd/N is what reaches the object itself.
		return unix.Setxattr(n.procPath(), key, value, 0)
	}
	return unix.Lsetxattr(n.procPath(), key, value, 0)
}

// xattrs returns all extended attributes of n. A filesystem without xattr
// support yields none.
func (n node) xattrs() (map[string][]byte, error) {
	list := unix.Llistxattr
	get := unix.Lgetxattr
	if n.name == "" {
		list, get = unix.Listxattr, unix.Getxattr
	}
	p := n.procPath()
	var names []byte
	for {
		sz, err := list(p, nil)
		if err != nil {
			if isNotSupported(err) {
				return nil, nil
			}
			return nil, err
		}
		if sz == 0 {
			return nil, nil
		}
		names = make([]byte, sz)
		sz, err = list(p, names)
		if errors.Is(err, unix.ERANGE) {
			continue // grew in between
		}
		if err != nil {
			return nil, err
		}
		names = names[:sz]
		break
	}
	out := make(map[string][]byte)
	for _, key := range strings.Split(strings.TrimSuffix(string(names), "\x00"), "\x00") {
		if key == "" {
			continue
		}
		for {
			sz, err := get(p, key, nil)
			if errors.Is(err, unix.ENODATA) {
				break // removed in between
			}
			if err != nil {
				return nil, fmt.Errorf("get xattr %s: %w", key, err)
			}
			val := make([]byte, sz)
			sz, err = get(p, key, val)
			if errors.Is(err, unix.ERANGE) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("get xattr %s: %w", key, err)
			}
			out[key] = val[:sz]
			break
		}
	}
	return out, nil
}

// isNotSupported reports whether err means the filesystem or object type
// cannot hold the xattr (EOPNOTSUPP, e.g. no xattrs at all) or the namespace
// refuses it (EPERM, e.g. user.* on a symlink or device).
func isNotSupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM)
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// openInRoot opens p (relative to the directory root) as an O_PATH directory,
// resolving every symlink and ".." as if root were "/". This is the only way
// this package resolves a multi-component path that an archive controls.
func openInRoot(root int, p string) (int, error) {
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for range 64 {
		fd, err := unix.Openat2(root, p, how)
		// EAGAIN: a concurrent rename or mount raced the lookup; the kernel
		// asks us to retry rather than risk a wrong answer.
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		return fd, err
	}
	return -1, fmt.Errorf("openat2 %q: %w", p, unix.EAGAIN)
}

// readDirNames lists the directory name inside dirfd (or dirfd itself when
// name is ""), refusing to follow a symlink there.
func readDirNames(dirfd int, name string) ([]string, error) {
	if name == "" {
		name = "."
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return f.Readdirnames(-1)
}

// removeAllAt removes name inside dirfd and, if it is a directory, everything
// below it, without following symlinks.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	names, err := readDirNames(fd, "")
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := removeAllAt(fd, n); err != nil {
			return err
		}
	}
	err = unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}
