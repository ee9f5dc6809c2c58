package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
)

// On a cluster a memory checkpoint kept with an image is also stored in the
// shared bucket (ClusterConfig.Checkpoints), uploaded before its image is
// committed (durable before visible, as a layer), so that a restore runs on
// any worker: one that lacks it fetches it once (digest-checked) into its
// <home>/checkpoints, where later restores find it. Deleting the image on
// any node deletes the bucket's copy.

// CheckpointBlobs keeps memory checkpoints where every worker finds them.
type CheckpointBlobs interface {
	// PutCheckpoint stores directory dir as image's checkpoint, durably
	// before it returns.
	PutCheckpoint(ctx context.Context, image, dir string) error
	// GetCheckpoint unpacks image's checkpoint into the new directory dst
	// (on the filesystem of <home>/tmp), checked against its digest;
	// NotFound if none is stored.
	GetCheckpoint(ctx context.Context, image, dst string) error
	// DeleteCheckpoint deletes image's checkpoint (a no-op if none).
	DeleteCheckpoint(ctx context.Context, image string) error
	// StaleCheckpoints lists the stored checkpoints older than the
	// storage's grace period (one being made is younger), by image, with
	// when each was stored.
	StaleCheckpoints(ctx context.Context) (map[string]time.Time, error)
}

func (e *Engine) sharedCheckpoints() CheckpointBlobs {
	if e.cl == nil {
		return nil
	}
	return e.cl.cfg.Checkpoints
}

