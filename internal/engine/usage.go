package engine

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
	"golang.org/x/sys/unix"
)

// inodeCharge is what each file, directory, symlink or device node costs
// against growth caps and storage quotas on top of its data blocks: an inode
// and its directory entry use disk and a finite inode table even when the
// file is empty, so 25,000 empty directories are not free.
const inodeCharge = 4096

// treeUsage is what a directory tree uses on disk.
type treeUsage struct {
	bytes   int64 // allocated blocks (holes are free) plus inodeCharge per inode, hard links once
	inodes  int64
	biggest int64 // apparent size of the largest regular file
}

// scanTree measures the tree under p (p itself is not counted, so an empty
// directory uses 0).
func scanTree(p string) treeUsage {
	var u treeUsage
	seen := map[uint64]bool{} // inodes with several links, counted once
	// The callback never fails, so neither does the walk.
	_ = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == p {
			return nil // vanished or unreadable: what is left is what is counted
		}
		var st unix.Stat_t
		if unix.Lstat(path, &st) != nil {
			return nil
		}
		if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		u.bytes += st.Blocks*512 + inodeCharge
		u.inodes++
		if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size > u.biggest {
			u.biggest = st.Size
		}
		return nil
	})
	return u
}

// dirBytes is what the tree under p uses on disk (see scanTree): the size
// recorded for layers and charged against caps and quotas.
func dirBytes(p string) int64 { return scanTree(p).bytes }

// quotaLeft is what account may still add to its storage: the quota less
// what is stored and what its other running operations have written so far
// (self excluded). limited is false when there is no quota.
func (e *Engine) quotaLeft(ctx context.Context, account string, self *activeOp) (left int64, limited bool, err error) {
	if e.cfg.MaxStorageBytes <= 0 {
		return 0, false, nil
	}
	stored, err := e.storedBytes(ctx, account)
	if err != nil {
		return 0, true, err
	}
	var live int64
	e.mu.Lock()
	for _, a := range e.active {
		if a != self && a.account == account {
			live += a.growth.Load()
		}
	}
	e.mu.Unlock()
	return e.cfg.MaxStorageBytes - stored - live, true, nil
}

// growthLimit is the most run p may write: its growth cap, or what is left
// of the account's quota when that is less (quota reports which). A
// disposable run stores nothing, so only its cap bounds it.
func (e *Engine) growthLimit(ctx context.Context, p *runPlan) (limit int64, quota bool) {
	limit = p.maxLayer
	if p.meta.Disposable {
		return limit, false
	}
	left, limited, err := e.quotaLeft(ctx, p.account, e.activeOf(p.op))
	if err != nil {
		e.log.Warn("read account usage", "operation", p.op, "account", p.account, "err", err)
		return limit, false
	}
	if limited && left < limit {
		return max(left, 0), true
	}
	return limit, false
}

// sizeCapError says which limit a run outgrew and that nothing was saved.
func (e *Engine) sizeCapError(limit int64, quota bool) error {
	if quota {
		return fmt.Errorf("the run wrote more than the %d bytes left of its account's storage quota (%d bytes); nothing was saved: delete images (arbor rmi) or write less", limit, e.cfg.MaxStorageBytes)
	}
	return fmt.Errorf("the run wrote more than its filesystem growth cap of %d bytes (resources_limits.max_layer_bytes; files, directories and links all count, in disk blocks plus %d bytes per inode); nothing was saved: write less or raise the cap", limit, inodeCharge)
}

// checkGrowth measures upper once the run is over and fails it, with a
// size_cap event, when it outgrew its limit: many small files the watcher
// did not see in time, or one file cut short at the file-size limit
// (RLIMIT_FSIZE is the limit plus one byte, so a cut file is bigger than
// the limit). u is the measurement, for the layer's recorded size.
func (e *Engine) checkGrowth(ctx context.Context, p *runPlan, upper string) (treeUsage, error) {
	u := scanTree(upper)
	limit, quota := e.growthLimit(ctx, p)
	if u.bytes <= limit && u.biggest <= limit {
		return u, nil
	}
	over := u.bytes
	if u.biggest > limit {
		over = u.biggest // the file cut short at the limit
	}
	e.events.emit(ctx, p.op, 0, oplog.EventSizeCap, oplog.EventDataSizeCap{LimitBytes: limit, FileSize: over})
	return u, e.sizeCapError(limit, quota)
}

// stagingKey carries an import's stagingWatch in its context.
type stagingKey struct{}

// stagingWatch measures the directories an import writes while it writes
// them, so the account's storage quota holds during extraction and not
// only at admission: a small gzip that expands to gigabytes is stopped
// when it crosses the quota.
type stagingWatch struct {
	mu   sync.Mutex
	dirs []string
	done int64 // bytes of layers already moved into the store, not yet recorded
}

