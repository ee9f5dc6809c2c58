package layers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/layerfs"
)

// Snapshotter hands out views of chains of layers kept in a [Storage], pins
// them with leases and collects the rest. It is safe for concurrent use.
type Snapshotter struct {
	st      Storage
	staging string // scratch space on the storage's filesystem (squash)
	log     *slog.Logger

	// mu serialises a collection's decision and unlinking with leases: a
	// layer being put is pinned, and a stored one is pinned or referenced
	// before a collection looks, or it is not collected by it. Nothing
	// slow runs under it (Put, which may upload, runs outside).
	mu     sync.Mutex
	pinned map[string]int // layer id → leases holding it

	cleanMu sync.Mutex // one Cleanup at a time; commits never wait for it
}

// New returns a Snapshotter over st. staging is a directory on the same
// filesystem for layers being built; log may be nil.
func New(st Storage, staging string, log *slog.Logger) *Snapshotter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Snapshotter{st: st, staging: staging, log: log, pinned: map[string]int{}}
}

// Storage returns the storage the layers are kept in.
func (s *Snapshotter) Storage() Storage { return s.st }

// A Lease pins layer ids against collection until it is released. The zero
// value is not usable; get one from [Snapshotter.Lease].
type Lease struct {
	s    *Snapshotter
	ids  []string
	done bool // under s.mu
}

// Lease returns a lease holding ids (which need not be stored yet: a lease
// taken before a layer is put keeps it from being collected until its
// reference is recorded).
func (s *Snapshotter) Lease(ids ...string) *Lease {
	l := &Lease{s: s}
	l.Add(ids...)
	return l
}

// Add pins more ids for the lease's lifetime.
func (l *Lease) Add(ids ...string) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if l.done {
		return
	}
	pin, _ := l.s.st.(Pinner)
	for _, id := range ids {
		if l.s.pinned[id]++; l.s.pinned[id] == 1 && pin != nil {
			pin.Pin(id)
		}
	}
	l.ids = append(l.ids, ids...)
}

// Release unpins the lease's ids. It may be called more than once.
func (l *Lease) Release() {
	if l == nil {
		return
	}
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	pin, _ := l.s.st.(Pinner)
	for _, id := range l.ids {
		if l.s.pinned[id]--; l.s.pinned[id] <= 0 {
			delete(l.s.pinned, id)
			if pin != nil {
				pin.Unpin(id)
			}
		}
	}
}

// Get returns layer id's directory (see [Storage.Get]).
func (s *Snapshotter) Get(ctx context.Context, id string) (string, error) { return s.st.Get(ctx, id) }

// getParallel bounds the Gets paths runs at once: a storage that fetches
// (an object store) then downloads a cold chain's layers side by side.
const getParallel = 8

