package runtime

import (
	"fmt"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Sandboxes under runc and crun share the host kernel, so they get what
// container engines give by default: Docker's seccomp profile (taken from
// moby's library, not written here: it refuses keyctl, add_key and
// request_key, unshare and clone of new user namespaces, mount, bpf, ...),
// the reduced capability set of process(), masked and read-only kernel
// paths, and, with Spec.IDMap, a user namespace whose root is an
// unprivileged host uid. runsc needs none of this: its kernel is in user
// space and it filters its own system calls.

// maskedPaths are hidden (bind-mounted /dev/null or an empty tmpfs), as Docker does.
var maskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats",
	"/sys/devices/virtual/powercap", "/sys/firmware",
}

// readonlyPaths are remounted read-only, as Docker does.
var readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}

// defaultSeccomp converts moby's default profile for the capabilities that
// process() grants (rules depend on the bounding set).
func (o *OCI) defaultSeccomp() (*specs.LinuxSeccomp, error) {
	sp := &specs.Spec{Process: o.process([]string{"true"}, nil, "/", 0, 0, 0)}
	sc, err := seccomp.GetDefaultProfile(sp)
	if err != nil {
		return nil, fmt.Errorf("default seccomp profile: %w", err)
	}
	return sc, nil
}

// harden adds the shared-kernel protections to spec (runc and crun only).
func (o *OCI) harden(spec *specs.Spec, s Spec) {
	if o.name == "runsc" {
		return
	}
	spec.Linux.Seccomp = o.seccomp
	spec.Linux.MaskedPaths = maskedPaths
	spec.Linux.ReadonlyPaths = readonlyPaths
	if m := s.IDMap; m != nil {
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		spec.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: m.HostID, Size: m.Size}}
		spec.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: m.HostID, Size: m.Size}}
		if s.NetNS != "" {
			// sysfs may only be mounted by the owner of the network
			// namespace, and a joined one belongs to the host: give an
			// empty read-only /sys rather than bind the host's.
			for i, mt := range spec.Mounts {
				if mt.Destination == "/sys" {
					spec.Mounts[i] = specs.Mount{Destination: "/sys", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "noexec", "nodev", "ro", "size=0"}}
				}
			}
		}
	}
}
