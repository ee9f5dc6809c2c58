package runtime_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/arborsh/arbor/internal/archive"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/overlay"
	"github.com/arborsh/arbor/internal/runtime"
	"github.com/arborsh/arbor/internal/runtime/runtimetest"
	"github.com/arborsh/arbor/internal/testutil"
)

// busyboxRoot returns a fresh root filesystem with busybox at /bin and a
// /tmp, in a directory every user may traverse (processes run as 1000).

// TestMain removes what the tests built once (testutil.BuildDir).
func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuildDir()
	os.Exit(code)
}

func busyboxRoot(t *testing.T) string {
	t.Helper()
	var tarball bytes.Buffer
	if err := baseimage.WriteBusyboxTar(&tarball); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(testutil.Home(t), "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := archive.ApplyTar(context.Background(), &tarball, root, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := runtime.EnsureTmp(root); err != nil {
		t.Fatal(err)
	}
	return root
}

var initBuild struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// staticInit builds cmd/arbor-init statically, once per test binary.
func staticInit(t *testing.T) string {
	t.Helper()
	initBuild.once.Do(func() {
		dir, err := testutil.BuildDir("init")
		if err != nil {
			initBuild.err = err
			return
		}
		initBuild.path = filepath.Join(dir, "arbor-init")
		cmd := exec.Command("go", "build", "-o", initBuild.path, "github.com/arborsh/arbor/cmd/arbor-init")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		initBuild.out, initBuild.err = cmd.CombinedOutput()
	})
	if initBuild.err != nil {
		t.Fatalf("build arbor-init: %v\n%s", initBuild.err, initBuild.out)
	}
	return initBuild.path
}

func newOCI(kind string) func(t *testing.T) runtime.Runtime {
	return func(t *testing.T) runtime.Runtime {
		state := filepath.Join(t.TempDir(), "state")
		o, err := runtime.NewOCI(kind, "", state)
		if err != nil {
			t.Fatal(err)
		}
		// Close unmounts runsc's null-netns; this is the net if a test fails first.
		t.Cleanup(func() { _ = overlay.UnmountUnder(state) })
		return o
	}
}

// TestConformance runs the runtime contract's suite against runsc and runc,
// with the exec wrapper (exact exec results), and runc without it. crun is left out: on a host
// with hybrid cgroups (as the CI machine's) it refuses every sandbox.
func TestConformance(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, kind := range []string{"runsc", "runc"} {
		t.Run(kind, func(t *testing.T) {
			runtimetest.Run(t, newOCI(kind), runtimetest.Options{NewRoot: busyboxRoot, ExecInit: staticInit(t), HostPids: true, EnforcesIDs: true,
				// runsc exec does not forward a SIGTERM: it exits 143 itself
				// and leaves the process running in the sandbox.
				ExecSignals: kind != "runsc",
				Checkpoints: kind == "runsc",
				Crash:       crashRuntime,
			})
		})
	}
	// Without the exec wrapper only the runtime's word is known: a death
	// by signal n is exit code 128+n, not Exact.
	t.Run("runc-without-exec-init", func(t *testing.T) {
		runtimetest.Run(t, newOCI("runc"), runtimetest.Options{NewRoot: busyboxRoot, HostPids: true, EnforcesIDs: true, ExecSignals: true,
			Crash: crashRuntime})
	})
}

// crashRuntime kills the runtime process pid, never a pid of 0 or below
// (kill(0) ends the test's own process group, kill(-1) every process).
func crashRuntime(_ string, pid int) {
	if pid > 1 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
