package engine

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/duration"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
)

// Retention is what an account keeps. A TTL of 0 or less keeps forever.
type Retention struct {
	// ImageTTL: an untagged image older than this goes, unless a tagged
	// image, a younger one or a leased one (a queued or running operation,
	// a read in progress) descends from it, since those need its chain.
	// Off by default: clients hold images by UUID (ConTree's API has no
	// expiry), so only the operator can decide they may vanish.
	ImageTTL time.Duration
	// OperationTTL: a finished operation, its output and its event log go
	// this long after it finished. Images it made stay.
	OperationTTL time.Duration
	// UploadTTL: an uploaded file goes this long after its last use (its
	// upload, a re-upload of the same content, or a run that named it;
	// see uploadretention.go).
	UploadTTL time.Duration
}

// DefaultOperationTTL keeps operation logs (which hold each run's output,
// up to 64 MiB) for 30 days: long enough to read any result an agent
// still waits for, short enough that the database stops growing.
const DefaultOperationTTL = 30 * 24 * time.Hour

// DefaultGCInterval is how often retention runs in the background.
const DefaultGCInterval = time.Hour

// now is the engine's clock: row timestamps and retention's "now".
func (e *Engine) now() time.Time { return e.cfg.Clock.Now() }

// RetentionOf returns account's policy: the daemon's default with the
// account's overrides.
func (e *Engine) RetentionOf(account string) Retention {
	r := e.cfg.Retention
	if a, ok := e.cfg.AccountRetention[account]; ok {
		if a.ImageTTL != 0 {
			r.ImageTTL = a.ImageTTL
		}
		if a.OperationTTL != 0 {
			r.OperationTTL = a.OperationTTL
		}
		if a.UploadTTL != 0 {
			r.UploadTTL = a.UploadTTL
		}
	}
	return r
}

// GCOptions selects what a GC pass does.
type GCOptions struct {
	DryRun  bool   // report what would go, change nothing
	Account string // apply retention to this account only; "": every account
}

// GCImage is an image retention deletes.
type GCImage struct {
	UUID, Account string
	CreatedAt     time.Time
}

// GCReport is what a GC pass removed (or, dry, would remove).
type GCReport struct {
	DryRun bool
	// Images expired by retention, oldest first.
	Images []GCImage
	// Layers are the layer directories removed and Bytes their recorded
	// sizes: what comes back on disk in the layer store.
	Layers int
	Bytes  int64
	// ExportBlobs are the export registry's blobs that only the expired
	// images used, removed with them, and ExportBytes their sizes (see
	// AddFreedBytes).
	ExportBlobs int
	ExportBytes int64
	ImageRows   int // rows of deleted images and import layers purged
	// Operations and Events: finished operations and their event logs
	// deleted by retention.
	Operations, Events int64
	// Uploads are the uploaded files retention deleted and UploadBytes
	// the sizes of the contents that went with them (no other record
	// named them).
	Uploads     int
	UploadBytes int64
	// Checkpoints are the memory checkpoints removed: with the expired
	// images, or older than CheckpointTTL (their images stay); and
	// CheckpointBytes their sizes.
	Checkpoints     int
	CheckpointBytes int64
}

