package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/arborsh/arbor/internal/archive"
	"github.com/arborsh/arbor/internal/overlay"
)

// rawSet is the raw runtime floor: one extracted busybox root filesystem
// and, per runtime, a bundle run directly by the runtime binary.
type rawSet struct {
	dir     string
	rootfs  string
	runners map[string]*rawRunner // /bin/true
	shell   map[string]*rawRunner // sh -c 'echo 1 > /dev/shm/out'
	// hardened runs the shell command in the bundle arbor's runtime driver
	// writes for a runc or crun sandbox (Options.HardenedBundle): runc and
	// crun only, when the CLI passed one.
	hardened map[string]*rawRunner
	order    []string
	seq      atomic.Int64
}

// rawShellArgs is the raw counterpart of the benchmark's one-file runs. The
// raw root is read-only and shared, so the file goes to /dev/shm (a tmpfs).
var rawShellArgs = []string{"/bin/sh", "-c", "echo 1 > /dev/shm/out"}

// rawRunner runs one bundle with one runtime binary.
type rawRunner struct {
	set    *rawSet
	name   string // runtime kind
	bin    string
	state  string // --root
	bundle string
	flags  []string
}

// runtimeFlags are the global flags arbor passes each runtime (see
// internal/runtime), so the raw floor starts sandboxes the same way.
func runtimeFlags(kind string) []string {
	if kind == "runsc" {
		return []string{"--platform=systrap", "--network=none", "--overlay2=none"}
	}
	return nil
}

// newRawSet extracts tar under dir and writes a minimal bundle for each
// runtime.
func newRawSet(ctx context.Context, dir string, tar []byte, runtimes []string) (*rawSet, error) {
	s := &rawSet{dir: dir, rootfs: filepath.Join(dir, "rootfs"), runners: map[string]*rawRunner{}, shell: map[string]*rawRunner{}, hardened: map[string]*rawRunner{}}
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(s.rootfs, 0o755); err != nil {
		return nil, err
	}
	if _, err := archive.ApplyTar(ctx, bytes.NewReader(tar), s.rootfs, archive.Options{}); err != nil {
		return nil, fmt.Errorf("extract the raw root filesystem: %w", err)
	}
	for _, rt := range runtimes {
		bin, err := exec.LookPath(rt)
		if err != nil {
			return nil, err
		}
		r := &rawRunner{set: s, name: rt, bin: bin, state: filepath.Join(dir, rt+"-state"), bundle: filepath.Join(dir, rt+"-bundle"), flags: runtimeFlags(rt)}
		if err := writeBundle(r.bundle, minimalSpec(s.rootfs, []string{"/bin/true"})); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(r.state, 0o700); err != nil {
			return nil, err
		}
		s.runners[rt] = r
		s.order = append(s.order, rt)
		if s.shell[rt], err = r.withSpec("shell", minimalSpec(s.rootfs, rawShellArgs)); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// describe renders the raw floor commands for the report.
func (s *rawSet) describe() string {
	var parts []string
	for _, rt := range s.order {
		r := s.runners[rt]
		parts = append(parts, strings.Join(append(append([]string{r.bin, "--root", "STATE"}, r.flags...), "run", "--bundle", "BUNDLE", "ID"), " "))
	}
	d := strings.Join(parts, "; ") + " (BUNDLE: busybox rootfs, read-only, `runc spec` defaults, terminal false; args /bin/true, or " + strings.Join(rawShellArgs, " ") + ")"
	if len(s.hardened) > 0 {
		d += "; hardened floor: the shell command in the config.json arbor writes for a runc or crun sandbox (its own user namespace, seccomp, masked paths, limits), root read-only, cgroup named by the runtime"
	}
	return d
}

// addHardened adds, for each runtime runc or crun of s, a runner of the
// shell command in the bundle hardened returns (the config.json arbor's
// runtime driver writes for such a sandbox), on the raw root filesystem.
// The root stays read-only, as it is shared, and the runtime names each
// run's cgroup after the container, as all runs share the bundle.
func (s *rawSet) addHardened(hardened func(kind, rootfs string, args, env []string) ([]byte, error)) error {
	for _, rt := range s.order {
		if rt == "runsc" {
			continue
		}
		b, err := hardened(rt, s.rootfs, rawShellArgs, rawEnv)
		if err != nil {
			return err
		}
		var spec specs.Spec
		if err := json.Unmarshal(b, &spec); err != nil {
			return fmt.Errorf("hardened bundle: %w", err)
		}
		spec.Root.Readonly = true
		spec.Linux.CgroupsPath = ""
		if s.hardened[rt], err = s.runners[rt].withSpec("hardened", &spec); err != nil {
			return err
		}
	}
	return nil
}

// withSpec returns a runner for the same runtime with another bundle.
func (r *rawRunner) withSpec(name string, spec *specs.Spec) (*rawRunner, error) {
	c := *r
	c.bundle = filepath.Join(r.set.dir, r.name+"-"+name)
	return &c, writeBundle(c.bundle, spec)
}

func writeBundle(dir string, spec *specs.Spec) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
}

// run times one `<runtime> run` of the bundle, from fork to exit, and
// reports the CPU time it and its descendants used. The runtime deletes the
// container itself before it exits.
func (r *rawRunner) run(ctx context.Context) (wall, cpu time.Duration, err error) {
	cmd := r.command(ctx)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	wall = time.Since(start)
	if err != nil {
		return wall, 0, fmt.Errorf("raw %s run: %v: %s", r.name, err, strings.TrimSpace(out.String()))
	}
	return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// command is `<runtime> run` of the bundle as a new container.
func (r *rawRunner) command(ctx context.Context) *exec.Cmd {
	id := fmt.Sprintf("arbor-bench-%d-%d", os.Getpid(), r.set.seq.Add(1))
	args := append([]string{"--root", r.state}, r.flags...)
	args = append(args, "run", "--bundle", r.bundle, id)
	cmd := exec.CommandContext(ctx, r.bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// close deletes any container a cancelled run left behind and removes the
// raw bundles.
func (s *rawSet) close() {
	for _, r := range s.runners {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, _ := exec.CommandContext(ctx, r.bin, "--root", r.state, "list", "--quiet").Output()
		for _, id := range strings.Fields(string(out)) {
			_ = exec.CommandContext(ctx, r.bin, "--root", r.state, "delete", "--force", id).Run()
		}
		cancel()
	}
	_ = overlay.UnmountUnder(s.dir)
	_ = os.RemoveAll(s.dir)
}

var rawEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"}

// minimalSpec is what `runc spec` writes, with a non-terminal process
// running args on the read-only rootfs.
func minimalSpec(rootfs string, args []string) *specs.Spec {
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	return &specs.Spec{
		Version:  "1.0.2", // Debian 12's crun rejects newer versions
		Root:     &specs.Root{Path: rootfs, Readonly: true},
		Hostname: "bench",
		Process: &specs.Process{
			Terminal:        false,
			Args:            args,
			Env:             rawEnv,
			Cwd:             "/",
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		},
		Linux: &specs.Linux{
			Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}},
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
			MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}
