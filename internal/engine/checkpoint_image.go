package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/runtime"
	"github.com/arborsh/arbor/internal/store"
)

// Checkpoints kept with images: a running instance's memory checkpoint
// (as a fork takes it) saved next to the fork point's image and restored
// later, any number of times, onto a fresh upper over that image, so the
// memory and the files match exactly. A checkpoint lives in
// <home>/checkpoints/<image uuid>/ (never inside a layer): image/ is the
// runsc checkpoint directory, checkpoint.json what restoring it needs
// (savedCheckpoint). It counts in its account's storage, and goes when its
// image goes (deletion or retention) or, with Config.CheckpointTTL, once it
// is that old. Made atomically: written under run/ (which recovery empties),
// renamed into place, then the image committed; a crash between the last
// two leaves a checkpoint without an image, which startup removes.

// savedCheckpoint is checkpoint.json: the instance's plan, as its restored
// copies run it, and what the image was made with.
type savedCheckpoint struct {
	Image   string    `json:"image"`
	Account string    `json:"account"`
	Created time.Time `json:"created"`
	// Format is the runsc build and flags (runtime.OCI.CheckpointFormat):
	// a restore needs the same.
	Format string `json:"format"`
	PID    int    `json:"pid"` // the main process's, in the sandbox
	Bytes  int64  `json:"bytes"`

	Meta      oplog.InstanceMetadata `json:"meta"`
	Args      []string               `json:"args"`
	Env       map[string]string      `json:"env"`
	Inherited map[string]string      `json:"inherited"`
	Timeout   time.Duration          `json:"timeout"`
	Truncate  int64                  `json:"truncate"`
	MaxLayer  int64                  `json:"max_layer"`
	Memory    int64                  `json:"memory"`
	Pids      int64                  `json:"pids"`
	CPUs      float64                `json:"cpus"`
	Network   bool                   `json:"network"`
}

// checkpointSet is what <home>/checkpoints holds, by image.
type checkpointSet struct {
	mu sync.Mutex
	m  map[string]*keptCheckpoint
}

type keptCheckpoint struct {
	account string
	bytes   int64
	created time.Time
	users   int  // restores reading it now
	gone    bool // deleted: the last user removes the directory
}

func (e *Engine) checkpointsDir() string { return filepath.Join(e.cfg.Home, "checkpoints") }

func (e *Engine) checkpointDir(image string) string { return filepath.Join(e.checkpointsDir(), image) }

// loadCheckpoints reads <home>/checkpoints at startup, removing what no
// live image owns (a crash between the rename and the image's commit, or
// between an image's deletion and its hook), and hooks checkpoints into
// usage and image deletion. The images must be loaded.
func (e *Engine) loadCheckpoints() error {
	dir := e.checkpointsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	e.ckpts.m = map[string]*keptCheckpoint{}
	for _, ent := range ents {
		id := ent.Name()
		sc, err := readCheckpoint(filepath.Join(dir, id))
		e.mu.Lock()
		n := e.images[id]
		live := n != nil && !n.deleted && !n.hidden
		e.mu.Unlock()
		if err != nil || !live || sc.Image != id {
			e.log.Info("removing a checkpoint without its image", "image", id, "err", err)
			if err := os.RemoveAll(filepath.Join(dir, id)); err != nil {
				e.log.Warn("remove checkpoint", "image", id, "err", err)
			}
			continue
		}
		e.ckpts.m[id] = &keptCheckpoint{account: sc.Account, bytes: sc.Bytes, created: sc.Created}
	}
	e.AddStoredBytes(func(account string) int64 {
		if e.sharedCheckpoints() != nil {
			return 0 // storedBytes asks the database (accountCheckpointBytes)
		}
		return e.ckpts.accountBytes(account)
	})
	e.OnImageDeleted(func(_ context.Context, _, id string) { e.dropCheckpoint(id) })
	return nil
}

