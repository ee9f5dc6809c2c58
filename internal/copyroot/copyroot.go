// Package copyroot assembles sandbox root filesystems by copying instead
// of mounting (an engine.RootFS), so that the engine runs where it may not
// mount overlayfs: tests without root, over a fake runtime.
//
// Mount copies the merged view of a chain of layers into the merged
// directory. Unmount compares that directory with the chain and writes
// what differs into the upper directory in overlayfs' form, as a kernel
// overlay would have left it: new and changed entries (a changed
// directory's metadata as the directory alone), a whiteout (a character
// device 0/0, which Linux lets anyone create) for each entry gone. Then it
// empties merged, as an unmount leaves the mount point.
//
// It is for tests, and simpler than a kernel overlay: every Mount copies
// the whole chain (no copy-up on write), hard links become copies,
// extended attributes, device nodes and sockets are not copied, and
// nothing is written to upper before Unmount, so a growth watcher sees
// the run's writes only then. Without root, ownership cannot be copied or
// changed: files belong to the caller, and ownership is not compared.
package copyroot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layerfs"
)

// Root is the copying RootFS. The zero value is not usable: call [New].
type Root struct {
	chown bool // root: ownership is copied and compared

	mu    sync.Mutex
	views map[string]view // by merged directory
}

type view struct {
	lowers []string
	upper  string
}

// New returns a Root.
func New() *Root { return &Root{chown: os.Geteuid() == 0, views: map[string]view{}} }

