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
	"time"

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

// TestBootCancelledLeavesNothing: a boot whose context ends at any moment
// (the engine's Close cancels the pool's boots) either returns a sandbox
// or leaves none behind: the runtime is not killed between forking the
// sandbox and recording it, which left a sandbox no Destroy could find.
func TestBootCancelledLeavesNothing(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, kind := range []string{"runsc", "runc"} {
		t.Run(kind, func(t *testing.T) {
			o, rootfs, bundle := busyboxOCI(t, kind)
			// Cancelled 0-237 ms into the boot: under runsc, without the fix,
			// one cut at ~150 ms left its sandbox and gofer running.
			for i := range 80 {
				id := "cancel-" + kind + "-" + itoa(i)
				mark := itoa(7000 + i) // the sleep's argument names its process
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(time.Duration(i)*3*time.Millisecond, cancel)
				err := o.Boot(ctx, Spec{ID: id, Bundle: bundle, Rootfs: rootfs, Args: []string{"/bin/sleep", mark},
					Env: []string{"PATH=/bin"}, Cwd: "/", Hostname: "t"})
				if err == nil {
					if err := o.Destroy(context.Background(), id); err != nil {
						t.Fatal(err)
					}
				} else if ctx.Err() == nil {
					t.Fatalf("boot %d: %v", i, err)
				}
				cancel()
				if left := waitGone(id, mark); left != "" {
					t.Fatalf("boot cancelled after %d ms left %s", i*3, left)
				}
				_ = os.Remove(filepath.Join(bundle, "init.pid"))
			}
		})
	}
}

// waitGone waits up to 10 s for every live process naming id or running
// `sleep mark` to end, and returns one left, if any.
func waitGone(id, mark string) string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := ""
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil || len(cmd) == 0 { // gone, or a zombie
				continue
			}
			c := string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
			if strings.Contains(c, id) || strings.TrimSpace(c) == "/bin/sleep "+mark {
				left = "process " + e.Name() + ": " + c
				break
			}
		}
		if left == "" || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond) // polling /proc: the processes' own exit
	}
}