// shareCheckpoint stores the checkpoint in dir of account's image, of
// size bytes, in the bucket, and records its size in the database for
// every node to count.
func (e *Engine) shareCheckpoint(ctx context.Context, account, image, dir string, bytes int64) error {
	cb := e.sharedCheckpoints()
	if cb == nil {
		return nil
	}
	begin := time.Now()
	if err := cb.PutCheckpoint(ctx, image, dir); err != nil {
		return fmt.Errorf("store the checkpoint in shared storage: %w", err)
	}
	if err := e.cl.store.RecordCheckpoint(ctx, image, account, bytes); err != nil {
		e.unshareCheckpoint(ctx, image)
		return fmt.Errorf("record the checkpoint's size: %w", err)
	}
	e.log.Info("checkpoint stored in shared storage", "image", image, "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// unshareCheckpoint deletes image's checkpoint from the bucket, if any,
// and then its record (a failed deletion keeps the record: a pass deletes
// both later).
func (e *Engine) unshareCheckpoint(ctx context.Context, image string) {
	if cb := e.sharedCheckpoints(); cb != nil {
		ctx = context.WithoutCancel(ctx)
		if err := cb.DeleteCheckpoint(ctx, image); err != nil {
			e.log.Warn("delete a checkpoint from shared storage", "image", image, "err", err)
			return
		}
		if err := e.cl.store.ForgetCheckpoint(ctx, image); err != nil {
			e.log.Warn("delete a checkpoint's record", "image", image, "err", err)
		}
	}
}

// checkpointSizes returns the checkpoint sizes of those of images that
// have one: on a cluster sharing checkpoints, as the database records
// them (every node counts them, holding a copy or not); otherwise this
// node's.
func (e *Engine) checkpointSizes(ctx context.Context, images []string) (map[string]int64, error) {
	if e.sharedCheckpoints() != nil {
		return e.cl.store.CheckpointSizes(ctx, images)
	}
	out := map[string]int64{}
	for _, id := range images {
		if b := e.ckpts.bytesOf(id); b > 0 {
			out[id] = b
		}
	}
	return out, nil
}

// accountCheckpointBytes is what account's checkpoints use, counted as
// checkpointSizes counts them.
func (e *Engine) accountCheckpointBytes(ctx context.Context, account string) (int64, error) {
	if e.sharedCheckpoints() != nil {
		return e.cl.store.AccountCheckpointBytes(ctx, account)
	}
	return e.ckpts.accountBytes(account), nil
}

// pruneLocalCheckpoints drops this node's copies of checkpoints whose
// record is gone (their image deleted on any node, or a pass found them
// expired) or that are older than CheckpointTTL, on a cluster sharing
// checkpoints: there the bucket holds them, and a copy would otherwise
// stay on this node's disk until its restart. It runs at each of this
// node's retention ticks, whichever node's pass it is. A copy is in the
// set only once its record is written (shareCheckpoint) or read from the
// bucket (fetchCheckpoint), so none being made is dropped.
func (e *Engine) pruneLocalCheckpoints(ctx context.Context) (int, error) {
	if e.sharedCheckpoints() == nil {
		return 0, nil
	}
	now, ttl := e.now(), e.cfg.CheckpointTTL
	var ids, old []string
	e.ckpts.mu.Lock()
	for id, c := range e.ckpts.m {
		if ttl > 0 && now.Sub(c.created) > ttl {
			old = append(old, id)
		} else {
			ids = append(ids, id)
		}
	}
	e.ckpts.mu.Unlock()
	if len(ids) == 0 && len(old) == 0 {
		return 0, nil
	}
	recorded, err := e.cl.store.CheckpointSizes(ctx, ids)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		if _, ok := recorded[id]; !ok {
			old = append(old, id)
		}
	}
	for _, id := range old {
		e.dropCheckpoint(id)
	}
	return len(old), nil
}

// fetchCheckpoint makes image's checkpoint, stored in the bucket by
// another worker, this node's kept checkpoint; a no-op if this node has it
// or the bucket has none (the restore then says the image has none).
func (e *Engine) fetchCheckpoint(ctx context.Context, image string) error {
	if err := e.syncImage(ctx, image); err != nil { // made on another node
		return err
	}
	cb := e.sharedCheckpoints()
	if cb == nil || e.ckpts.bytesOf(image) > 0 {
		return nil
	}
	e.cl.ckptMu.Lock() // one fetch at a time; a second restore finds it kept
	defer e.cl.ckptMu.Unlock()
	if e.ckpts.bytesOf(image) > 0 {
		return nil
	}
	tmp := filepath.Join(e.cfg.Home, "tmp", "checkpoint-"+newLayerID()[:16])
	begin := time.Now()
	if err := cb.GetCheckpoint(ctx, image, tmp); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil
		}
		return err
	}
	defer os.RemoveAll(tmp) // after the rename, a no-op
	sc, err := readCheckpoint(tmp)
	if err != nil || sc.Image != image {
		return fmt.Errorf("the checkpoint of image %s in shared storage is not one (%v): spawn a fresh instance from the image instead", image, err)
	}
	if err := os.Rename(tmp, e.checkpointDir(image)); err != nil {
		return err
	}
	e.ckpts.mu.Lock()
	e.ckpts.m[image] = &keptCheckpoint{account: sc.Account, bytes: sc.Bytes, created: sc.Created}
	e.ckpts.mu.Unlock()
	e.log.Info("checkpoint fetched from shared storage", "image", image, "checkpoint_bytes", sc.Bytes, "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// RestorePlacement says where a restore of account's image may run in a
// cluster: the addresses of the live workers, in the order to try them (the
// one running the checkpointed instance first while it runs, as it has the
// checkpoint already; the others shuffled, each fetching it once), or nil
// on a node that runs sandboxes itself. With no live worker it fails with
// Unavailable.
func (e *Engine) RestorePlacement(ctx context.Context, account, image string) ([]string, error) {
	if e.cl == nil || e.cl.cfg.Worker {
		return nil, nil
	}
	im, err := e.resolveImage(ctx, account, image)
	if err != nil {
		return nil, err
	}
	live, err := e.cl.store.LiveAddresses(ctx)
	if err != nil {
		return nil, err
	}
	if len(live) == 0 {
		return nil, errdefs.Unavailable("no worker is running to restore image %s on: start one (arbor serve --role worker), then retry", im.UUID)
	}
	first := ""
	if im.Operation != "" {
		if p, err := e.cl.store.Placement(ctx, im.Operation); err == nil {
			first = live[cmp.Or(p.Node, p.Worker)]
		}
	}
	var out []string
	for _, id := range slices.Sorted(maps.Keys(live)) {
		if live[id] != first {
			out = append(out, live[id])
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	if first != "" {
		out = append([]string{first}, out...)
	}
	return out, nil
}

// sweepSharedCheckpoints deletes from the bucket the checkpoints of images
// that are deleted or were never committed (a crash between the upload
// and the image's commit, a failed deletion) and, with CheckpointTTL,
// those older than it, and returns how many it deleted (dry: would
// delete). A retention pass over every account runs it.
func (e *Engine) sweepSharedCheckpoints(ctx context.Context, now time.Time, dry bool) (int, error) {
	cb := e.sharedCheckpoints()
	if cb == nil {
		return 0, nil
	}
	stored, err := cb.StaleCheckpoints(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for id, at := range stored {
		im, err := e.st.ImageAny(ctx, id)
		if err != nil && !errdefs.IsNotFound(err) {
			return n, err
		}
		gone := err != nil || im.Deleted
		if !gone && (e.cfg.CheckpointTTL <= 0 || now.Sub(at) <= e.cfg.CheckpointTTL) {
			continue
		}
		n++
		if dry {
			continue
		}
		if err := cb.DeleteCheckpoint(ctx, id); err != nil {
			return n - 1, err
		}
		if err := e.cl.store.ForgetCheckpoint(ctx, id); err != nil {
			return n - 1, err
		}
		e.log.Info("retention: checkpoint deleted from shared storage", "image", id, "image_gone", gone, "stored", at)
	}
	return n, nil
}

// checkpointExpired fails a restore of a checkpoint older than
// CheckpointTTL that this node still has (a cluster's pass removed the
// bucket's copy, and another node's copy may linger until that node's
// next retention tick), dropping it.
func (e *Engine) checkpointExpired(image string) error {
	ttl := e.cfg.CheckpointTTL
	if e.cl == nil || ttl <= 0 {
		return nil
	}
	e.ckpts.mu.Lock()
	c := e.ckpts.m[image]
	old := c != nil && e.now().Sub(c.created) > ttl
	e.ckpts.mu.Unlock()
	if !old {
		return nil
	}
	e.dropCheckpoint(image)
	return errdefs.FailedPrecondition("image %s's memory checkpoint is older than the checkpoint TTL (%v, --checkpoint-ttl) and was removed; spawn a fresh instance from the image instead", image, ttl)
}
