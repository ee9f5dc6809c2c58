package registry

import "os"

// freedBytes reports the blobs (and their bytes on disk) that deleting
// the images in gone would remove: those of their exports that no export
// of an image outside gone uses (see imageDeleted). The engine counts
// them in its GC reports.
func (x *Exporter) freedBytes(gone map[string]bool) (blobs int, bytes int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.loadLocked()
	seen := map[string]bool{}
	for _, rec := range x.records {
		if !gone[rec.Image] {
			continue
		}
		for _, d := range rec.blobs() {
			if seen[d] || x.usedOutside(d, gone) {
				continue
			}
			seen[d] = true
			if fi, err := os.Stat(x.blobPath(d)); err == nil {
				blobs++
				bytes += fi.Size()
			}
		}
	}
	return blobs, bytes
}

// usedOutside reports whether an export of an image not in gone uses
// blob d. x.mu must be held.
func (x *Exporter) usedOutside(d string, gone map[string]bool) bool {
	for key := range x.byBlob[d] {
		if rec := x.records[key]; rec != nil && !gone[rec.Image] {
			return true
		}
	}
	return false
}
