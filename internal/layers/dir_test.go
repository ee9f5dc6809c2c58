package layers_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/arborsh/arbor/internal/layers"
	"github.com/arborsh/arbor/internal/layers/storagetest"
)

func TestDirConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) (layers.Storage, string) {
		home := t.TempDir()
		d, err := layers.NewDir(filepath.Join(home, "layers"), filepath.Join(home, "trash"))
		if err != nil {
			t.Fatal(err)
		}
		staging := filepath.Join(home, "tmp")
		if err := os.Mkdir(staging, 0o700); err != nil {
			t.Fatal(err)
		}
		return d, staging
	})
}
