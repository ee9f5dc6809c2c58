package initproc

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFindBinary: only a static ELF is taken as the init; a configured
// dynamic one falls through to this executable if it is static, else to
// nothing (there is no arbor-init beside a test binary).
func TestFindBinary(t *testing.T) {
	static, dynamic := "/bin/busybox", "/bin/ls" // busybox-static (scripts/setup.sh), coreutils
	for _, p := range []string{static, dynamic} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s: %v (run scripts/setup.sh)", p, err)
		}
	}
	text := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(text, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{static: true, dynamic: false, text: false, "/nonexistent": false} {
		if got := IsStatic(p); got != want {
			t.Errorf("IsStatic(%s) = %v, want %v", p, got, want)
		}
	}
	if got := FindBinary(static); got != static {
		t.Errorf("FindBinary(%s) = %q, want it", static, got)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want := ""
	if IsStatic(exe) {
		want = exe
	}
	if got := FindBinary(dynamic); got != want {
		t.Errorf("FindBinary(%s) = %q, want %q (this test binary, if static)", dynamic, got, want)
	}
}

// TestFindBinaryPrefersArborInit: a static arbor-init beside the executable
// comes before the executable itself, even a static one (the daemon's size
// made every command in a forkable gVisor sandbox ten times slower).
func TestFindBinaryPrefersArborInit(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	beside := filepath.Join(filepath.Dir(exe), "arbor-init")
	if _, err := os.Lstat(beside); err == nil {
		t.Fatalf("%s exists already: this test places its own", beside)
	}
	b, err := os.ReadFile("/bin/busybox") // static (scripts/setup.sh)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(beside, b, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(beside) })
	if got := FindBinary(""); got != beside {
		t.Errorf("FindBinary(\"\") = %q, want the arbor-init beside the executable, %s", got, beside)
	}
	if got := FindBinary("/bin/busybox"); got != "/bin/busybox" {
		t.Errorf("FindBinary(/bin/busybox) = %q: a configured init still comes first", got)
	}
}

// TestFindColdInit: the C init is taken when configured or found beside
// the Go init, only if static, and never when configured "off".
func TestFindColdInit(t *testing.T) {
	dir := t.TempDir()
	goInit := filepath.Join(dir, "arbor-init")
	b, err := os.ReadFile("/bin/busybox") // static (scripts/setup.sh)
	if err != nil {
		t.Fatal(err)
	}
	if got := FindColdInit("", goInit); got != "" {
		t.Errorf("FindColdInit with none beside = %q, want none", got)
	}
	beside := filepath.Join(dir, ColdInitName)
	if err := os.WriteFile(beside, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := FindColdInit("", goInit); got != "" {
		t.Errorf("FindColdInit with a script beside = %q, want none (not static)", got)
	}
	if err := os.WriteFile(beside, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ configured, want string }{
		{"", beside},
		{"off", ""},
		{"/bin/busybox", "/bin/busybox"},
		{"/bin/ls", beside}, // dynamic: falls through
	} {
		if got := FindColdInit(tc.configured, goInit); got != tc.want {
			t.Errorf("FindColdInit(%q) = %q, want %q", tc.configured, got, tc.want)
		}
	}
}
