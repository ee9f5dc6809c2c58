package cli

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/client"
)

// TestImportDirStagingStaysSparse: `arbor import DIR` stages the tree as a
// tar before uploading it; a 1 GiB sparse file in the tree stays holes in
// that staged archive (measured while the upload is asked for).
func TestImportDirStagingStaysSparse(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	tree := t.TempDir()
	const size = 1 << 30
	f, err := os.Create(filepath.Join(tree, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("end"), size-3); err != nil {
		t.Fatal(err)
	}
	f.Close()
	staged := int64(-1)
	var stagedSize int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m, _ := filepath.Glob(filepath.Join(tmp, "arbor-import-*.tar")); len(m) == 1 && staged < 0 {
			var st unix.Stat_t
			if unix.Stat(m[0], &st) == nil {
				staged, stagedSize = st.Blocks*512, st.Size
			}
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":"not found"}`)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, "token")
	if err != nil {
		t.Fatal(err)
	}
	g := &globals{stdout: io.Discard, stderr: io.Discard}
	// The fake daemon answers 404 to everything, so the upload fails.
	_, err = g.importURL(context.Background(), c, newProgress(io.Discard, false), tree)
	t.Logf("import: %v", err)
	if staged < 0 {
		t.Fatal("no staged archive was seen during the upload")
	}
	if stagedSize < size || staged > 16<<20 {
		t.Errorf("staged archive: %d bytes, %d on disk; want more than %d bytes and at most 16 MiB on disk", stagedSize, staged, size)
	}
	t.Logf("staged archive: %d bytes, %d on disk", stagedSize, staged)
}
