package layers

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/layerfs"
)

// A sandbox that goes on running after its step was committed (see the
// engine's continue.go) keeps writing into the same overlay upper
// directory, so the next step's layer is what changed in that directory
// since the last commit: [DiffUpper] walks it, compares each entry with
// the [Manifest] taken at the last commit and copies what changed into a
// new layer, with whiteouts for what went. The cost is one walk of the
// upper directory (its entries, not the image's) plus the changed data.

// Manifest is an upper directory's state as last committed: path relative
// to the upper directory → what a change to the entry would change.
type Manifest map[string]entryState

// entryState holds what any change to an entry changes: its inode (a
// replaced file), its ctime (content, mode, owner, xattrs, links, a
// rename), and, in case a filesystem keeps ctime coarse, size and mtime.
type entryState struct {
	ino    uint64
	mode   uint32
	size   int64
	blocks int64
	links  uint64
	mtime  unix.Timespec
	ctime  unix.Timespec
	rdev   uint64
}

func stateOf(st *unix.Stat_t) entryState {
	return entryState{ino: st.Ino, mode: st.Mode, size: st.Size, blocks: st.Blocks, links: st.Nlink, mtime: st.Mtim, ctime: st.Ctim, rdev: st.Rdev}
}

// same reports whether an entry in state s is unchanged since state old.
// A whiteout that is still one is: overlayfs links its whiteouts to one
// shared inode, whose link count and ctime change with every other
// whiteout made or removed.
func (s entryState) same(old entryState) bool {
	return s == old || (s.whiteout() && old.whiteout())
}

// whiteout reports whether the entry is an overlay whiteout.
func (s entryState) whiteout() bool { return s.mode&unix.S_IFMT == unix.S_IFCHR && s.rdev == 0 }

// Linked reports whether a file in the directory has several names. The
// engine does not continue a sandbox then: a cold run's overlay copies a
// file up alone when one of its names is written, so its other names keep
// the old contents, while in a continued sandbox's upper directory the
// names share one inode and all change.
func (m Manifest) Linked() bool {
	for _, s := range m {
		// Overlayfs links its whiteouts to one shared inode: those are no
		// file with several names.
		if s.links > 1 && s.mode&unix.S_IFMT == unix.S_IFREG {
			return true
		}
	}
	return false
}

// Bytes is what the directory the manifest was taken of uses on disk, as
// the engine counts it: allocated blocks plus perInode per inode, files
// with several links once.
func (m Manifest) Bytes(perInode int64) int64 {
	var n int64
	seen := map[uint64]bool{}
	for _, s := range m {
		if s.links > 1 && s.mode&unix.S_IFMT != unix.S_IFDIR {
			if seen[s.ino] {
				continue
			}
			seen[s.ino] = true
		}
		n += s.blocks*512 + perInode
	}
	return n
}

// DiffUpper writes into dst (an empty directory on a filesystem that
// takes device nodes and trusted xattrs) the layer that turns the image
// whose top was committed from upper when prev was taken into the image
// upper holds now: every entry that is new or changed since prev, the
// directories above it, and a whiteout for every path of prev that is
// gone. A nil prev means nothing of upper was committed yet: the layer is
// a copy of upper. It returns upper's manifest now and how many entries
// the layer holds (0: nothing changed). Nothing may write to upper
// meanwhile. A change is seen by its ctime (see settle).
func DiffUpper(upper string, prev Manifest, dst string) (Manifest, int, error) {
	d := &differ{upper: upper, dst: dst, prev: prev, now: Manifest{}, made: map[string]bool{"": true}, links: map[uint64]string{}}
	err := filepath.WalkDir(upper, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == upper {
			// The layer's root is upper's, as when upper itself is the layer.
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return &os.PathError{Op: "lstat", Path: p, Err: err}
			}
			d.dirs = append(d.dirs, "")
			return setMeta(p, dst, &st, false)
		}
		rel := p[len(upper)+1:]
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		s := stateOf(&st)
		d.now[rel] = s
		if old, ok := prev[rel]; ok && s.same(old) {
			return nil
		}
		return d.copy(rel, &st)
	})
	if err != nil {
		return nil, 0, err
	}
	// Gone since prev: a whiteout hides the committed entry.
	var gone []string
	for rel := range prev {
		if _, ok := d.now[rel]; !ok {
			gone = append(gone, rel)
		}
	}
	if err := d.whiteouts(gone); err != nil {
		return nil, 0, err
	}
	if err := d.finishDirs(); err != nil {
		return nil, 0, err
	}
	settle(filepath.Dir(dst), d.now)
	return d.now, d.n, nil
}

