package overlay

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/testutil"
)

// idmapStack makes depth lower layers (each with a root-owned file) under
// one parent, and upper, work and merged beside them.
func idmapStack(t testing.TB, depth int) (lowers []string, upper, work, target string) {
	base := t.TempDir()
	for i := range depth {
		d := filepath.Join(base, "layers", fmt.Sprintf("l%04d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), []byte("x"), 0o644)
		lowers = append([]string{d}, lowers...)
	}
	run := filepath.Join(base, "run")
	upper, work, target = filepath.Join(run, "upper"), filepath.Join(run, "work"), filepath.Join(run, "merged")
	for _, d := range []string{upper, work, target} {
		os.MkdirAll(d, 0o755)
	}
	return lowers, upper, work, target
}

func owner(t testing.TB, p string) uint32 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

// TestMountAsIDMapped: through the mapping, root's files are owned by the
// host id, the host id's writes are stored as uid 0, every layer is
// stacked, and mountinfo names no host path.
func TestMountAsIDMapped(t *testing.T) {
	testutil.RequiresRoot(t)
	const host = 1<<30 + 7<<16
	ns, err := NewUserns(host, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	for _, depth := range []int{1, MaxLayers} {
		t.Run(fmt.Sprint(depth), func(t *testing.T) {
			lowers, upper, work, target := idmapStack(t, depth)
			if err := MountAs(lowers, upper, work, target, ns); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { Unmount(target) })
			if got := owner(t, filepath.Join(target, "f0")); got != host {
				t.Errorf("lower file owner through the mount = %d, want %d", got, host)
			}
			err := AsHostID(host, func() error {
				if err := os.WriteFile(filepath.Join(target, "new"), []byte("y"), 0o644); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(target, "owned"), nil, 0o644); err != nil {
					return err
				}
				return os.Chown(filepath.Join(target, "owned"), host+1000, host+1000)
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := owner(t, filepath.Join(upper, "new")); got != 0 {
				t.Errorf("file written by the host id is stored as uid %d, want 0", got)
			}
			if got := owner(t, filepath.Join(upper, "owned")); got != 1000 {
				t.Errorf("chowned file stored as uid %d, want 1000", got)
			}
			b, _ := os.ReadFile("/proc/self/mountinfo")
			for _, l := range strings.Split(string(b), "\n") {
				_, opts, _ := strings.Cut(l, " - ")
				if strings.Contains(l, " "+target+" ") && (strings.Contains(opts, filepath.Dir(upper)) || !strings.Contains(opts, "upperdir=/run/upper,")) {
					t.Errorf("mountinfo shows host paths in the overlay's options: %.300s", opts)
				}
			}
		})
	}
}

// TestMountAsKeepsClones: mounts through one namespace share its idmapped
// clones of the layer store and of the run directory (closing a clone is
// an unmount, which waits for an RCU grace period the kernel serialises),
// and a clone whose directory was replaced meanwhile is made afresh.
func TestMountAsKeepsClones(t *testing.T) {
	testutil.RequiresRoot(t)
	const host = 1<<30 + 9<<16
	ns, err := NewUserns(host, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	lowers, upper, work, target := idmapStack(t, 3)
	mount := func(want string) map[string]int {
		t.Helper()
		if err := MountAs(lowers, upper, work, target, ns); err != nil {
			t.Fatal(err)
		}
		defer Unmount(target)
		if b, err := os.ReadFile(filepath.Join(target, want)); err != nil || string(b) != "x" {
			t.Fatalf("%s through the mount: %q, %v", want, b, err)
		}
		ns.mu.Lock()
		defer ns.mu.Unlock()
		kept := map[string]int{}
		for dir, fd := range ns.clones {
			kept[dir] = fd
		}
		return kept
	}
	first := mount("f0")
	store, runs := filepath.Dir(lowers[0]), filepath.Dir(filepath.Dir(upper))
	if len(first) != 2 || first[store] == 0 || first[runs] == 0 {
		t.Fatalf("clones kept after a mount: %v, want the layer store %s and %s", first, store, runs)
	}
	if second := mount("f1"); !maps.Equal(first, second) {
		t.Errorf("second mount made new clones: %v, then %v", first, second)
	}
	// The store is replaced: the kept clone still shows the old one.
	if err := os.Rename(store, store+".old"); err != nil {
		t.Fatal(err)
	}
	for _, l := range lowers {
		os.MkdirAll(l, 0o755)
		os.WriteFile(filepath.Join(l, "fresh"), []byte("x"), 0o644)
	}
	mount("fresh")
	ns.Close()
	ns.mu.Lock()
	n := len(ns.clones)
	ns.mu.Unlock()
	if n != 0 {
		t.Errorf("%d clones left after Close", n)
	}
}

// BenchmarkMountAs compares a plain mount with an idmapped one, the user
// namespace included (one per sandbox).
func BenchmarkMountAs(b *testing.B) {
	testutil.RequiresRoot(b)
	for _, mapped := range []bool{false, true} {
		b.Run(fmt.Sprintf("idmap=%v", mapped), func(b *testing.B) {
			lowers, upper, work, target := idmapStack(b, 20)
			start := time.Now()
			for range b.N {
				var ns *Userns
				if mapped {
					var err error
					if ns, err = NewUserns(1<<30, 1<<16); err != nil {
						b.Fatal(err)
					}
				}
				if err := MountAs(lowers, upper, work, target, ns); err != nil {
					b.Fatal(err)
				}
				ns.Close()
				Unmount(target)
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "us/mount")
		})
	}
}
