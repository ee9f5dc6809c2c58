package archive

import (
	"bytes"
	"io"
	"os"
)

// sparseBlock is the granularity of holes: a filesystem block.
const sparseBlock = 4096

var zeroBlock = make([]byte, sparseBlock)

// SparseWriter writes to a new (empty) file, seeking over whole blocks of
// zeros instead of writing them, so that holes (a sparse file in an image,
// or its tar stream's zero content) stay holes on disk. Close sets the
// file's size; without it a file that ends in a hole is short.
type SparseWriter struct {
	f   *os.File
	off int64 // bytes written or skipped
	end int64 // bytes actually written up to (file size so far)
}

// NewSparseWriter returns a SparseWriter on f, which must be empty and
// positioned at 0.
func NewSparseWriter(f *os.File) *SparseWriter { return &SparseWriter{f: f} }

func (w *SparseWriter) Write(p []byte) (int, error) {
	n := 0
	data := 0 // start in p of the data run not yet written
	flush := func(upto int) error {
		if upto > data {
			if _, err := w.f.WriteAt(p[data:upto], w.off-int64(n-data)); err != nil {
				return err
			}
			w.end = w.off
		}
		return nil
	}
	for n < len(p) {
		// Up to the next block boundary of the file, so a block is either
		// written or skipped whole.
		k := min(len(p)-n, int(sparseBlock-w.off%sparseBlock))
		if k == sparseBlock && bytes.Equal(p[n:n+k], zeroBlock) {
			if err := flush(n); err != nil {
				return data, err
			}
			data = n + k
		}
		n += k
		w.off += int64(k)
	}
	if err := flush(n); err != nil {
		return data, err
	}
	return n, nil
}

// ReadFrom copies r with a large buffer.
func (w *SparseWriter) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	return io.CopyBuffer(struct{ io.Writer }{w}, r, buf)
}

// Close extends the file over a trailing hole and leaves its offset at the
// end. It does not close the file.
func (w *SparseWriter) Close() error {
	if w.end < w.off {
		if err := w.f.Truncate(w.off); err != nil {
			return err
		}
	}
	_, err := w.f.Seek(w.off, io.SeekStart)
	return err
}