// GC applies the retention policies now and collects what no longer needs
// to be kept. A dry run reports exactly what a real pass would remove if
// nothing changed meanwhile. It never stalls commits or runs: the image
// graph's lock is held only while deciding, the store's writer for short
// batches, and the layers' lock only to unlink (see CollectGarbage).
func (e *Engine) GC(ctx context.Context, opts GCOptions) (GCReport, error) {
	e.gcMu.Lock()
	defer e.gcMu.Unlock()
	rep := GCReport{DryRun: opts.DryRun}
	if !opts.DryRun {
		// This node's cache of uploads, whichever node's pass it is.
		if n, err := e.pruneLocalUploads(ctx); err != nil {
			e.log.Warn("retention: remove this node's copies of expired uploads", "err", err)
		} else if n > 0 {
			e.log.Info("retention: removed this node's copies of expired uploads", "contents", n)
		}
		if n, err := e.pruneLocalCheckpoints(ctx); err != nil { // checkpoint_cluster.go
			e.log.Warn("retention: remove this node's copies of deleted or expired checkpoints", "err", err)
		} else if n > 0 {
			e.log.Info("retention: removed this node's copies of deleted or expired checkpoints", "checkpoints", n)
		}
	}
	if pl, ok := e.st.(store.PassLocker); ok && !opts.DryRun {
		// Nodes sharing the metadata take turns (layers/s3store's guard
		// keeps each deletion safe whoever runs it).
		release, got, err := pl.TryPassLock(ctx)
		if err != nil {
			return rep, err
		}
		if !got {
			return rep, errGCElsewhere
		}
		defer release()
	}
	if e.cl != nil {
		// Images made on other nodes count as descendants too.
		if err := e.loadImages(ctx); err != nil {
			return rep, err
		}
	}
	now := e.now()
	expire, err := e.expirable(ctx, now, opts.Account)
	if err != nil {
		return rep, err
	}
	if testHookExpireDecided != nil {
		testHookExpireDecided()
	}
	if opts.DryRun {
		if err := e.dryCollect(ctx, expire, &rep); err != nil {
			return rep, err
		}
	} else {
		if err := e.expireImages(ctx, expire, &rep); err != nil {
			return rep, err
		}
		st, err := e.CollectGarbage(ctx)
		rep.Layers, rep.Bytes, rep.ImageRows = st.Layers, st.Bytes, st.ImageRows
		if err != nil {
			return rep, err
		}
	}
	if err := e.expireOperations(ctx, now, opts, &rep); err != nil {
		return rep, err
	}
	if err := e.expireUploads(ctx, now, opts, &rep); err != nil {
		return rep, err
	}
	if opts.Account == "" {
		n, b := e.expireCheckpoints(now, opts.DryRun, expire)
		rep.Checkpoints += n
		rep.CheckpointBytes += b
		if _, err := e.sweepSharedCheckpoints(ctx, now, opts.DryRun); err != nil { // checkpoint_cluster.go
			return rep, err
		}
	}
	if !opts.DryRun && (len(rep.Images) > 0 || rep.Operations > 0 || rep.Uploads > 0) {
		e.log.Info("retention", "images", len(rep.Images), "layers", rep.Layers, "bytes", rep.Bytes, "operations", rep.Operations, "events", rep.Events,
			"uploads", rep.Uploads, "upload_bytes", rep.UploadBytes)
	}
	return rep, nil
}

// expirable returns the live images retention may delete now (account's
// only, if not ""): untagged, older than their account's ImageTTL, not
// leased, and with no kept descendant (tagged, young, leased or of
// another policy), so the chain of every image that stays stays whole.
func (e *Engine) expirable(ctx context.Context, now time.Time, account string) (map[string]store.Image, error) {
	rows, err := e.st.AllImages(ctx) // tags and ages; the graph has neither
	if err != nil {
		return nil, err
	}
	byID := make(map[string]store.Image, len(rows))
	for _, r := range rows {
		byID[r.UUID] = r
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	candidate := map[string]bool{}
	for u, n := range e.images {
		if n.deleted || n.hidden || n.expiring || e.leased[u] > 0 || (account != "" && n.account != account) {
			continue
		}
		r, ok := byID[u] // a row recorded since the read is young
		ttl := e.RetentionOf(n.account).ImageTTL
		if ok && r.Tag == "" && ttl > 0 && now.Sub(r.CreatedAt) >= ttl {
			candidate[u] = true
		}
	}
	kept := e.keptLocked(candidate)
	out := map[string]store.Image{}
	for u := range candidate {
		if !kept[u] {
			out[u] = byID[u]
		}
	}
	return out, nil
}

// keptLocked returns the rows that stay as ancestors of what stays: every
// live image not in going, and every leased row. e.mu must be held.
func (e *Engine) keptLocked(going map[string]bool) map[string]bool {
	kept := map[string]bool{}
	for u, n := range e.images {
		if going[u] || ((n.deleted || n.hidden) && e.leased[u] == 0) {
			continue
		}
		for cur := n.parent; cur != "" && !kept[cur]; {
			kept[cur] = true
			m := e.images[cur]
			if m == nil {
				break
			}
			cur = m.parent
		}
	}
	return kept
}

// dryCollect fills rep with what expiring images and collecting would
// remove, removing nothing.
func (e *Engine) dryCollect(ctx context.Context, expire map[string]store.Image, rep *GCReport) error {
	set := make(map[string]bool, len(expire))
	for u := range expire {
		set[u] = true
	}
	var sizes map[string]int64
	ids, err := e.layers.Unneeded(ctx, func() map[string]bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		needed, neededImages, sz := e.gcRootsLocked(set)
		sizes = sz
		for u, n := range e.images {
			if (n.deleted || n.hidden || set[u]) && !neededImages[u] {
				rep.ImageRows++
			}
		}
		return needed
	})
	if err != nil {
		return err
	}
	rep.Layers = len(ids)
	for _, id := range ids {
		rep.Bytes += sizes[id]
	}
	rep.Images = gcImages(expire)
	e.freedOutside(ctx, slices.Collect(maps.Keys(expire)), rep)
	return nil
}