func readCheckpoint(dir string) (savedCheckpoint, error) {
	var sc savedCheckpoint
	b, err := os.ReadFile(filepath.Join(dir, "checkpoint.json"))
	if err != nil {
		return sc, err
	}
	return sc, json.Unmarshal(b, &sc)
}

// accountBytes is what account's checkpoints use (an AddStoredBytes source).
func (s *checkpointSet) accountBytes(account string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, c := range s.m {
		if c.account == account {
			n += c.bytes
		}
	}
	return n
}

// bytesOf is image's checkpoint size, 0 if it has none.
func (s *checkpointSet) bytesOf(image string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.m[image]; c != nil {
		return c.bytes
	}
	return 0
}

// withCheckpoints fills in the images' checkpoint sizes (checkpointSizes).
func (e *Engine) withCheckpoints(ctx context.Context, ims []Image) ([]Image, error) {
	ids := make([]string, len(ims))
	for i := range ims {
		ids[i] = ims[i].UUID
	}
	sizes, err := e.checkpointSizes(ctx, ids)
	if err != nil {
		return nil, err
	}
	for i := range ims {
		ims[i].CheckpointBytes = sizes[ims[i].UUID]
	}
	return ims, nil
}

// dropCheckpoint forgets image's checkpoint and removes it, at once or,
// if a restore is reading it, when that is done.
func (e *Engine) dropCheckpoint(image string) {
	e.ckpts.mu.Lock()
	c := e.ckpts.m[image]
	if c == nil {
		e.ckpts.mu.Unlock()
		return
	}
	delete(e.ckpts.m, image)
	c.gone = true
	busy := c.users > 0
	e.ckpts.mu.Unlock()
	if !busy {
		e.removeCheckpointDir(image)
	}
}

// holdCheckpoint keeps image's checkpoint on disk until
// releaseCheckpoint, even if its image is deleted meanwhile; nil if the
// image has none.
func (e *Engine) holdCheckpoint(image string) *keptCheckpoint {
	e.ckpts.mu.Lock()
	defer e.ckpts.mu.Unlock()
	c := e.ckpts.m[image]
	if c != nil {
		c.users++
	}
	return c
}

func (e *Engine) releaseCheckpoint(image string, c *keptCheckpoint) {
	e.ckpts.mu.Lock()
	c.users--
	remove := c.gone && c.users == 0
	e.ckpts.mu.Unlock()
	if remove {
		e.removeCheckpointDir(image)
	}
}

func (e *Engine) removeCheckpointDir(image string) {
	if err := os.RemoveAll(e.checkpointDir(image)); err != nil {
		e.log.Warn("remove checkpoint", "image", image, "err", err)
	}
}

// CheckpointResult is a checkpoint's outcome: the image holding the
// instance's files at that moment, and the memory checkpoint's size.
type CheckpointResult struct {
	Image           string
	CheckpointBytes int64
}

// testHookCheckpointSaved, when set by a test, runs once a checkpoint is
// written and before it is renamed into place.
var testHookCheckpointSaved func()

