package runtime

import (
	"encoding/json"
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
// process() grants (rules depend on the bounding set), for the native
// architecture alone.
//
// moby lists the native architecture first and then its compat ABIs (on
// amd64: x86 and x32), for which runc compiles every rule again on each
// start: with libseccomp 2.5 that was ~20 ms of the ~25 ms the filter
// costs per sandbox (BENCHMARKS.md, "Where a cold run's time goes").
// Without them a system call through a compat ABI (int 0x80, a 32-bit
// binary) matches no architecture of the filter and libseccomp's
// bad-architecture action kills the process: every call the full profile
// denies is still denied, and the compat ABIs, a classic kernel attack
// surface, are refused as a whole. gVisor, the default runtime, runs no
// 32-bit code either (it answers ENOSYS), so both runtimes now agree.
func (o *OCI) defaultSeccomp() (*specs.LinuxSeccomp, error) {
	sp := &specs.Spec{Process: o.process([]string{"true"}, nil, "/", 0, 0, 0)}
	sc, err := seccomp.GetDefaultProfile(sp)
	if err != nil {
		return nil, fmt.Errorf("default seccomp profile: %w", err)
	}
	if len(sc.Architectures) > 1 {
		sc.Architectures = sc.Architectures[:1]
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
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: s.UserNS})
		spec.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: m.HostID, Size: m.Size}}
		spec.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: m.HostID, Size: m.Size}}
		if s.NetNS != "" && s.UserNS == "" {
			// sysfs may only be mounted by the owner of the network
			// namespace, and this one belongs to the host: give an empty
			// read-only /sys rather than bind the host's. (A network
			// namespace owned by UserNS, as arbor makes them, mounts its own.)
			for i, mt := range spec.Mounts {
				if mt.Destination == "/sys" {
					spec.Mounts[i] = specs.Mount{Destination: "/sys", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "noexec", "nodev", "ro", "size=0"}}
				}
			}
		}
	}
}

// BundleConfig returns the config.json the driver writes for s under the
// runtime kind, hardened as its sandboxes are, without a state directory:
// for tools that run the runtime binary themselves on arbor's bundle (arbor
// bench's hardened raw floor).
func BundleConfig(kind string, s Spec) ([]byte, error) {
	o, err := newDriver(kind)
	if err != nil {
		return nil, err
	}
	return json.Marshal(o.config(s))
}