func gcImages(expire map[string]store.Image) []GCImage {
	out := make([]GCImage, 0, len(expire))
	for _, r := range expire {
		out = append(out, GCImage{UUID: r.UUID, Account: r.Account, CreatedAt: r.CreatedAt})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].UUID < out[j].UUID
	})
	return out
}

// expireBatch bounds the images one transaction deletes.
const expireBatch = 256

// expireImages deletes the images in expire as DeleteImage does (hidden
// at once, layers collected when nothing needs them), deepest first, in
// batches. While a batch is written its images take no new leases (a
// Spawn on one fails as on a deleted image), and they stay live for
// collections, so a batch that a concurrent tag aborts loses nothing.
func (e *Engine) expireImages(ctx context.Context, expire map[string]store.Image, rep *GCReport) error {
	order := make([]store.Image, 0, len(expire))
	for _, r := range expire {
		order = append(order, r)
	}
	// Descendants before ancestors: a batch that fails leaves ancestors of
	// what stays.
	slices.SortFunc(order, func(a, b store.Image) int { return b.Depth - a.Depth })
	var done []store.Image
	going := make(map[string]bool, len(expire)) // expiring, or expired, still
	for u := range expire {
		going[u] = true
	}
	for len(order) > 0 {
		batch := order[:min(expireBatch, len(order))]
		order = order[len(batch):]
		ids := make([]string, 0, len(batch))
		e.mu.Lock()
		kept := e.keptLocked(going)
		for _, r := range batch {
			// A lease or a child recorded since the decision keeps the
			// image, and so its ancestors in later batches.
			if n := e.images[r.UUID]; n != nil && !n.deleted && e.leased[r.UUID] == 0 && !kept[r.UUID] {
				n.expiring = true
				ids = append(ids, r.UUID)
			} else {
				delete(going, r.UUID)
			}
		}
		e.mu.Unlock()
		// What the batch frees outside the layers, counted before the
		// hooks below remove it (earlier batches' removals are seen).
		var freed GCReport
		e.freedOutside(ctx, ids, &freed)
		err := e.st.ExpireImages(ctx, ids)
		e.mu.Lock()
		for _, u := range ids {
			if n := e.images[u]; n != nil {
				n.expiring = false
				n.deleted = n.deleted || err == nil
			}
		}
		hooks := slices.Clone(e.onDeleted)
		e.mu.Unlock()
		if err != nil {
			if errdefs.IsConflict(err) {
				// Tagged meanwhile: the next pass decides again.
				e.log.Info("retention: an image was tagged while it expired; keeping this batch", "err", err)
				break
			}
			return err
		}
		rep.ExportBlobs += freed.ExportBlobs
		rep.ExportBytes += freed.ExportBytes
		rep.Checkpoints += freed.Checkpoints
		rep.CheckpointBytes += freed.CheckpointBytes
		for _, u := range ids {
			for _, fn := range hooks {
				fn(ctx, expire[u].Account, u)
			}
			done = append(done, expire[u])
		}
	}
	m := make(map[string]store.Image, len(done))
	for _, r := range done {
		m[r.UUID] = r
	}
	rep.Images = gcImages(m)
	return nil
}

// expiryScope is one selection of a retention pass: one account, or
// every account but except, with what it selects aged before before.
type expiryScope struct {
	account string
	except  []string
	before  time.Time
}

// expiryScopes returns the selections that apply the TTL ttl picks from
// each policy (account's only, if not ""): one per account with a policy
// of its own and one for all others, each with a TTL on.
func (e *Engine) expiryScopes(now time.Time, account string, ttl func(Retention) time.Duration) []expiryScope {
	if account != "" {
		if d := ttl(e.RetentionOf(account)); d > 0 {
			return []expiryScope{{account: account, before: now.Add(-d)}}
		}
		return nil
	}
	var out []expiryScope
	var except []string
	for a := range e.cfg.AccountRetention {
		except = append(except, a)
		if d := ttl(e.RetentionOf(a)); d > 0 {
			out = append(out, expiryScope{account: a, before: now.Add(-d)})
		}
	}
	if d := ttl(e.cfg.Retention); d > 0 {
		sort.Strings(except)
		out = append(out, expiryScope{except: except, before: now.Add(-d)})
	}
	return out
}

