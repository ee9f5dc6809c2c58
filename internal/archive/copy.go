package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// CopyDir copies the host directory tree src into the empty layer directory
// dst, preserving type, mode (including setuid, setgid and sticky), owner,
// times, xattrs, hard links within the tree, fifos and device nodes.
// Symlinks are copied, never followed: src is walked with O_NOFOLLOW
// descriptors, so a tree that changes during the copy cannot make it read
// outside src. Sockets are skipped. Overlay xattrs are not copied, and
// security.* xattrs the destination refuses are dropped quietly.
func CopyDir(ctx context.Context, src, dst string) (Stats, error) {
	sfd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Stats{}, &os.PathError{Op: "open", Path: src, Err: err}
	}
	defer unix.Close(sfd)
	dfd, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Stats{}, &os.PathError{Op: "open", Path: dst, Err: err}
	}
	defer unix.Close(dfd)
	c := &copier{ctx: ctx, src: src, dstRoot: dfd, links: make(map[inode]string)}
	if err := c.dir(sfd, dfd, "."); err != nil {
		return c.stats, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return c.stats, err
	}
	if err := c.meta(node{sfd, ""}, node{dfd, ""}, &st); err != nil {
		return c.stats, fmt.Errorf("copy %s: %w", src, err)
	}
	return c.stats, nil
}

type inode struct{ dev, ino uint64 }

type copier struct {
	ctx     context.Context
	src     string
	dstRoot int
	links   map[inode]string // first destination path of each multiply-linked inode
	stats   Stats
}

// dir copies the contents of the directory sfd into dfd; rel is its path
// relative to the roots.
func (c *copier) dir(sfd, dfd int, rel string) error {
	names, err := readDirNames(sfd, "")
	if err != nil {
		return fmt.Errorf("copy %s: %w", path.Join(c.src, rel), err)
	}
	sort.Strings(names) // deterministic choice of which hard link comes first
	for _, name := range names {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		r := path.Join(rel, name)
		if err := c.entry(sfd, dfd, name, r); err != nil {
			return fmt.Errorf("copy %s: %w", path.Join(c.src, r), err)
		}
	}
	return nil
}

func (c *copier) entry(sfd, dfd int, name, rel string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(sfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // removed while we copied
		}
		return err
	}
	s, d := node{sfd, name}, node{dfd, name}
	typ := st.Mode & unix.S_IFMT
	if typ != unix.S_IFDIR && typ != unix.S_IFSOCK && st.Nlink > 1 {
		key := inode{st.Dev, st.Ino}
		if first, ok := c.links[key]; ok {
			// Flags 0: link the first copy itself, even if it is a symlink.
			if err := unix.Linkat(c.dstRoot, first, dfd, name, 0); err != nil {
				return err
			}
			c.stats.Hardlinks++
			return nil
		}
		defer func() { c.links[key] = rel }()
	}
	switch typ {
	case unix.S_IFDIR:
		return c.subdir(sfd, dfd, name, rel)
	case unix.S_IFREG:
		if err := c.file(sfd, dfd, name, &st); err != nil {
			return err
		}
		c.stats.Files++
	case unix.S_IFLNK:
		target, err := readlinkat(sfd, name)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, dfd, name); err != nil {
			return err
		}
		c.stats.Symlinks++
	case unix.S_IFIFO, unix.S_IFCHR, unix.S_IFBLK:
		if err := unix.Mknodat(dfd, name, typ|0o600, int(st.Rdev)); err != nil {
			return err
		}
		c.stats.Files++
	default: // sockets belong to a running process, not to an image
		c.stats.Skipped++
		return nil
	}
	return c.meta(s, d, &st)
}

func (c *copier) subdir(sfd, dfd int, name, rel string) error {
	csfd, err := unix.Openat(sfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(csfd)
	var st unix.Stat_t
	if err := unix.Fstat(csfd, &st); err != nil {
		return err
	}
	if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
		return err
	}
	cdfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(cdfd)
	c.stats.Dirs++
	if err := c.dir(csfd, cdfd, rel); err != nil {
		return err
	}
	// After the contents, so adding them does not change the copied mtime.
	return c.meta(node{csfd, ""}, node{cdfd, ""}, &st)
}

func (c *copier) file(sfd, dfd int, name string, st *unix.Stat_t) error {
	// O_NONBLOCK: if a fifo was swapped in since the stat, do not hang on it.
	in, err := unix.Openat(sfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	inf := os.NewFile(uintptr(in), name)
	defer inf.Close()
	var now unix.Stat_t
	if err := unix.Fstat(in, &now); err != nil {
		return err
	}
	if now.Mode&unix.S_IFMT != unix.S_IFREG || now.Ino != st.Ino || now.Dev != st.Dev {
		return fmt.Errorf("file changed type while copying; retry on a quiescent tree")
	}
	out, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	outf := os.NewFile(uintptr(out), name)
	defer outf.Close()
	// *os.File to *os.File: io.Copy uses copy_file_range, so same-filesystem
	// copies stay in the kernel (and may share extents).
	n, err := io.Copy(outf, &ctxReader{ctx: c.ctx, r: inf})
	c.stats.Bytes += n
	if err != nil {
		return err
	}
	return outf.Close()
}

// meta copies owner, then mode (chown clears setuid/setgid), then xattrs
// (chown clears security.capability), then times from s to d.
func (c *copier) meta(s, d node, st *unix.Stat_t) error {
	if err := d.lchown(int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := d.chmod(st.Mode & 0o7777); err != nil {
			return err
		}
	}
	xattrs, err := s.xattrs()
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(xattrs))
	for k := range xattrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if isOverlayXattr(k) {
			continue
		}
		if err := d.setxattr(k, xattrs[k]); err != nil {
			if strings.HasPrefix(k, "security.") {
				continue // e.g. an SELinux label the destination policy refuses
			}
			return fmt.Errorf("set xattr %s: %w", k, err)
		}
	}
	return d.utimes(st.Atim, st.Mtim)
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}
