package runtime

import (
	"encoding/json"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestBundleConfig checks that the config handed to tools (arbor bench's
// hardened raw floor) is the driver's own: hardened for runc and crun, with
// the user namespace and id map asked for; plain for runsc.
func TestBundleConfig(t *testing.T) {
	s := Spec{ID: "x", Rootfs: "/r", Args: []string{"/bin/true"}, IDMap: &IDMap{HostID: 1 << 29, Size: 1 << 16}, Pids: 4096}
	for _, tc := range []struct {
		kind     string
		hardened bool
	}{{"runc", true}, {"crun", true}, {"runsc", false}} {
		t.Run(tc.kind, func(t *testing.T) {
			b, err := BundleConfig(tc.kind, s)
			if err != nil {
				t.Fatalf("BundleConfig(%s) = %v", tc.kind, err)
			}
			var got specs.Spec
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			userns := slices.ContainsFunc(got.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.UserNamespace })
			if has := got.Linux.Seccomp != nil; has != tc.hardened {
				t.Errorf("seccomp set = %v, want %v", has, tc.hardened)
			}
			if userns != tc.hardened {
				t.Errorf("user namespace = %v, want %v", userns, tc.hardened)
			}
			if tc.hardened {
				want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1 << 29, Size: 1 << 16}}
				if !slices.Equal(got.Linux.UIDMappings, want) || !slices.Equal(got.Linux.GIDMappings, want) {
					t.Errorf("id mappings = %v / %v, want %v", got.Linux.UIDMappings, got.Linux.GIDMappings, want)
				}
				if !slices.Equal(got.Linux.MaskedPaths, maskedPaths) {
					t.Errorf("masked paths = %v, want %v", got.Linux.MaskedPaths, maskedPaths)
				}
			}
			if got.Root.Path != "/r" || !slices.Equal(got.Process.Args, s.Args) {
				t.Errorf("root %q args %v, want /r %v", got.Root.Path, got.Process.Args, s.Args)
			}
		})
	}
	if _, err := BundleConfig("docker", s); err == nil {
		t.Error("BundleConfig(docker) = nil error, want one")
	}
}