// expireOperations deletes (or counts) finished operations past their
// account's OperationTTL, with their event logs.
func (e *Engine) expireOperations(ctx context.Context, now time.Time, opts GCOptions, rep *GCReport) error {
	var sel []store.OperationExpiry
	for _, s := range e.expiryScopes(now, opts.Account, func(r Retention) time.Duration { return r.OperationTTL }) {
		sel = append(sel, store.OperationExpiry{Account: s.account, Except: s.except, FinishedBefore: s.before})
	}
	for _, f := range sel {
		if opts.DryRun {
			ops, evs, err := e.st.ExpiredOperations(ctx, f)
			if err != nil {
				return err
			}
			rep.Operations += ops
			rep.Events += evs
			continue
		}
		for {
			ops, evs, err := e.st.DeleteExpiredOperations(ctx, f)
			if err != nil {
				return err
			}
			rep.Operations += ops
			rep.Events += evs
			if ops == 0 {
				break
			}
		}
	}
	return nil
}

// errGCElsewhere: another node sharing the metadata runs a pass now.
var errGCElsewhere = errdefs.Conflict("a retention and collection pass is running on another node sharing this database: retry when it ends")

// testHookExpireDecided, when set by a test, runs once a GC pass has
// decided which images expire, before it deletes them.
var testHookExpireDecided func()

// testHookRetentionPass, when set by a test, is told about each background
// retention pass.
var testHookRetentionPass func(GCReport, error)

// startRetention runs GC every GCInterval under the engine's lifetime.
func (e *Engine) startRetention() {
	if e.cfg.GCInterval < 0 {
		return
	}
	t := e.cfg.Clock.NewTicker(e.cfg.GCInterval)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer t.Stop()
		for {
			select {
			case <-e.ctx.Done():
				return
			case <-t.Chan():
			}
			rep, err := e.GC(e.ctx, GCOptions{})
			if errors.Is(err, errGCElsewhere) {
				e.log.Debug("retention pass skipped: another node is running one")
				err = nil
			}
			if err != nil && e.ctx.Err() == nil {
				e.log.Warn("retention pass failed", "err", err)
			}
			if testHookRetentionPass != nil {
				testHookRetentionPass(rep, err)
			}
		}
	}()
}

// ParseRetention reads the --image-ttl, --operation-ttl and --upload-ttl
// flags: each value is a TTL for the daemon's default or ACCOUNT:TTL for one account.
// A TTL is a number of seconds ("86400"), a Go duration ("72h") or a
// number of days or weeks ("30d", "2w"); "0", "off" or "never" keeps
// forever.
func ParseRetention(imageTTL, operationTTL, uploadTTL []string) (Retention, map[string]Retention, error) {
	var def Retention
	per := map[string]Retention{}
	for _, f := range []struct {
		name string
		vals []string
		set  func(r *Retention, d time.Duration)
	}{
		{"image-ttl", imageTTL, func(r *Retention, d time.Duration) { r.ImageTTL = d }},
		{"operation-ttl", operationTTL, func(r *Retention, d time.Duration) { r.OperationTTL = d }},
		{"upload-ttl", uploadTTL, func(r *Retention, d time.Duration) { r.UploadTTL = d }},
	} {
		for _, v := range f.vals {
			account, ttl := "", strings.TrimSpace(v)
			if i := strings.LastIndex(ttl, ":"); i >= 0 {
				account, ttl = ttl[:i], ttl[i+1:]
				if account == "" {
					return def, nil, errdefs.InvalidArgument("--%s %q: the account before ':' is empty: use ACCOUNT:TTL or TTL", f.name, v)
				}
			}
			d, err := parseTTL(ttl)
			if err != nil {
				return def, nil, errdefs.InvalidArgument("--%s %q: %v: %s", f.name, v, err, ttlForms)
			}
			if account == "" {
				f.set(&def, d)
				continue
			}
			r := per[account]
			f.set(&r, d)
			per[account] = r
		}
	}
	return def, per, nil
}

// ttlForms is how an error about a TTL says what to write instead.
const ttlForms = "use seconds (86400), a duration such as 72h, 30d or 2w, or off"

// parseTTL parses a TTL: seconds or a duration as duration.Parse reads
// them (the CLI's other duration flags take the same); "off", "never" and
// zero are -1 (Config's "never").
func parseTTL(s string) (time.Duration, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "off", "never":
		return -1, nil
	}
	d, err := duration.Parse(s)
	switch {
	case err != nil:
		return 0, err
	case d < 0:
		return 0, errors.New("negative TTL")
	case d == 0:
		return -1, nil
	}
	return d, nil
}
