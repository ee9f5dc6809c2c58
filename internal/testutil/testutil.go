// Package testutil holds helpers shared by arbor's tests.
package testutil

import (
	"os"
	"testing"
)

// RequiresRoot skips t unless running as root. Under CI (CI=true) it fails
// instead: CI runs as root, and a privileged test that skips there hides a
// broken set-up.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI must run it: run the suite as root")
	}
	t.Skip("requires root")
}

// Home returns a fresh temporary directory for a daemon's home that every
// user may traverse (t.TempDir's parent is private): runc and crun
// sandboxes run as unprivileged host users and must reach their root
// filesystems inside it. It is removed when t ends.
func Home(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "arbor-home-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}
