package runtime

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/testutil"
)

// TestSweepCgroups: Cleanup's sweep removes the sandbox cgroups of its own
// state directory, killing what is left in them, and empty ones of other
// state directories untouched for staleCgroupAge; it keeps other
// directories' cgroups that hold a process or were made recently. Only
// the test's own cgroups (named with its tag) are swept.
func TestSweepCgroups(t *testing.T) {
	testutil.RequiresRoot(t)
	if len(cgroupMounts()) == 0 {
		t.Fatal("no cgroup hierarchy is mounted")
	}
	o, err := NewOCI("runc", "", filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("sweeptest%d", os.Getpid())
	own := func(s string) string { return o.scope + "-" + tag + s }
	other := func(s string) string { return "ffffffff-" + tag + s }
	mk := func(name string, age time.Duration) {
		for _, d := range cgroupDirs("/arbor/" + name) {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if age > 0 {
				then := time.Now().Add(-age)
				if err := os.Chtimes(d, then, then); err != nil {
					t.Fatal(err)
				}
			}
		}
		t.Cleanup(func() {
			for _, d := range cgroupDirs("/arbor/" + name) {
				_ = os.Remove(d)
			}
		})
	}
	// join starts a process in cgroup name (every hierarchy that takes it).
	join := func(name string) *exec.Cmd {
		cmd := exec.Command("sleep", "1000")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		joined := 0
		for _, d := range cgroupDirs("/arbor/" + name) {
			if os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0) == nil {
				joined++
			}
		}
		if joined == 0 {
			t.Fatalf("the process joined no hierarchy of cgroup %s", name)
		}
		return cmd
	}
	exists := func(name string) bool {
		for _, d := range cgroupDirs("/arbor/" + name) {
			if _, err := os.Stat(d); err == nil {
				return true
			}
		}
		return false
	}
	old := 2 * staleCgroupAge
	mk(own("-empty"), 0)
	mk(own("-busy"), 0)
	ownBusy := join(own("-busy"))
	mk(other("-old"), old)
	mk(other("-new"), 0)
	mk(other("-busy"), old)
	otherBusy := join(other("-busy"))

	if err := o.sweepCgroups(context.Background(), func(name string) bool { return strings.Contains(name, tag) }); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		own("-empty"): false, own("-busy"): false, other("-old"): false,
		other("-new"): true, other("-busy"): true,
	} {
		if exists(name) != want {
			t.Errorf("cgroup %s exists: %v, want %v", name, !want, want)
		}
	}
	waited := make(chan error, 1)
	go func() { waited <- ownBusy.Wait() }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Error("the process left in the driver's own cgroup was not killed")
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", otherBusy.Process.Pid)); err != nil || strings.Contains(string(b), ") Z ") {
		t.Error("the process in another directory's cgroup was killed")
	}
}

// TestSweepCgroupsRecorded: a sandbox of the driver's own state directory
// that its runtime recorded but Cleanup's list did not name (a launch a
// killed daemon left running records it late) goes whole: its processes,
// the runtime's record of it and its cgroup.
func TestSweepCgroupsRecorded(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, kind := range []string{"runsc", "runc"} {
		t.Run(kind, func(t *testing.T) {
			o, rootfs, bundle := busyboxOCI(t, kind)
			id := "sweep-" + kind
			if err := o.Boot(context.Background(), Spec{ID: id, Bundle: bundle, Rootfs: rootfs, Args: []string{"/bin/sleep", "1000"},
				Env: []string{"PATH=/bin"}, Cwd: "/", Hostname: "t"}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = o.Destroy(context.Background(), id) })
			// The daemon that booted it is gone: a new driver on its state.
			o2, err := NewOCI(kind, "", o.root)
			if err != nil {
				t.Fatal(err)
			}
			name := strings.TrimPrefix(o2.cgroupsPath(id), "/arbor/")
			if err := o2.sweepCgroups(context.Background(), func(n string) bool { return n == name }); err != nil {
				t.Fatal(err)
			}
			if cgroupInUse(cgroupDirs(o2.cgroupsPath(id))) {
				t.Error("processes left in the sandbox's cgroup")
			}
			if o2.recorded(id) {
				t.Errorf("%s's record of the sandbox is left", kind)
			}
			out, err := exec.Command(o2.Path(), "--root="+o2.root, "list", "--quiet").Output()
			if err != nil || strings.TrimSpace(string(out)) != "" {
				t.Errorf("%s list after the sweep = %q, %v; want nothing", kind, out, err)
			}
			for _, d := range cgroupDirs(o2.cgroupsPath(id)) {
				if _, err := os.Stat(d); err == nil {
					t.Errorf("cgroup %s left", d)
				}
			}
		})
	}
}