// paths returns the directories of chain, top first.
func (s *Snapshotter) paths(ctx context.Context, chain []string) ([]string, error) {
	out := make([]string, len(chain))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(getParallel)
	for i, id := range chain {
		g.Go(func() error {
			p, err := s.st.Get(gctx, id)
			out[i] = p
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// View pins chain and returns its layer directories, top first, for
// reading. release unpins them; it may be called more than once.
func (s *Snapshotter) View(ctx context.Context, chain []string) (paths []string, release func(), err error) {
	l := s.Lease(chain...)
	if paths, err = s.paths(ctx, chain); err != nil {
		l.Release()
		return nil, nil, err
	}
	return paths, l.Release, nil
}

// Active is a writable view prepared on a chain: an overlay of Lowers (top
// first) with Upper and Work, to be mounted by the caller on Merged. All
// three live in Dir, which belongs to the view.
type Active struct {
	Dir, Upper, Work, Merged string
	Lowers                   []string
	lease                    *Lease
}

// Prepare makes dir (which must not exist yet or be empty) an active view
// on chain ("" chain: an empty filesystem) and pins the chain until
// [Snapshotter.Remove].
func (s *Snapshotter) Prepare(ctx context.Context, dir string, chain []string) (*Active, error) {
	l := s.Lease(chain...)
	lowers, err := s.paths(ctx, chain)
	if err != nil {
		l.Release()
		return nil, err
	}
	a := &Active{Dir: dir, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"), Merged: filepath.Join(dir, "merged"),
		Lowers: lowers, lease: l}
	for _, d := range []string{a.Upper, a.Work, a.Merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			_ = s.Remove(a)
			return nil, err
		}
	}
	return a, nil
}

// Remove deletes an active view's directory (unmounted by the caller) and
// unpins its chain. Whatever was committed from it stays.
func (s *Snapshotter) Remove(a *Active) error {
	err := os.RemoveAll(a.Dir)
	a.lease.Release()
	return err
}

// Release unpins a's chain and leaves its directory: once a's overlay is
// unmounted nothing in the directory refers to the chain. Remove then only
// deletes the directory.
func (a *Active) Release() { a.lease.Release() }

// Put makes dir durable and stores it as layer id (see [Storage.Put]). The
// caller holds a lease on id or records a reference to it under roots, or
// a collection may remove it.
func (s *Snapshotter) Put(ctx context.Context, id, dir string) error {
	if err := s.syncForPut(dir); err != nil {
		return err
	}
	return s.put(ctx, id, dir)
}

// SyncsLocally tells whether a layer must be durable on the local disk
// before it is stored: not when the storage is [Remote].
func (s *Snapshotter) SyncsLocally() bool {
	_, remote := s.st.(Remote)
	return !remote
}

func (s *Snapshotter) syncForPut(dir string) error {
	if !s.SyncsLocally() {
		return nil
	}
	if err := syncTree(dir); err != nil {
		return fmt.Errorf("sync layer: %w", err)
	}
	return nil
}

// put stores dir as layer id without s.mu: storing can be slow (an upload)
// and must not hold up leases, views and other commits. The caller's lease
// on id keeps a concurrent collection from removing it whether or not its
// listing sees it.
func (s *Snapshotter) put(ctx context.Context, id, dir string) error {
	return s.st.Put(ctx, id, dir)
}

// Commit makes dir (an unmounted upper directory, or any complete tree)
// durable, stores it as the new layer id, and runs record (the caller's
// metadata transaction that references it) with id pinned. When record
// fails the layer is removed again. A crash before record leaves only an
// unreferenced layer, which the next collection removes.
func (s *Snapshotter) Commit(ctx context.Context, dir, id string, record func() error) error {
	if err := s.syncForPut(dir); err != nil {
		return err
	}
	return s.commit(ctx, dir, id, record)
}

// CommitSynced is Commit for a dir its caller made durable already with
// [SyncTree] or [SyncDiffed] (a continued sandbox's step layer).
func (s *Snapshotter) CommitSynced(ctx context.Context, dir, id string, record func() error) error {
	return s.commit(ctx, dir, id, record)
}

// SyncTree makes everything under dir durable, as Commit does first.
func SyncTree(dir string) error {
	if err := syncTree(dir); err != nil {
		return fmt.Errorf("sync layer: %w", err)
	}
	return nil
}

func (s *Snapshotter) commit(ctx context.Context, dir, id string, record func() error) error {
	l := s.Lease(id)
	defer l.Release()
	if err := s.put(ctx, id, dir); err != nil {
		return err
	}
	if err := record(); err != nil {
		s.mu.Lock()
		rerr := s.st.Remove(ctx, id)
		s.mu.Unlock()
		s.cleanup(ctx)
		return errors.Join(err, rerr)
	}
	return nil
}

// Squash flattens chain into the new layer id (see layerfs.FS.Flatten) and
// runs record with the layer's directory while it is pinned, as Commit does.
func (s *Snapshotter) Squash(ctx context.Context, chain []string, id string, record func(dir string) error) error {
	paths, release, err := s.View(ctx, chain)
	if err != nil {
		return err
	}
	defer release()
	tmp, err := os.MkdirTemp(s.staging, "squash-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	flat := filepath.Join(tmp, "flat")
	if err := layerfs.New(paths).Flatten(ctx, flat); err != nil {
		return err
	}
	// Flatten synced every file and directory it wrote.
	return s.commit(ctx, flat, id, func() error {
		p, err := s.st.Get(ctx, id)
		if err != nil {
			return err
		}
		return record(p)
	})
}

// Collect removes every stored layer that no lease pins and that roots does
// not report as needed. roots runs under the lock Put and leases take, so
// it sees every reference recorded before and none of the layers it omits
// can gain one meanwhile; it must not call back into the Snapshotter. The
// removed layers' contents are deleted after the lock is released.
func (s *Snapshotter) Collect(ctx context.Context, roots func() map[string]bool) (removed int, err error) {
	ids, err := s.CollectIDs(ctx, roots)
	return len(ids), err
}

// CollectIDs is Collect, returning the ids of the layers it removed.
func (s *Snapshotter) CollectIDs(ctx context.Context, roots func() map[string]bool) (removed []string, err error) {
	s.mu.Lock()
	ids, err := s.unneededLocked(ctx, roots)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if sr, ok := s.st.(SharedRemover); ok {
		removed, err = sr.RemoveUnneeded(ctx, ids)
		s.mu.Unlock()
		s.cleanup(ctx)
		return removed, err
	}
	for _, id := range ids {
		if err := s.st.Remove(ctx, id); err != nil {
			s.log.Warn("gc: remove layer", "layer", id, "err", err)
			continue
		}
		removed = append(removed, id)
	}
	s.mu.Unlock()
	s.cleanup(ctx)
	return removed, nil
}

// Unneeded returns the layers a Collect with roots would remove now,
// removing nothing (a dry run): with a SharedRemover, those its rules
// would let go.
func (s *Snapshotter) Unneeded(ctx context.Context, roots func() map[string]bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids, err := s.unneededLocked(ctx, roots)
	if sr, ok := s.st.(SharedRemover); ok && err == nil {
		return sr.Removable(ctx, ids)
	}
	return ids, err
}

func (s *Snapshotter) unneededLocked(ctx context.Context, roots func() map[string]bool) ([]string, error) {
	needed := roots()
	ids, err := s.st.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		if !needed[id] && s.pinned[id] <= 0 {
			out = append(out, id)
		}
	}
	return out, nil
}

// cleanup deletes the contents of removed layers, without s.mu.
func (s *Snapshotter) cleanup(ctx context.Context) {
	c, ok := s.st.(Cleaner)
	if !ok {
		return
	}
	s.cleanMu.Lock()
	defer s.cleanMu.Unlock()
	if err := c.Cleanup(ctx); err != nil {
		s.log.Warn("gc: delete removed layers", "err", err)
	}
}

// syncTree makes everything under dir durable: a small tree entry by
// entry (smallsync.go), a large one with one syncfs for the whole
// filesystem, far cheaper than fsyncing each file of a large layer, which
// concurrent commits share (see groupsync.go).
func syncTree(dir string) error {
	if small, err := syncSmall(dir, false); small || err != nil {
		return err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return syncShared(fd)
}