// Mount copies the merged view of lowers (top first) into merged, which
// must exist and be empty; work is not used.
func (r *Root) Mount(lowers []string, upper, work, merged string) error {
	merged = filepath.Clean(merged)
	c := &copier{chown: r.chown}
	err := layerfs.New(lowers).Walk(context.Background(), "/", func(e layerfs.Entry) error {
		dst := filepath.Join(merged, e.Path)
		if e.Path == "/" {
			return c.keepDir(dst, e.RawMode, e.UID, e.GID)
		}
		st := unix.Stat_t{Mode: e.RawMode, Uid: e.UID, Gid: e.GID}
		st.Mtim = unix.NsecToTimespec(e.ModTime.UnixNano())
		return c.entry(e.HostPath, &st, dst)
	})
	if err == nil {
		err = c.finish()
	}
	if err != nil {
		return fmt.Errorf("copyroot: copy the chain into %s: %w", merged, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.views[merged] = view{lowers: lowers, upper: upper}
	return nil
}

// Unmount writes what differs between merged and its chain into upper and
// empties merged. It returns nil for a merged it did not mount.
func (r *Root) Unmount(merged string) error {
	merged = filepath.Clean(merged)
	r.mu.Lock()
	v, ok := r.views[merged]
	delete(r.views, merged)
	r.mu.Unlock()
	if !ok {
		return nil
	}
	d := &differ{lower: layerfs.New(v.lowers), merged: merged, upper: v.upper, made: map[string]bool{"/": true},
		copier: &copier{chown: r.chown}}
	err := d.dir("/")
	if err == nil {
		err = d.finish()
	}
	if err != nil {
		return fmt.Errorf("copyroot: changes under %s: %w", merged, err)
	}
	if err := removeAll(merged); err != nil {
		return err
	}
	return os.Mkdir(merged, 0o755)
}

// removeAll removes dir and everything below it; without root, read-only
// directories in it are made writable first.
func removeAll(dir string) error {
	if os.Geteuid() != 0 {
		err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				err = os.Chmod(p, 0o700)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return os.RemoveAll(dir)
}

// copier copies host entries with their metadata. A directory gets its
// mode in finish, once everything is written into it: without root, a
// read-only directory could not be filled.
type copier struct {
	chown bool
	dirs  []pendingDir
}

type pendingDir struct {
	path string
	mode uint32
}

// keepDir gives the existing directory dst its owner (as root) now and mode
// in finish.
func (c *copier) keepDir(dst string, mode, uid, gid uint32) error {
	if err := c.meta(dst, 0, uid, gid, 0, false); err != nil {
		return err
	}
	c.dirs = append(c.dirs, pendingDir{dst, mode & 0o7777})
	return nil
}

// finish sets the modes of the directories made, deepest first.
func (c *copier) finish() error {
	for i := len(c.dirs) - 1; i >= 0; i-- {
		if err := unix.Chmod(c.dirs[i].path, c.dirs[i].mode); err != nil {
			return &fs.PathError{Op: "chmod", Path: c.dirs[i].path, Err: err}
		}
	}
	c.dirs = nil
	return nil
}

// entry copies the host entry src (of stat st) to dst, a directory with
// everything below it. Device nodes and sockets are skipped.
func (c *copier) entry(src string, st *unix.Stat_t, dst string) error {
	mode := fs.FileMode(st.Mode & 0o7777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
		return c.keepDir(dst, st.Mode, st.Uid, st.Gid)
	case unix.S_IFREG:
		if err := copyFile(src, dst); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
	case unix.S_IFIFO:
		if err := unix.Mkfifo(dst, 0o600); err != nil {
			return err
		}
	default:
		return nil
	}
	return c.meta(dst, mode, st.Uid, st.Gid, st.Mtim.Nano(), st.Mode&unix.S_IFMT != unix.S_IFLNK)
}

// meta gives dst its owner (as root), mode (not for symlinks) and, when
// mtime is not 0, modification time.
func (c *copier) meta(dst string, mode fs.FileMode, uid, gid uint32, mtime int64, chmod bool) error {
	if c.chown {
		if err := os.Lchown(dst, int(uid), int(gid)); err != nil {
			return err
		}
	}
	if chmod {
		if err := unix.Chmod(dst, uint32(mode)); err != nil {
			return &fs.PathError{Op: "chmod", Path: dst, Err: err}
		}
	}
	if mtime != 0 {
		ts := []unix.Timespec{unix.NsecToTimespec(mtime), unix.NsecToTimespec(mtime)}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &fs.PathError{Op: "utimes", Path: dst, Err: err}
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// differ writes the differences between merged and lower into upper.
type differ struct {
	*copier
	lower         *layerfs.FS
	merged, upper string
	made          map[string]bool // directories created in upper
}

func (d *differ) host(p string) string { return filepath.Join(d.merged, p) }

// dir diffs the entries of p, a directory in both merged and lower.
func (d *differ) dir(p string) error {
	ents, err := os.ReadDir(d.host(p))
	if err != nil {
		return err
	}
	lowerEnts, err := d.lower.ReadDir(p)
	if err != nil {
		return err
	}
	gone := map[string]bool{}
	for _, e := range lowerEnts {
		gone[e.Name] = true
	}
	for _, e := range ents {
		delete(gone, e.Name())
		if err := d.entry(path.Join(p, e.Name())); err != nil {
			return err
		}
	}
	for name := range gone {
		if err := d.parents(p); err != nil {
			return err
		}
		wh := filepath.Join(d.upper, p, name)
		if err := unix.Mknod(wh, unix.S_IFCHR, 0); err != nil {
			return &fs.PathError{Op: "mknod whiteout", Path: wh, Err: err}
		}
	}
	return nil
}

// entry diffs image path p, which exists in merged.
func (d *differ) entry(p string) error {
	var st unix.Stat_t
	if err := unix.Lstat(d.host(p), &st); err != nil {
		return &fs.PathError{Op: "lstat", Path: d.host(p), Err: err}
	}
	le, err := d.lower.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) || errdefs.IsNotFound(err) {
		return d.copyOut(p, &st)
	}
	if err != nil {
		return err
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if isDir && le.Mode.IsDir() {
		if st.Mode != le.RawMode || d.chown && (st.Uid != le.UID || st.Gid != le.GID) {
			if err := d.parents(p); err != nil {
				return err
			}
		}
		return d.dir(p)
	}
	same, err := d.same(p, &st, le)
	if err != nil || same {
		return err
	}
	return d.copyOut(p, &st)
}

// same reports whether the non-directory at p is unchanged from le.
func (d *differ) same(p string, st *unix.Stat_t, le layerfs.Entry) (bool, error) {
	if st.Mode != le.RawMode || d.chown && (st.Uid != le.UID || st.Gid != le.GID) {
		return false, nil
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		target, err := os.Readlink(d.host(p))
		return err == nil && target == le.Linkname, err
	case unix.S_IFREG:
		if st.Size != le.Size || st.Mtim.Nano() != le.ModTime.UnixNano() {
			return false, nil
		}
		a, err := os.ReadFile(d.host(p))
		if err != nil {
			return false, err
		}
		b, err := os.ReadFile(le.HostPath)
		return err == nil && bytes.Equal(a, b), err
	}
	return true, nil
}

// copyOut copies merged's p (stat st), and everything below it, to upper.
func (d *differ) copyOut(p string, st *unix.Stat_t) error {
	if err := d.parents(path.Dir(p)); err != nil {
		return err
	}
	dst := filepath.Join(d.upper, p)
	if err := d.copier.entry(d.host(p), st, dst); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	d.made[p] = true
	ents, err := os.ReadDir(d.host(p))
	if err != nil {
		return err
	}
	for _, e := range ents {
		var cst unix.Stat_t
		cp := path.Join(p, e.Name())
		if err := unix.Lstat(d.host(cp), &cst); err != nil {
			return &fs.PathError{Op: "lstat", Path: d.host(cp), Err: err}
		}
		if err := d.copyOut(cp, &cst); err != nil {
			return err
		}
	}
	return nil
}

// parents makes directory p and its ancestors in upper, with merged's
// metadata, as an overlay's copy-up does.
func (d *differ) parents(p string) error {
	if d.made[p] {
		return nil
	}
	if err := d.parents(path.Dir(p)); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(d.host(p), &st); err != nil {
		return &fs.PathError{Op: "lstat", Path: d.host(p), Err: err}
	}
	dst := filepath.Join(d.upper, p)
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	d.made[p] = true
	return d.keepDir(dst, st.Mode, st.Uid, st.Gid)
}
