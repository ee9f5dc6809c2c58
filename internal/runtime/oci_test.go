package runtime

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/arborsh/arbor/internal/archive"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/overlay"
	"github.com/arborsh/arbor/internal/testutil"
)

// TestDestroyBooted: a booted sandbox is destroyed through pidfds on its
// host processes (no runtime process on the path), every one of them is
// dead when Destroy returns, and the runtime's state is gone after Close.
func TestDestroyBooted(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, kind := range []string{"runsc", "runc"} {
		t.Run(kind, func(t *testing.T) {
			o, rootfs, bundle := busyboxOCI(t, kind)
			id := "destroy-" + kind
			if err := o.Boot(context.Background(), Spec{ID: id, Bundle: bundle, Rootfs: rootfs, Args: []string{"/bin/sleep", "1000"},
				Env: []string{"PATH=/bin"}, Cwd: "/", Hostname: "t"}); err != nil {
				t.Fatal(err)
			}
			o.mu.Lock()
			fds := append([]int(nil), o.inits[id]...)
			o.mu.Unlock()
			want := map[string]int{"runsc": 2, "runc": 1}[kind]
			if len(fds) != want {
				t.Fatalf("%d host processes watched, want %d (sandbox and gofer for runsc, init for runc)", len(fds), want)
			}
			var pids []int
			for _, fd := range fds {
				b, _ := os.ReadFile("/proc/self/fdinfo/" + itoa(fd))
				for _, line := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(line, "Pid:"); ok {
						pids = append(pids, atoi(strings.TrimSpace(v)))
					}
				}
			}
			if len(pids) != want {
				t.Fatalf("pids of the watched processes: %v", pids)
			}
			if err := o.Destroy(context.Background(), id); err != nil {
				t.Fatal(err)
			}
			for _, pid := range pids {
				// Gone, or a zombie its parent has not reaped yet.
				if b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat"); err == nil && !strings.Contains(string(b), ") Z ") {
					t.Errorf("process %d alive after Destroy: %s", pid, b)
				}
			}
			if err := o.Close(context.Background()); err != nil { // waits for the background delete
				t.Error(err)
			}
			out, _ := exec.Command(o.Path(), "--root="+o.root, "list", "--quiet").Output()
			if strings.TrimSpace(string(out)) != "" {
				t.Errorf("state left: %s", out)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// busyboxOCI returns a driver for kind with its state in a temporary
// directory, a busybox root filesystem and an empty bundle directory.
func busyboxOCI(t *testing.T, kind string) (o *OCI, rootfs, bundle string) {
	t.Helper()
	dir := t.TempDir()
	rootfs, bundle = filepath.Join(dir, "rootfs"), filepath.Join(dir, "bundle")
	for _, d := range []string{rootfs, bundle} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var tarball bytes.Buffer
	if err := baseimage.WriteBusyboxTar(&tarball); err != nil {
		t.Fatal(err)
	}
	if _, err := archive.ApplyTar(context.Background(), &tarball, rootfs, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	// runsc keeps a network-namespace mount in its state directory.
	t.Cleanup(func() { overlay.UnmountUnder(filepath.Join(dir, "state")) })
	o, err := NewOCI(kind, "", filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	return o, rootfs, bundle
}
