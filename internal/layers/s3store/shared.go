package s3store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"

	"github.com/arborsh/arbor/internal/errdefs"
)

// A bucket shared by several nodes (their metadata in one database) is
// collected under a [Guard]: a node deletes a layer's object only when no
// image row in the shared database names it, no node holds it, and it is
// older than a grace period. Each node's own collection (the engine's
// roots, its leases) decides first; the guard can only keep more.
//
// Holds are the cross-node form of the local pins: a layer a lease pins
// here (a run's chain, a view, a layer being committed) is held in the
// database before this node fetches it or uploads a layer that may come
// to depend on it, and renewed while it is pinned. A node that dies stops
// renewing and its holds expire. A layer this node uses from its cache
// that no image row names when it is held (its images were deleted on
// another node, or this node's holds lapsed while the database was out of
// reach) is checked to be still stored before this node uploads a layer
// that may come to depend on it, so it never records an image over a
// layer collected meanwhile.
//
// The grace period covers what the holds cannot see: an object younger
// than it stays whoever holds it (an upload whose image row is about to be
// written by a node whose holds lapsed just then).

// Guard coordinates the collection of a shared bucket; postgres.LayerGuard
// implements it. Its methods are safe for concurrent use.
type Guard interface {
	// Hold records that this node holds ids, seen by every collection
	// once it returns (a crash of the database may lose it: Renew tells);
	// no collection on any node deletes them until Release or until the
	// hold expires (TTL after the last Hold or Renew). It returns those of
	// ids that no image row names: a collection may have deleted them
	// before the hold (the others' objects are intact, since a layer a
	// row names is never deleted).
	Hold(ctx context.Context, ids []string) (unnamed []string, err error)
	// Release ends this node's holds on ids.
	Release(ctx context.Context, ids []string) error
	// Renew extends every hold of this node by TTL and returns how many
	// there are: fewer than the node made means the database lost some.
	Renew(ctx context.Context) (int, error)
	// TTL is how long a hold lasts without renewal.
	TTL() time.Duration
	// Collect deletes, through del, those of ids that no image row names
	// and no live hold holds, one collection at a time across every node
	// sharing the database (a node that finds another collecting deletes
	// nothing and returns no error). del returns the ids it deleted.
	Collect(ctx context.Context, ids []string, del func(ctx context.Context, ids []string) ([]string, error)) ([]string, error)
	// Collectable returns those of ids Collect would delete now,
	// deleting nothing (a dry run decides as a pass does).
	Collectable(ctx context.Context, ids []string) ([]string, error)
	// CollectFiles is Collect for uploaded contents (by sha256): it
	// deletes those no file record names and no node holds (Hold of
	// "files/<sha256>", see HoldFile), under the same one-at-a-time rule.
	CollectFiles(ctx context.Context, shas []string, del func(ctx context.Context, shas []string) ([]string, error)) ([]string, error)
	// CollectableFiles returns those of shas CollectFiles would delete
	// now, counting those in unnamed as named by no record.
	CollectableFiles(ctx context.Context, shas, unnamed []string) ([]string, error)
}

// DefaultGrace is the grace period arbor serve gives a shared bucket.
const DefaultGrace = 15 * time.Minute

// shared is the state of a Store with a Guard.
type shared struct {
	guard Guard
	grace time.Duration

	syncMu    sync.Mutex      // one sync at a time
	held      map[string]bool // ids held in the database (under syncMu)
	gone      map[string]bool // cached ids found collected from the bucket (under syncMu)
	lastRenew time.Time       // last successful Hold-all or Renew (under syncMu)
	lapsed    bool            // holds may have expired: re-hold and verify (under syncMu)

	stop chan struct{}
	done chan struct{}
}

// startShared starts renewing the holds of s, which has a guard.
func (s *Store) startShared(g Guard, grace time.Duration) {
	s.sh = &shared{guard: g, grace: grace, held: map[string]bool{}, gone: map[string]bool{}, lastRenew: time.Now(),
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.renewLoop()
}

// Close stops renewing holds (they expire by themselves afterwards) and
// makes the cache durable, so that the next boot keeps it (boot.go). It
// may be called more than once.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.sh != nil {
			close(s.sh.stop)
			<-s.sh.done
		}
		if err = s.closeCache(); err != nil {
			err = fmt.Errorf("layer cache %s: %w", s.cacheDir, err)
		}
	})
	return err
}

func (s *Store) renewLoop() {
	defer close(s.sh.done)
	t := time.NewTicker(max(s.sh.guard.TTL()/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.sh.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.sh.guard.TTL()/2)
		if err := s.syncHolds(ctx, true); err != nil {
			s.log.Warn("layer holds: renew", "err", err)
		}
		cancel()
	}
}

