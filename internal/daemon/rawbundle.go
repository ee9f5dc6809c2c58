package daemon

import (
	"fmt"

	"github.com/arborsh/arbor/internal/runtime"
)

// rawHostID is the first host id of the hardened raw bundle's user
// namespace: below the ranges the engine hands its sandboxes (from 1<<30),
// so a benchmark's raw runs never share ids with a daemon's sandboxes.
const rawHostID = 1 << 29

// HardenedBundle returns the config.json arbor's runtime driver writes for
// a cold run of args on rootfs under kind (runc or crun): Docker's seccomp
// profile, masked and read-only paths, the reduced capabilities, a user
// namespace of its own mapping ids 0..65535 to unprivileged host ids, new
// network, pid, ipc, uts and mount namespaces, and a default run's pids and
// memory limits and CPU weight. It is what arbor bench runs as its hardened
// raw floor: the same sandbox without arbor, so the report can tell the
// hardening's cost from arbor's.
func HardenedBundle(kind, rootfs string, args, env []string) ([]byte, error) {
	if kind != "runc" && kind != "crun" {
		return nil, fmt.Errorf("hardened bundle: %s is not a shared-kernel runtime (runc, crun)", kind)
	}
	return runtime.BundleConfig(kind, runtime.Spec{
		ID: "arbor-bench-raw", Rootfs: rootfs, Args: args, Env: env, Hostname: "bench",
		MemoryBytes: 1 << 30, Pids: 4096, FileSizeLimit: 10<<30 + 1,
		IDMap: &runtime.IDMap{HostID: rawHostID, Size: 1 << 16},
	})
}