// whiteouts writes a whiteout for each path of gone that is not back in
// d.now. Below a path that is gone too, or that is no directory any more,
// the parent's whiteout or the new entry hides it already.
func (d *differ) whiteouts(gone []string) error {
	sort.Strings(gone)
	for _, rel := range gone {
		parent := filepath.Dir(rel)
		if parent == "." {
			parent = ""
		}
		if parent != "" {
			if s, ok := d.now[parent]; !ok || s.mode&unix.S_IFMT != unix.S_IFDIR {
				continue
			}
		}
		if _, back := d.now[rel]; back {
			continue // a new entry of the same name hides it
		}
		if err := d.parents(rel); err != nil {
			return err
		}
		if err := unix.Mknod(filepath.Join(d.dst, rel), unix.S_IFCHR, 0); err != nil {
			return &os.PathError{Op: "mknod whiteout", Path: rel, Err: err}
		}
		d.n++
	}
	return nil
}

// finishDirs gives the directories made in dst their times, last: filling
// them changed their mtime.
func (d *differ) finishDirs() error {
	sort.Sort(sort.Reverse(sort.StringSlice(d.dirs)))
	for _, rel := range d.dirs {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(d.upper, rel), &st); err != nil {
			return err
		}
		ts := []unix.Timespec{st.Atim, st.Mtim}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(d.dst, rel), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "utimensat", Path: rel, Err: err}
		}
	}
	return nil
}