// syncHolds makes the database's holds of this node match its pins: new
// pins are held, ended ones released, and (renew) every hold extended;
// after a lapse it holds everything again. Cached layers that no image row
// names when they are held are checked to be still stored (gone).
func (s *Store) syncHolds(ctx context.Context, renew bool) error {
	sh := s.sh
	sh.syncMu.Lock()
	defer sh.syncMu.Unlock()
	if time.Since(sh.lastRenew) > sh.guard.TTL() {
		sh.lapsed = true
	}
	if sh.lapsed {
		clear(sh.held)
	}
	s.mu.Lock()
	var hold, release []string
	for id := range s.pins {
		if !sh.held[id] {
			hold = append(hold, id)
		}
	}
	for id := range sh.held {
		if s.pins[id] <= 0 {
			release = append(release, id)
		}
	}
	s.mu.Unlock()
	if len(hold) > 0 {
		unnamed, err := sh.guard.Hold(ctx, hold)
		if err != nil {
			return errdefs.Unavailable("layer storage %s: hold layers in the metadata database: %v; the database must be reachable to fetch or commit layers", s.url, err)
		}
		for _, id := range hold {
			sh.held[id] = true
		}
		// A layer used from the cache that no row names may have been
		// collected meanwhile (its images deleted on another node, or
		// this node's holds lapsed): it must not go under a new image.
		gone, err := s.collected(ctx, unnamed)
		if err != nil {
			return err
		}
		for _, id := range gone {
			sh.gone[id] = true
		}
	}
	if len(release) > 0 {
		if err := sh.guard.Release(ctx, release); err != nil {
			return fmt.Errorf("layer storage %s: release layer holds: %w", s.url, err)
		}
		for _, id := range release {
			delete(sh.held, id)
		}
	}
	lost := false
	if renew {
		n, err := sh.guard.Renew(ctx)
		if err != nil {
			return fmt.Errorf("layer storage %s: renew layer holds: %w", s.url, err)
		}
		sh.lastRenew = time.Now()
		// Holds commit asynchronously: a crash of the database can lose
		// the last ones. Held again, and checked, at the next sync.
		if lost = n < len(sh.held); lost {
			s.log.Warn("layer holds: the database lost some of this node's holds; holding them again", "held", len(sh.held), "found", n)
		}
	}
	if sh.lapsed { // everything pinned was held again (and checked) just now
		sh.lapsed = false
		sh.lastRenew = time.Now()
	}
	sh.lapsed = sh.lapsed || lost
	return nil
}

// collected returns those of ids this node has cached whose objects are
// gone from the bucket. Layers it has not cached are checked by their
// fetch, and a layer being committed has no object yet and is not cached
// either.
func (s *Store) collected(ctx context.Context, ids []string) ([]string, error) {
	var (
		mu   sync.Mutex
		gone []string
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, id := range ids {
		s.mu.Lock()
		_, cached := s.cached[id]
		s.mu.Unlock()
		if !cached {
			continue
		}
		g.Go(func() error {
			_, err := s.client.HeadObject(gctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(id))})
			switch {
			case httpStatus(err) == http.StatusNotFound:
				mu.Lock()
				gone = append(gone, id)
				mu.Unlock()
			case err != nil:
				return s.s3Error(err, "check layer "+id, "retry when S3 is back")
			}
			return nil
		})
	}
	err := g.Wait()
	return gone, err
}

// goneErr is the error of a use of layer id, collected from the bucket
// while this node still had it cached.
func (s *Store) goneErr(id string) error {
	return errdefs.NotFound("layer storage %s: layer %s was collected from the bucket (its images were deleted, or this node could not renew its holds for %s): nothing can be run or saved on it",
		s.url, id, s.sh.guard.TTL())
}

// checkCached holds id, used from the cache, if it is not held yet, and
// fails if it was collected from the bucket meanwhile.
func (s *Store) checkCached(ctx context.Context, id string) error {
	if s.sh == nil {
		return nil
	}
	s.sh.syncMu.Lock()
	held, gone := s.sh.held[id], s.sh.gone[id]
	s.sh.syncMu.Unlock()
	if !held && !gone {
		if err := s.syncHolds(ctx, false); err != nil {
			return err
		}
		s.sh.syncMu.Lock()
		gone = s.sh.gone[id]
		s.sh.syncMu.Unlock()
	}
	if gone {
		return s.goneErr(id)
	}
	return nil
}

