package layerfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mountOverlay mounts layers (top first) read-only with overlayfs and returns
// the mount point; extraOpts is appended to the mount options.
func mountOverlay(t *testing.T, layers []string, extraOpts string) string {
	t.Helper()
	mnt, err := os.MkdirTemp(filepath.Dir(layers[0]), "mnt")
	if err != nil {
		t.Fatal(err)
	}
	opts := "lowerdir=" + strings.Join(layers, ":") + extraOpts
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, opts); err != nil {
		t.Fatalf("mount overlay %s: %v", opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// TestMatchesKernelOverlay checks the merged view against the kernel's: the
// same layers mounted with overlayfs must walk to the same entries.
func TestMatchesKernelOverlay(t *testing.T) {
	tests := []struct {
		name      string
		layers    func(t *testing.T) []string
		extraOpts string
	}{
		{
			name:   "trusted xattrs",
			layers: func(t *testing.T) []string { return newImage(t).layers },
		},
		{
			// With userxattr the kernel reads user.overlay.opaque instead.
			name: "user xattrs",
			layers: func(t *testing.T) []string {
				requireRoot(t)
				return buildLayers(t, tempDir(t),
					[]ent{
						{path: "/d", kind: 'u'},
						file("/d/c", "c\n"),
						whiteout("/keep"),
						file("/e/y", "y\n"),
						{path: "/e/sub", kind: 'u'},
					},
					[]ent{
						file("/d/a", "a\n"),
						file("/d/b", "b\n"),
						file("/e/x", "x\n"),
						file("/e/sub/hidden", "h\n"),
						file("/keep", "k\n"),
					},
				)
			},
			extraOpts: ",userxattr",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			layers := tc.layers(t)
			mnt := mountOverlay(t, layers, tc.extraOpts)
			compareRecs(t, recsOf(t, New(layers)), hostRecs(t, mnt))
		})
	}
}