// settle makes sure that any later change to an entry of m changes its
// ctime, which the next DiffUpper compares. Where a filesystem stamps
// changes with the kernel's coarse clock (before Linux 6.13's multigrain
// timestamps, as on Debian 12's 6.1), a change in the same clock tick as
// the last one would keep the ctime the manifest holds; so there it waits
// until the coarse clock has passed the newest ctime in m, at most a tick.
// dir is a directory on the upper directory's filesystem to probe it in.
func settle(dir string, m Manifest) {
	if fineCtimes(dir) {
		return // a change after a stat always gets a later ctime
	}
	var newest int64
	for _, s := range m {
		newest = max(newest, s.ctime.Nano())
	}
	for {
		var now unix.Timespec
		if unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &now) != nil || now.Nano() > newest {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

var (
	fineOnce sync.Once
	fine     bool
)

// fineCtimes is probeFineCtimes; a test replaces it.
var fineCtimes = probeFineCtimes

// probeFineCtimes reports whether the filesystem of dir gives a change made
// right after a stat a later ctime than the stat saw (multigrain
// timestamps). Probed once, on a scratch file in dir.
func probeFineCtimes(dir string) bool {
	fineOnce.Do(func() {
		f, err := os.CreateTemp(dir, "ctime-probe-*")
		if err != nil {
			return
		}
		defer os.Remove(f.Name())
		defer f.Close()
		for range 5 { // on a coarse clock, all five straddling a tick is unlikely
			var a, b unix.Stat_t
			if _, err := f.Write([]byte{1}); err != nil || unix.Fstat(int(f.Fd()), &a) != nil {
				return
			}
			if _, err := f.Write([]byte{2}); err != nil || unix.Fstat(int(f.Fd()), &b) != nil {
				return
			}
			if a.Ctim == b.Ctim {
				return
			}
		}
		fine = true
	})
	return fine
}

type differ struct {
	upper, dst string
	prev, now  Manifest
	made       map[string]bool   // directories made in dst
	dirs       []string          // of them, those whose times are still to set
	links      map[uint64]string // inode with several links → its first copy
	n          int               // entries in the layer
}

// parents makes the directories above rel in dst, as they are in upper.
func (d *differ) parents(rel string) error {
	parent := filepath.Dir(rel)
	if parent == "." || d.made[parent] {
		return nil
	}
	if err := d.parents(parent); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(d.upper, parent), &st); err != nil {
		return &os.PathError{Op: "lstat", Path: parent, Err: err}
	}
	return d.copy(parent, &st)
}

// copy copies the entry rel of upper (stat st) into dst with its metadata.
func (d *differ) copy(rel string, st *unix.Stat_t) error {
	if d.made[rel] {
		return nil // made as a parent already
	}
	if err := d.parents(rel); err != nil {
		return err
	}
	src, target := filepath.Join(d.upper, rel), filepath.Join(d.dst, rel)
	d.n++
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := os.Mkdir(target, 0o700); err != nil {
			return err
		}
		d.made[rel] = true
		d.dirs = append(d.dirs, rel)
		return setMeta(src, target, st, false)
	case unix.S_IFREG:
		if st.Nlink > 1 {
			if first, ok := d.links[st.Ino]; ok {
				return os.Link(first, target)
			}
			d.links[st.Ino] = target
		}
		if err := copyFile(src, target, st.Size); err != nil {
			return err
		}
	case unix.S_IFLNK:
		to, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(to, target); err != nil {
			return err
		}
	default: // devices, whiteouts, fifos, sockets
		if err := unix.Mknod(target, st.Mode, int(st.Rdev)); err != nil {
			return &os.PathError{Op: "mknod", Path: target, Err: err}
		}
	}
	return setMeta(src, target, st, true)
}

func copyFile(src, target string, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	return errors.Join(layerfs.CopySparse(out, in, size), out.Close())
}

// setMeta gives target src's owner, mode, every xattr (overlay's own
// included: the layer is upper's, as a cold run's commit moves it) and,
// unless it is a directory still being filled, its times. chown goes
// first: it clears setuid and setgid bits and file capabilities.
func setMeta(src, target string, st *unix.Stat_t, times bool) error {
	if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Chmod(target, st.Mode&0o7777); err != nil {
			return &os.PathError{Op: "chmod", Path: target, Err: err}
		}
	}
	if err := copyXattrs(src, target); err != nil {
		return err
	}
	if !times {
		return nil
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: target, Err: err}
	}
	return nil
}

func copyXattrs(src, target string) error {
	size, err := unix.Llistxattr(src, nil)
	if err == unix.ENOTSUP || (err == nil && size == 0) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "llistxattr", Path: src, Err: err}
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(src, buf); err != nil {
		return &os.PathError{Op: "llistxattr", Path: src, Err: err}
	}
	for name := range bytes.SplitSeq(buf[:size], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		n := string(name)
		sz, err := unix.Lgetxattr(src, n, nil)
		if err != nil {
			return &os.PathError{Op: "lgetxattr " + n, Path: src, Err: err}
		}
		v := make([]byte, sz)
		if sz, err = unix.Lgetxattr(src, n, v); err != nil {
			return &os.PathError{Op: "lgetxattr " + n, Path: src, Err: err}
		}
		if err := unix.Lsetxattr(target, n, v[:sz], 0); err != nil {
			if strings.HasPrefix(n, "security.") && err == unix.EOPNOTSUPP {
				continue // a label the layer's filesystem does not keep
			}
			return fmt.Errorf("lsetxattr %s on %s: %w", n, target, err)
		}
	}
	return nil
}
