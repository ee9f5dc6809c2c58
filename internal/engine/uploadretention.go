package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/store"
)

// Uploaded files are staging for runs, not storage: a run copies them into
// its sandbox, and the image it makes keeps them. Until uploads expired, an
// agent's uploads grew its account for ever.
//
// Rule: an upload goes UploadTTL (default 180 days) after its last use,
// where use is its upload, a re-upload of the same content, or a run that
// names it (Spawn touches it). A run queued behind others therefore finds
// its files: it touched them when it was spawned, far less than a TTL
// ago. The content on disk goes with the last record naming it (records
// of other accounts may share it).
//
// Why so long: ConTree's CLI keeps the uuid of each file it uploaded for
// 90 days and sends it without asking the server again ("server
// retention is 6 months"); an upload gone sooner fails its next run with
// a 404 it does not recover from.

// DefaultUploadTTL keeps uploads six months after their last use, the
// retention ConTree's clients count on.
const DefaultUploadTTL = 180 * 24 * time.Hour

// touchFiles marks account's files uuids as used now: a run named them. A
// file that expired between its lookup and now is not found.
func (e *Engine) touchFiles(ctx context.Context, account string, uuids []string) error {
	if len(uuids) == 0 {
		return nil
	}
	n, err := e.st.TouchFiles(ctx, account, uuids, e.now())
	if err != nil {
		return err
	}
	if n < len(uuids) {
		return errdefs.NotFound("a file of this run expired just now (uploads go %v after their last use): upload it again (POST /v1/files)", e.RetentionOf(account).UploadTTL)
	}
	return nil
}

// expireUploads deletes (or counts) uploads past their account's
// UploadTTL, and the contents no record names any more.
func (e *Engine) expireUploads(ctx context.Context, now time.Time, opts GCOptions, rep *GCReport) error {
	var sel []store.FileExpiry
	for _, s := range e.expiryScopes(now, opts.Account, func(r Retention) time.Duration { return r.UploadTTL }) {
		sel = append(sel, store.FileExpiry{Account: s.account, Except: s.except, UsedBefore: s.before, DryRun: opts.DryRun})
	}
	// Held from the records' deletion to the blobs' removal: an upload of
	// the same content meanwhile records it only once its blob is back.
	e.filesMu.Lock()
	defer e.filesMu.Unlock()
	shared := e.cl != nil && e.cl.cfg.Files != nil
	var unnamed []string
	for _, f := range sel {
		gone, orphans, err := e.st.ExpireFiles(ctx, f)
		if err != nil {
			return err
		}
		rep.Uploads += len(gone)
		unnamed = append(unnamed, orphans...)
		for _, sha := range orphans {
			p := e.blobPath(sha)
			fi, err := os.Stat(p)
			if err != nil {
				continue
			}
			if !opts.DryRun {
				if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
					e.log.Warn("retention: remove an uploaded file's content", "sha256", sha, "err", err)
					continue
				}
			}
			if !shared { // a cluster counts the bucket's copies below
				rep.UploadBytes += fi.Size()
			}
		}
	}
	if shared {
		// The bucket holds every node's uploads: collected under its rules
		// (no record names the content, no node holds it, older than the
		// grace period), as its layers are; a pass over one account's
		// uploads, only the contents it left unnamed.
		_, b, err := e.cl.cfg.Files.CollectFiles(ctx, opts.DryRun, unnamed, opts.Account != "")
		if err != nil {
			return err
		}
		rep.UploadBytes += b
	}
	return nil
}

// fileUUIDs lists the distinct file uuids of a run's files.
func fileUUIDs(files map[string]oplog.FileSpec) []string {
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		if !seen[f.UUID] {
			seen[f.UUID] = true
			out = append(out, f.UUID)
		}
	}
	return out
}

// pruneLocalUploads removes this node's copies of uploaded contents that no
// file record names any more, on a cluster: there the contents live in the
// bucket, and a node's copies (uploads it received, contents its runs
// fetched) are a cache that would otherwise only grow. It runs at each of
// this node's retention ticks, whichever node's pass it is.
func (e *Engine) pruneLocalUploads(ctx context.Context) (int, error) {
	if e.cl == nil || e.cl.cfg.Files == nil {
		return 0, nil
	}
	ents, err := os.ReadDir(filepath.Dir(e.blobPath(strings.Repeat("0", 64))))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var shas []string
	for _, ent := range ents {
		if IsSHA256(ent.Name()) {
			shas = append(shas, strings.ToLower(ent.Name()))
		}
	}
	// Held from the lookup to the removals: an upload here records its
	// content only once its copy is in place (PutFile).
	e.filesMu.Lock()
	defer e.filesMu.Unlock()
	named, err := e.st.NamedContents(ctx, shas)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, sha := range shas {
		if named[sha] {
			continue
		}
		if err := os.Remove(e.blobPath(sha)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return n, err
		}
		n++
	}
	return n, nil
}