// CheckpointImage saves running instance op, memory and files, as a new
// image with its memory checkpoint kept for RestoreImage. The instance
// goes on.
func (e *Engine) CheckpointImage(ctx context.Context, account, op string) (CheckpointResult, error) {
	r, err := e.checkpointable(ctx, account, op)
	if err != nil {
		return CheckpointResult{}, err
	}
	format, err := checkpointFormat(ctx, r.p.rt)
	if err != nil {
		return CheckpointResult{}, err
	}
	if err := e.checkDisk(); err != nil {
		return CheckpointResult{}, err
	}
	stage := filepath.Join(e.cfg.Home, "run", "ckpt-"+newLayerID()[:16])
	if err := os.MkdirAll(filepath.Join(stage, "kept"), 0o700); err != nil {
		return CheckpointResult{}, err
	}
	defer func() {
		if err := os.RemoveAll(stage); err != nil {
			e.log.Warn("remove checkpoint staging", "dir", stage, "err", err)
		}
	}()
	kept, upper := filepath.Join(stage, "kept"), filepath.Join(stage, "upper")
	begin := time.Now()
	if err := e.saveRunning(ctx, r, filepath.Join(kept, "image"), upper, false); err != nil {
		return CheckpointResult{}, err
	}
	paused := time.Since(begin)
	p := r.p
	size := dirBytes(kept)
	if left, limited, err := e.quotaLeft(ctx, account, nil); err != nil {
		return CheckpointResult{}, err
	} else if need := size + dirBytes(upper); limited && need > left {
		return CheckpointResult{}, errdefs.Forbidden("the checkpoint needs %d bytes (memory %d, files %d), more than the %d bytes left of the account's storage quota (%d bytes); nothing was saved: delete images or checkpoints (arbor rmi) first",
			need, size, need-size, max(left, 0), e.cfg.MaxStorageBytes)
	}
	id := newID()
	sc := savedCheckpoint{Image: id, Account: account, Created: e.now(), Format: format, PID: r.pid, Bytes: size,
		Meta: p.meta, Args: p.args, Env: p.env, Inherited: p.inherited, Timeout: p.timeout, Truncate: p.truncate,
		MaxLayer: p.maxLayer, Memory: p.memory, Pids: p.pids, CPUs: p.cpus, Network: p.network}
	b, _ := json.Marshal(sc) // plain data: cannot fail
	if err := os.WriteFile(filepath.Join(kept, "checkpoint.json"), b, 0o600); err != nil {
		return CheckpointResult{}, err
	}
	if testHookCheckpointSaved != nil {
		testHookCheckpointSaved()
	}
	if err := e.shareCheckpoint(ctx, account, id, kept, size); err != nil { // a cluster's bucket
		return CheckpointResult{}, err
	}
	if err := os.Rename(kept, e.checkpointDir(id)); err != nil {
		e.unshareCheckpoint(ctx, id)
		return CheckpointResult{}, err
	}
	e.ckpts.mu.Lock()
	e.ckpts.m[id] = &keptCheckpoint{account: account, bytes: size, created: sc.Created}
	e.ckpts.mu.Unlock()
	// Always an image of its own, even when the run changed no file: one
	// checkpoint per image, deleted with it.
	if _, err := e.commitPoint(ctx, p, upper, id); err != nil {
		e.dropCheckpoint(id)
		e.unshareCheckpoint(ctx, id)
		return CheckpointResult{}, err
	}
	e.log.Info("checkpoint kept", "operation", r.a.id, "image", id, "checkpoint_bytes", size, "paused", paused)
	return CheckpointResult{Image: id, CheckpointBytes: size}, nil
}

// checkpointFormat is rt's runtime.OCI.CheckpointFormat.
func checkpointFormat(ctx context.Context, rt runtime.Runtime) (string, error) {
	f, ok := rt.(interface {
		CheckpointFormat(context.Context) (string, error)
	})
	if !ok {
		return "", runtime.NotCheckpointable(rt.Name())
	}
	return f.CheckpointFormat(ctx)
}