// stagingDir makes a fresh directory on the layer store's filesystem for
// an import to fill, watched by ctx's stagingWatch if any.
func (e *Engine) stagingDir(ctx context.Context) (string, error) {
	dir, err := os.MkdirTemp(e.layersTmp(), "import-*")
	if err != nil {
		return "", err
	}
	if w, ok := ctx.Value(stagingKey{}).(*stagingWatch); ok {
		w.mu.Lock()
		w.dirs = append(w.dirs, dir)
		w.mu.Unlock()
	}
	return dir, nil
}

// stagedLayer records that an import moved a layer of n bytes out of its
// staging directory into the store.
func stagedLayer(ctx context.Context, n int64) {
	if w, ok := ctx.Value(stagingKey{}).(*stagingWatch); ok {
		w.mu.Lock()
		w.done += n
		w.mu.Unlock()
	}
}

func (w *stagingWatch) bytes() int64 {
	w.mu.Lock()
	dirs, n := append([]string(nil), w.dirs...), w.done
	w.mu.Unlock()
	for _, d := range dirs {
		n += dirBytes(d)
	}
	return n
}

// quotaExceeded is the cause an import is cancelled with when it outgrows
// the account's quota.
type quotaExceeded struct{ err error }

func (q quotaExceeded) Error() string { return q.err.Error() }

func (q quotaExceeded) Unwrap() error { return q.err }

// watchImport returns ctx carrying a stagingWatch for import operation a,
// cancelled with a quotaExceeded cause (after a size_cap event) when what
// the import has written would take the account past its quota. stop ends
// the watch.
func (e *Engine) watchImport(ctx context.Context, a *activeOp) (context.Context, func()) {
	if e.cfg.MaxStorageBytes <= 0 || a == nil {
		return ctx, func() {}
	}
	w := &stagingWatch{}
	ctx, cancel := context.WithCancelCause(context.WithValue(ctx, stagingKey{}, w))
	stop := pollGrowth(ctx, func() bool {
		n := w.bytes()
		a.growth.Store(n)
		left, _, err := e.quotaLeft(ctx, a.account, a)
		if err == nil && n > left {
			e.events.emit(ctx, a.id, 0, oplog.EventSizeCap, oplog.EventDataSizeCap{LimitBytes: max(left, 0), FileSize: n})
			cancel(quotaExceeded{errdefs.Forbidden("the import wrote %d bytes, more than the %d bytes left of the account's storage quota (%d bytes); nothing was saved: delete images (arbor rmi) or import a smaller image", n, max(left, 0), e.cfg.MaxStorageBytes)})
			return true
		}
		return false
	})
	return ctx, func() {
		stop()
		cancel(nil)
		a.growth.Store(0) // stored now, or removed: no longer in flight
	}
}

// pollGrowth calls check every growthTick (less often when a measure is
// slow, see nextTick) until check returns true, ctx ends or stop is called;
// stop returns once the loop has ended.
func pollGrowth(ctx context.Context, check func() (done bool)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for wait := growthTick; ; {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			start := time.Now()
			if check() {
				return
			}
			wait = nextTick(time.Since(start))
		}
	}()
	return func() { close(done); wg.Wait() }
}

// growthTick is how often a run's or an import's disk use is measured, at
// least; a large tree is measured less often (nextTick) so that watching
// never costs more than a fifth of a core.
const growthTick = 200 * time.Millisecond

func nextTick(scan time.Duration) time.Duration { return max(growthTick, 4*scan) }

// checkImportQuota fails an import whose new layers (n bytes) would take
// the account past its quota.
func (e *Engine) checkImportQuota(ctx context.Context, account string, n int64) error {
	left, limited, err := e.quotaLeft(ctx, account, e.activeOf(opOf(ctx)))
	if err != nil || !limited || n <= left {
		return err
	}
	return errdefs.Forbidden("the image needs %d bytes, more than the %d bytes left of the account's storage quota (%d bytes); nothing was saved: delete images (arbor rmi) or import a smaller image", n, max(left, 0), e.cfg.MaxStorageBytes)
}

// opOf returns the operation id carried by ctx (see withProgress), if any.
func opOf(ctx context.Context) string {
	if s, ok := ctx.Value(progressKey{}).(*progressSink); ok {
		return s.op
	}
	return ""
}

// AddStoredBytes registers fn, which reports the bytes an account stores
// outside the engine's layers and files (the export registry's blobs), so
// they count in its usage and its storage quota. fn must not call back into
// the engine.
func (e *Engine) AddStoredBytes(fn func(account string) int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.storedElsewhere = append(e.storedElsewhere, fn)
}

// storedBytes is everything account stores: layers (squashed copies
// included), uploaded files and what AddStoredBytes sources report.
func (e *Engine) storedBytes(ctx context.Context, account string) (int64, error) {
	n, err := e.st.AccountBytes(ctx, account)
	if err != nil {
		return 0, err
	}
	if e.sharedCheckpoints() != nil { // recorded in the database (checkpoint_cluster.go)
		b, err := e.accountCheckpointBytes(ctx, account)
		if err != nil {
			return 0, err
		}
		n += b
	}
	e.mu.Lock()
	fns := e.storedElsewhere
	e.mu.Unlock()
	for _, fn := range fns {
		n += fn(account)
	}
	return n, nil
}