// checkPinnedIntact fails if a layer this node pins was found collected:
// a commit then cannot tell whether its chain is whole.
func (s *Store) checkPinnedIntact() error {
	if s.sh == nil {
		return nil
	}
	s.sh.syncMu.Lock()
	defer s.sh.syncMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.sh.gone {
		if s.pins[id] > 0 {
			return s.goneErr(id)
		}
	}
	return nil
}

// forgetGone clears id's collected mark: it is stored again.
func (s *Store) forgetGone(id string) {
	if s.sh == nil {
		return
	}
	s.sh.syncMu.Lock()
	delete(s.sh.gone, id)
	s.sh.syncMu.Unlock()
}

// RemoveUnneeded deletes the objects of those of ids that the guard lets
// go and that are older than the grace period, and their cached copies
// (see layers.SharedRemover). Without a guard it removes every id.
func (s *Store) RemoveUnneeded(ctx context.Context, ids []string) ([]string, error) {
	if s.sh == nil {
		var out []string
		for _, id := range ids {
			if err := s.Remove(ctx, id); err != nil {
				s.log.Warn("gc: remove layer", "layer", id, "err", err)
				continue
			}
			out = append(out, id)
		}
		return out, nil
	}
	old, err := s.olderThanGrace(ctx, ids)
	if err != nil || len(old) == 0 {
		return nil, err
	}
	return s.sh.guard.Collect(ctx, old, s.deleteObjects)
}

// Removable returns those of ids RemoveUnneeded would remove now, by the
// same rules (grace, guard), removing nothing: what a dry run reports.
func (s *Store) Removable(ctx context.Context, ids []string) ([]string, error) {
	if s.sh == nil {
		return ids, nil
	}
	old, err := s.olderThanGrace(ctx, ids)
	if err != nil || len(old) == 0 {
		return nil, err
	}
	return s.sh.guard.Collectable(ctx, old)
}

// olderThanGrace returns those of ids whose objects were stored longer
// than the grace period ago, by the listing's times (a HEAD for ids the
// last listing did not see).
func (s *Store) olderThanGrace(ctx context.Context, ids []string) ([]string, error) {
	if s.sh.grace <= 0 {
		return ids, nil
	}
	cut := time.Now().Add(-s.sh.grace)
	var out []string
	for _, id := range ids {
		s.mu.Lock()
		at, ok := s.listed[id]
		s.mu.Unlock()
		if !ok {
			h, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(id))})
			if httpStatus(err) == http.StatusNotFound {
				continue
			}
			if err != nil {
				return nil, s.s3Error(err, "check layer "+id, "the next collection retries")
			}
			at = aws.ToTime(h.LastModified)
		}
		if at.Before(cut) {
			out = append(out, id)
		}
	}
	return out, nil
}

// deleteObjects deletes the objects of ids that are stored and drops
// their cached copies; it returns the ids whose objects it deleted.
func (s *Store) deleteObjects(ctx context.Context, ids []string) ([]string, error) {
	out, errs := s.deleteKeys(ctx, ids, s.key, "layer")
	s.mu.Lock()
	for _, id := range out {
		if err := s.dropLocked(id); err != nil {
			errs = append(errs, err)
		}
		delete(s.listed, id)
	}
	s.mu.Unlock()
	slices.Sort(out)
	return out, errors.Join(errs...)
}

// deleteKeys deletes the objects key(id) of those of ids that are stored,
// a few at a time, and returns the ids whose objects it deleted and the
// failures (what names the objects in messages).
func (s *Store) deleteKeys(ctx context.Context, ids []string, key func(string) string, what string) ([]string, []error) {
	var (
		mu   sync.Mutex
		out  []string
		errs []error
	)
	var g errgroup.Group
	g.SetLimit(8)
	for _, id := range ids {
		g.Go(func() error {
			// Deleting a missing key succeeds in S3: ask first, so an
			// object an earlier pass deleted is not reported removed twice.
			_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key(id))})
			if httpStatus(err) == http.StatusNotFound {
				return nil
			}
			if err == nil {
				_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key(id))})
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && httpStatus(err) != http.StatusNotFound {
				errs = append(errs, s.s3Error(err, "delete "+what+" "+id, "the next collection retries"))
				return nil
			}
			out = append(out, id)
			return nil
		})
	}
	_ = g.Wait()
	return out, errs
}

// holdPinned holds what this node pins before it fetches or uploads a
// layer; a no-op without a guard.
func (s *Store) holdPinned(ctx context.Context) error {
	if s.sh == nil {
		return nil
	}
	return s.syncHolds(ctx, false)
}

// holdForPut is holdPinned before an upload, which must not go on over a
// chain with a collected layer.
func (s *Store) holdForPut(ctx context.Context) error {
	if err := s.holdPinned(ctx); err != nil {
		return err
	}
	return s.checkPinnedIntact()
}
