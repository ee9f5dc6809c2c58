package layers

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A syncfs makes durable everything written to the whole filesystem, not
// only the layer: on a disk others write to (the daemon's own boots, logs,
// anyone's builds) it waits for all of their dirty data. An agent step
// that came back after a one-second pause spent 7-11 ms in it against
// 1.5-3 ms straight back, 1 ms with its few entries synced one by one. So
// a small tree is synced entry by entry and only a large one (where one
// syncfs beats thousands of fsyncs) with a syncfs.

// smallTree is the most entries a tree synced entry by entry may hold.
const smallTree = 32

// fsyncFD is unix.Fsync (a counter in tests).
var fsyncFD = unix.Fsync

// errLarge ends the walk of a tree that is not small.
var errLarge = errors.New("more than smallTree entries")

// syncSmall makes the tree at dir durable entry by entry if it holds at
// most smallTree entries, and reports false, having synced nothing, if it
// holds more. Regular files and directories are fsynced (a directory's
// fsync makes its entries durable); the other entries (symlinks, device
// nodes, overlay whiteouts) cannot be opened to be synced, and are made
// durable by their directory's fsync, which on a journaling filesystem
// (ext4, xfs) commits the journal with their creation in it.
//
// With rootOnly, of the directories only dir itself is fsynced: see
// SyncDiffed.
func syncSmall(dir string, rootOnly bool) (bool, error) {
	var files, dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case len(files)+len(dirs) >= smallTree:
			return errLarge
		case d.Type().IsRegular():
			files = append(files, p)
		case d.IsDir():
			dirs = append(dirs, p)
		}
		return nil
	})
	if err == errLarge {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if rootOnly {
		dirs = []string{dir}
	}
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, p := range files {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return false, &fs.PathError{Op: "open", Path: p, Err: err}
		}
		fds = append(fds, fd)
		// Start every file's writeback before the first fsync waits: their
		// blocks are then allocated in the journal transaction that fsync
		// commits, and the fsyncs after it have little left to do.
		_ = unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	for _, p := range dirs {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return false, &fs.PathError{Op: "open", Path: p, Err: err}
		}
		fds = append(fds, fd)
	}
	for _, fd := range fds {
		if err := fsyncFD(fd); err != nil {
			return false, err
		}
	}
	return true, nil
}

// SyncDiffed makes a layer that DiffUpper or Tracker.Diff wrote into dir
// durable, as SyncTree does, with one directory fsync instead of one per
// directory: the diff changes dir itself last (its times), and on a
// journaling filesystem a directory's fsync makes durable every metadata
// change made before its own last one (ext4 commits its whole running
// transaction, xfs forces its log up to that change). Each directory
// fsync saved is a journal commit and a cache flush of whatever else the
// filesystem has pending: 0.15-0.5 ms apiece on a busy disk. A large
// layer gets the one shared syncfs, as from SyncTree.
func SyncDiffed(dir string) error {
	if small, err := syncSmall(dir, true); small || err != nil {
		if err != nil {
			return fmt.Errorf("sync layer: %w", err)
		}
		return nil
	}
	return SyncTree(dir)
}
