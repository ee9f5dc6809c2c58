package overlay

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arborsh/arbor/internal/testutil"
)

func TestMountDepths(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, depth := range []int{1, 2, 50, 120, MaxLayers} {
		t.Run(fmt.Sprint(depth), func(t *testing.T) {
			// Long paths: the classic mount(2) option page would truncate these.
			base := filepath.Join(t.TempDir(), "a-rather-long-directory-name-to-fill-the-option-page")
			var lowers []string
			for i := range depth {
				d := filepath.Join(base, fmt.Sprintf("layer-%04d", i))
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
				// Each layer holds its own file; the top layer's copy of "shared" wins.
				os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), nil, 0o644)
				os.WriteFile(filepath.Join(d, "shared"), []byte(fmt.Sprint(i)), 0o644)
				lowers = append([]string{d}, lowers...)
			}
			upper, work, target := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
			for _, d := range []string{upper, work, target} {
				os.MkdirAll(d, 0o755)
			}
			if err := Mount(lowers, upper, work, target); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { Unmount(target) })
			ents, _ := os.ReadDir(target)
			if len(ents) != depth+1 {
				t.Fatalf("merged dir has %d entries, want %d", len(ents), depth+1)
			}
			b, _ := os.ReadFile(filepath.Join(target, "shared"))
			if string(b) != fmt.Sprint(depth-1) {
				t.Fatalf("shared = %q, want top layer's %d", b, depth-1)
			}
			if err := os.WriteFile(filepath.Join(target, "new"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(upper, "new")); err != nil {
				t.Fatalf("write did not reach upper dir: %v", err)
			}
			if err := Unmount(target); err != nil {
				t.Fatal(err)
			}
			if IsMounted(target) {
				t.Fatal("still mounted after Unmount")
			}
		})
	}
}

// TestMountRejectsTooDeep: one layer over the limit is refused by the
// depth check itself (the lowers are real directories, so no other check
// can be what fails), and nothing is mounted.
func TestMountRejectsTooDeep(t *testing.T) {
	base := t.TempDir()
	lowers := make([]string, MaxLayers+1)
	for i := range lowers {
		lowers[i] = filepath.Join(base, fmt.Sprintf("layer-%04d", i))
		if err := os.Mkdir(lowers[i], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	target := t.TempDir()
	err := Mount(lowers, "", "", target)
	if IsMounted(target) {
		Unmount(target)
		t.Fatalf("Mount with %d layers mounted the overlay (err %v)", len(lowers), err)
	}
	want := fmt.Sprintf("%d layers exceed the kernel limit of %d", MaxLayers+1, MaxLayers)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Mount with %d layers: %v, want an error saying %q", len(lowers), err, want)
	}
}

func TestSplitUnescaped(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{`/a:/b:/c`, 3},
		{`/a\:x:/b`, 2},
		{`/a::/data`, 3},
	}
	for _, tc := range tests {
		if got := len(splitUnescaped(tc.in, ':')); got != tc.want {
			t.Errorf("splitUnescaped(%q) = %d parts, want %d", tc.in, got, tc.want)
		}
	}
}
