package engine

import (
	"fmt"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"
)

// The layer store, the runs' upper directories, imports' staging and the
// metadata database share the engine home's filesystem. Filling it fails
// commits halfway and leaves SQLite no room to record why, so arbor keeps
// a reserve free: below it, new runs that would save an image and imports
// are refused at admission (disposable runs write only into a directory
// removed at their end, and still run); a run that drives the free space
// below half the reserve is stopped and saves nothing, so what is left
// is room for the commits and records already under way.

// diskSpace is the engine home's filesystem: bytes available to arbor
// (not counting the blocks the filesystem keeps for root, which the rest
// of the host needs when it is full) and its size.
func (e *Engine) diskSpace() (avail, size int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(e.cfg.Home, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", e.cfg.Home, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// DefaultDiskReserve is the reserve on a filesystem of size bytes: 5 % of
// it, so that the margin grows with what a busy store writes at once, and
// at least 1 GiB, room for a few commits, the database's write-ahead log
// and the daemon's logs; but at most a quarter of a small filesystem, which
// would otherwise be unusable.
func DefaultDiskReserve(size int64) int64 {
	return min(max(1<<30, size/20), size/4)
}

// diskReserve is the reserve on a filesystem of size bytes: the
// configured one, or the default; 0 when the check is off.
func (e *Engine) diskReserve(size int64) int64 {
	switch r := e.cfg.DiskReserveBytes; {
	case r < 0:
		return 0
	case r > 0:
		return r
	}
	return DefaultDiskReserve(size)
}

// checkDisk refuses new work that stores data while the home's filesystem
// is under its reserve.
func (e *Engine) checkDisk() error {
	avail, size, err := e.diskSpace()
	if err != nil {
		return err
	}
	if reserve := e.diskReserve(size); avail < reserve {
		return errdefs.InsufficientStorage("the layer store's filesystem (%s) has %s free, under its reserve of %s (--disk-reserve): runs that save an image, imports and uploads are refused until space is freed (disposable runs still run): delete images (arbor rmi), collect them (arbor gc), grow the filesystem, or lower --disk-reserve",
			e.cfg.Home, humanize.IBytes(uint64(avail)), humanize.IBytes(uint64(reserve)))
	}
	return nil
}

// diskExhausted returns the error a run is stopped with when the free
// space has fallen below half the reserve, nil while there is more.
func (e *Engine) diskExhausted() error {
	avail, size, err := e.diskSpace()
	if err != nil {
		return nil // cannot tell: the growth cap and the quota still bound the run
	}
	if reserve := e.diskReserve(size); avail < reserve/2 {
		return fmt.Errorf("the layer store's filesystem (%s) filled up while the run wrote: %s free, under half its reserve of %s; nothing was saved: free space (arbor rmi, arbor gc) or grow the filesystem, then run it again",
			e.cfg.Home, humanize.IBytes(uint64(avail)), humanize.IBytes(uint64(reserve)))
	}
	return nil
}