// RestoreImage starts count (1 to MaxForks; 0 is 1) running instances from
// image's kept checkpoint, each continuing the checkpointed instance's
// main process on a fresh upper over the image.
func (e *Engine) RestoreImage(ctx context.Context, account, image string, count int) ([]string, error) {
	n := count
	if n == 0 {
		n = 1
	}
	if n < 1 || n > MaxForks {
		return nil, errdefs.InvalidArgument("count %d: restore 1 to %d copies", count, MaxForks)
	}
	im, err := e.resolveImage(ctx, account, image)
	if err != nil {
		return nil, err
	}
	if err := e.fetchCheckpoint(ctx, im.UUID); err != nil { // made on another worker
		return nil, err
	}
	if err := e.checkpointExpired(im.UUID); err != nil {
		return nil, err
	}
	c := e.holdCheckpoint(im.UUID)
	if c == nil {
		return nil, errdefs.FailedPrecondition("image %s has no memory checkpoint: only images made by a checkpoint of a running instance (POST /v1/operations/{id}/checkpoint, arbor checkpoint OP) can be restored; spawn a new instance from it instead", im.UUID)
	}
	defer e.releaseCheckpoint(im.UUID, c)
	dir := e.checkpointDir(im.UUID)
	sc, err := readCheckpoint(dir)
	if err != nil {
		return nil, fmt.Errorf("read the checkpoint of image %s: %w", im.UUID, err)
	}
	rt, ok := e.runtimes["runsc"]
	if !ok {
		return nil, errdefs.FailedPrecondition("image %s holds a runsc checkpoint, and this server has no runsc runtime: restore it on a server with runsc", im.UUID)
	}
	if err := e.checkRuntime(account, "runsc"); err != nil {
		return nil, err
	}
	format, err := checkpointFormat(ctx, rt)
	if err != nil {
		return nil, err
	}
	if format != sc.Format {
		return nil, errdefs.Conflict("image %s's checkpoint was made by %s; this server runs %s: a checkpoint restores only under the same runsc build and platform flags (spawn a fresh instance from the image instead)", im.UUID, sc.Format, format)
	}
	if err := e.admit(ctx, account); err != nil {
		return nil, err
	}
	p := &runPlan{account: account, image: im, meta: sc.Meta, args: sc.Args, env: sc.Env, inherited: sc.Inherited,
		timeout: sc.Timeout, truncate: sc.Truncate, maxLayer: sc.MaxLayer, rt: rt, memory: sc.Memory, pids: sc.Pids,
		cpus: sc.CPUs, network: sc.Network}
	var ops []string
	for range n {
		e.ckpts.mu.Lock()
		c.users++ // each copy holds it until restored
		e.ckpts.mu.Unlock()
		var once sync.Once
		done := func() { once.Do(func() { e.releaseCheckpoint(im.UUID, c) }) }
		id, err := e.startFork(ctx, p, im, &restorePlan{image: filepath.Join(dir, "image"), pid: sc.PID, done: done})
		if err != nil {
			done()
			if len(ops) == 0 {
				return nil, err
			}
			e.log.Warn("restore: start a copy", "image", im.UUID, "err", err)
			break
		}
		ops = append(ops, id)
	}
	e.log.Info("checkpoint restored", "image", im.UUID, "copies", len(ops))
	return ops, nil
}

// expireCheckpoints removes the checkpoints older than CheckpointTTL (their
// images stay, as plain images) and reports how many and their bytes;
// those of the images in expiring (counted with them) are left out.
func (e *Engine) expireCheckpoints(now time.Time, dry bool, expiring map[string]store.Image) (n int, bytes int64) {
	ttl := e.cfg.CheckpointTTL
	if ttl <= 0 {
		return 0, 0
	}
	var old []string
	e.ckpts.mu.Lock()
	for id, c := range e.ckpts.m {
		if _, ok := expiring[id]; !ok && now.Sub(c.created) > ttl {
			old = append(old, id)
			n++
			bytes += c.bytes
		}
	}
	e.ckpts.mu.Unlock()
	if !dry {
		for _, id := range old {
			e.dropCheckpoint(id)
		}
	}
	if n > 0 && !dry {
		e.log.Info("retention: checkpoints expired", "checkpoints", n, "bytes", bytes, "ids", strings.Join(old, ","))
	}
	return n, bytes
}

// ParseCheckpointTTL reads --checkpoint-ttl, a TTL as ParseRetention takes
// one; "off" is 0: checkpoints live as long as their images.
func ParseCheckpointTTL(s string) (time.Duration, error) {
	d, err := parseTTL(s)
	if err != nil {
		return 0, fmt.Errorf("--checkpoint-ttl %q: %w: %s", s, err, ttlForms)
	}
	return max(d, 0), nil
}
