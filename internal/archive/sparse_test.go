package archive

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSparseWriter: content written in odd-sized pieces reads back equal,
// and whole blocks of zeros take no disk space.
func TestSparseWriter(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var want bytes.Buffer
	want.Write(bytes.Repeat([]byte{1}, 1000))  // data, then zeros over block boundaries
	want.Write(make([]byte, 8<<20))            // a hole
	want.Write(bytes.Repeat([]byte{2}, 5000))  // data not aligned
	want.Write(make([]byte, 3*sparseBlock+17)) // zeros, unaligned
	want.Write([]byte{3})                      //
	want.Write(make([]byte, 16<<20))           // a trailing hole
	p := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w := NewSparseWriter(f)
	for b := want.Bytes(); len(b) > 0; {
		k := min(len(b), 1+rng.Intn(300000))
		if n, err := w.Write(b[:k]); err != nil || n != k {
			t.Fatalf("Write = %d, %v", n, err)
		}
		b = b[k:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("content differs: %d bytes, want %d", len(got), want.Len())
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > 1<<20 {
		t.Errorf("%d bytes on disk for %d with %d of data, want the zeros left as holes", used, want.Len(), 6018)
	}
}
