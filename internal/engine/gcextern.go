package engine

import "context"

// Stores outside the layer store keep data per image (the export
// registry's blobs) and drop it when the image is deleted (OnImageDeleted).
// What they free belongs in a GC pass's report, so `arbor gc --dry-run`
// says how many bytes come back in all; they report it through
// AddFreedBytes.

// AddFreedBytes registers fn, which reports what the store it speaks for
// frees when the images in gone are deleted: its blobs that no image
// outside gone still uses, and their bytes. fn must not call back into
// the engine.
func (e *Engine) AddFreedBytes(fn func(gone map[string]bool) (blobs int, bytes int64)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.freedElsewhere = append(e.freedElsewhere, fn)
}

// freedOutside adds to rep what the stores outside the layers free when
// the images ids are deleted.
func (e *Engine) freedOutside(ctx context.Context, ids []string, rep *GCReport) {
	gone := make(map[string]bool, len(ids))
	for _, u := range ids {
		gone[u] = true
	}
	e.mu.Lock()
	fns := e.freedElsewhere
	e.mu.Unlock()
	for _, fn := range fns {
		n, b := fn(gone)
		rep.ExportBlobs += n
		rep.ExportBytes += b
	}
	sizes, err := e.checkpointSizes(ctx, ids)
	if err != nil {
		e.log.Warn("retention: count the checkpoints of expiring images", "err", err)
	}
	for _, b := range sizes {
		rep.Checkpoints++
		rep.CheckpointBytes += b
	}
}
