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
