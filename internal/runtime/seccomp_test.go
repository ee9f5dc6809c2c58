package runtime

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/arborsh/arbor/internal/testutil"
)

// TestRunscPrecompiledSeccomp: the runsc scripts/setup.sh builds
// (scripts/runsc/build.sh) carries precompiled seccomp programs for the
// sandboxes arbor starts, so neither the sentry nor the gofer compiles its
// filters at boot: without a network, with one (a namespace of the
// sandbox's own), and on a restore from a checkpoint. runsc's debug log
// says which it did.
func TestRunscPrecompiledSeccomp(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	for _, network := range []bool{false, true} {
		t.Run("network="+strconv.FormatBool(network), func(t *testing.T) {
			o, rootfs, bundle := busyboxOCI(t, "runsc")
			logs := t.TempDir()
			o.flags = append(o.flags, "--debug", "--debug-log="+logs+"/")
			s := Spec{ID: "seccomp-" + strconv.FormatBool(network), Bundle: bundle, Rootfs: rootfs, Args: []string{"/bin/sleep", "1000"},
				Env: []string{"PATH=/bin"}, Cwd: "/", Hostname: "t"}
			if network {
				s.NetNS = ownNetNS(t)
			}
			if err := o.Boot(ctx, s); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = o.Destroy(ctx, s.ID) })
			checkPrecompiled(t, logs, "boot", "gofer")
			if network {
				return
			}
			// A fork's copy boots through restore.
			image := filepath.Join(t.TempDir(), "image")
			if err := o.Checkpoint(ctx, s.ID, CheckpointOptions{Image: image}); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(logs); err != nil {
				t.Fatal(err)
			}
			bundle2 := t.TempDir()
			r := Spec{ID: s.ID + "-restored", Bundle: bundle2, Rootfs: rootfs}
			if err := o.Restore(ctx, r, image); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = o.Destroy(ctx, r.ID) })
			checkPrecompiled(t, logs, "boot", "gofer")
		})
	}
}

// checkPrecompiled checks that runsc's debug logs in dir for each command
// (the sentry's "boot", "gofer") say the seccomp program was precompiled.
func checkPrecompiled(t *testing.T, dir string, commands ...string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, cmd := range commands {
		found := false
		for _, f := range files {
			if !strings.Contains(filepath.Base(f), "."+cmd+".") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), "No precompiled program found") {
				t.Errorf("runsc %s built its seccomp program at start (%s): build runsc with scripts/runsc/build.sh (scripts/setup.sh does)", cmd, f)
			}
			found = found || strings.Contains(string(b), "Loaded precompiled seccomp instructions")
		}
		if !found {
			t.Errorf("no runsc %s log in %s says it loaded a precompiled seccomp program (logs: %v)", cmd, dir, files)
		}
	}
}

// ownNetNS returns the path of a new network namespace, held by a child
// process for the test's duration.
func ownNetNS(t *testing.T) string {
	t.Helper()
	// The child speaks once it is in the new namespace.
	cmd := exec.Command("unshare", "--net", "--", "sh", "-c", "echo in; exec sleep 1000")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatalf("unshare --net: %v", err)
	}
	return "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
}
