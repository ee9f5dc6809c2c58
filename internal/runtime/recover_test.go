package runtime_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arborsh/arbor/internal/overlay"
	"github.com/arborsh/arbor/internal/runtime"
	"github.com/arborsh/arbor/internal/testutil"
)

// mountsUnder lists the mount points at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	return out
}

// TestCleanupAfterCrash: a daemon that dies with a booted runsc sandbox
// leaves the sandbox and runsc's null-netns mount in the runtime's state
// dir (a clean Close unmounts it). Cleanup, which recovery runs at start,
// must remove both: the mount used to stay until the next clean shutdown.
// Everything happens under the test's own temp dir.
func TestCleanupAfterCrash(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	state, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	state = filepath.Join(state, "state")
	t.Cleanup(func() { _ = overlay.UnmountUnder(state) }) // if the test fails
	crashed, err := runtime.NewOCI("runsc", "", state)
	if err != nil {
		t.Fatal(err)
	}
	root, bundle := busyboxRoot(t), t.TempDir()
	if err := crashed.Boot(ctx, runtime.Spec{ID: "crashed", Bundle: bundle, Rootfs: root, Args: []string{"/bin/sleep", "1000"},
		Env: []string{"PATH=/bin"}, Cwd: "/", Hostname: "t"}); err != nil {
		t.Fatal(err)
	}
	if got := mountsUnder(t, state); len(got) != 1 || filepath.Base(got[0]) != "null-netns" {
		t.Fatalf("mounts in runsc's state dir after a boot = %q, want its null-netns (else this test checks nothing)", got)
	}
	// The daemon dies here: no Destroy, no Close. A new one recovers.
	restarted, err := runtime.NewOCI("runsc", "", state)
	if err != nil {
		t.Fatal(err)
	}
	if err := restarted.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if got := mountsUnder(t, state); len(got) != 0 {
		t.Errorf("mounts left in runsc's state dir after Cleanup: %q", got)
	}
	out, err := exec.Command(restarted.Path(), "--root="+state, "list", "--quiet").Output()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("runsc list after Cleanup = %q, %v, want no sandbox", out, err)
	}
	// The home can go now (it could not while the mount was there).
	if err := restarted.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(state); err != nil {
		t.Errorf("remove the state dir: %v", err)
	}
}
