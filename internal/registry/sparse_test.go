package registry

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/archive"
)

// sparseSize is the sparse file of these tests: a few bytes of data in
// 256 MiB, four times the limit below, so one materialised copy fails the
// test. (2 GiB made this the longest test of the suite under -race: the
// streams are gzipped.)
const sparseSize = 256 << 20

// du is the disk space the files under p take, as du counts it.
func du(t *testing.T, p string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(q, &st); err != nil {
			return err
		}
		total += st.Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// writeSparseFile makes a sparseSize file at p with data at both ends.
func writeSparseFile(p string) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("head"), 0); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte("tail"), sparseSize-4); err != nil {
		return err
	}
	return f.Close()
}

// TestSparseFilesStaySparse: a 256 MiB sparse file does not become 256 MiB of
// disk in the export registry's blobs (flattened and layered), in the
// staging of a compressed docker save archive, or in the image it is
// imported into.
func TestSparseFilesStaySparse(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 256 MiB several times")
	}
	e, im := newEngine(t, Options{})
	ctx := context.Background()
	const limit = 64 << 20 // what "not materialised" means here: 256 MiB of zeros gzip to about 256 KiB

	// Export.
	id, err := e.NewBaseImage(ctx, acct, func(dir string) error { return writeSparseFile(filepath.Join(dir, "big")) })
	if err != nil {
		t.Fatal(err)
	}
	img, err := e.Image(ctx, acct, id)
	if err != nil {
		t.Fatal(err)
	}
	x := ExportHandler(e, nil)
	for _, variant := range []string{"", variantLayers} {
		start := time.Now()
		if _, err := x.export(ctx, acct, img, variant); err != nil {
			t.Fatalf("export %q: %v", variant, err)
		}
		t.Logf("export %q took %v", variant, time.Since(start).Round(time.Millisecond))
	}
	if used := du(t, filepath.Join(e.Home(), "registry", "blobs")); used > limit {
		t.Errorf("export blobs take %d bytes on disk, want at most %d", used, limit)
	} else {
		t.Logf("export blobs: %d bytes on disk", used)
	}

	// A gzip-compressed docker save archive whose (uncompressed) layer
	// holds the sparse file, as `docker save | gzip` makes.
	dir := t.TempDir()
	layerPath := filepath.Join(dir, "layer.tar")
	lf, err := os.Create(layerPath)
	if err != nil {
		t.Fatal(err)
	}
	sw := archive.NewSparseWriter(lf)
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(sw, diff))
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "big", Mode: 0o644, Size: sparseSize, ModTime: fixedTime}); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := writeSparseFile(big); err != nil {
		t.Fatal(err)
	}
	bf, err := os.Open(big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(tw, bf); err != nil {
		t.Fatal(err)
	}
	bf.Close()
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	layerSize, _ := lf.Seek(0, io.SeekCurrent)
	diffID := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diff.Sum(nil))}
	cfg, _ := json.Marshal(v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{diffID}}})
	man, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{"sparse:v1"}, "Layers": []string{"layer.tar"}}})
	archivePath := filepath.Join(dir, "image.tar.gz")
	af, err := os.Create(archivePath)
	if err != nil {
		t.Fatal(err)
	}
	zw, _ := gzip.NewWriterLevel(af, gzip.BestSpeed)
	atw := tar.NewWriter(zw)
	for _, f := range []struct {
		name string
		body []byte
	}{{"config.json", cfg}, {"manifest.json", man}} {
		if err := atw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := atw.Write(f.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := atw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "layer.tar", Mode: 0o644, Size: layerSize}); err != nil {
		t.Fatal(err)
	}
	if _, err := lf.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(atw, lf); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	os.Remove(layerPath)
	if err := atw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	af.Close()

	// Staging: the decompressed archive keeps the holes.
	arch, err := os.Open(archivePath)
	if err != nil {
		t.Fatal(err)
	}
	defer arch.Close()
	fi, _ := arch.Stat()
	ra, size, cleanup, err := im.seekable(ctx, e, arch, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	staged, ok := ra.(*os.File)
	if !ok || size < sparseSize {
		t.Fatalf("staging: %T of %d bytes, want a file of more than %d", ra, size, int64(sparseSize))
	}
	if used := du(t, staged.Name()); used > limit {
		t.Errorf("the staged archive takes %d bytes on disk, want at most %d", used, limit)
	} else {
		t.Logf("staged archive: %d bytes, %d on disk", size, used)
	}
	cleanup()

	// Import: the image's file is sparse too, and reads back whole.
	start := time.Now()
	got, err := im.ImportArchive(ctx, e, acct, arch, fi.Size())
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	t.Logf("import took %v", time.Since(start).Round(time.Millisecond))
	fsys, release, err := e.ImageFS(ctx, acct, got)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	f, st, err := fsys.Open("/big")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ust unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &ust); err != nil {
		t.Fatal(err)
	}
	if st.Size != sparseSize || ust.Blocks*512 > limit {
		t.Errorf("imported /big: %d bytes, %d on disk; want %d bytes and at most %d on disk", st.Size, ust.Blocks*512, int64(sparseSize), limit)
	}
	tail := make([]byte, 4)
	if _, err := f.ReadAt(tail, sparseSize-4); err != nil || string(tail) != "tail" {
		t.Errorf("imported /big ends in %q, %v", tail, err)
	}
}
