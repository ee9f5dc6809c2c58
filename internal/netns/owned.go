package netns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A runc or crun sandbox runs in a user namespace of its own. A network
// namespace made by the host (`ip netns add`) belongs to the host's user
// namespace; the runtime joins it before it makes the sandbox's user
// namespace, so the sandbox starts, but an exec into the sandbox (`runc
// exec`: a subprocess, a preview relay) joins the user namespace first and
// is then refused the network namespace (setns: EPERM), as runc 1.1 joins
// in that order. So such a sandbox gets a network namespace owned by a user
// namespace with its id mapping, made together and kept as two files, and
// the runtime joins that user namespace instead of making one (see
// runtime.Spec.UserNS): an exec then joins a namespace its user namespace
// owns.

// usernsDir keeps the user namespaces owning sandbox networks (see Net.UserNS).
const usernsDir = "/var/run/arbor-userns"

// createOwned makes the network namespace n.Name owned by a new user
// namespace that maps ids 0..size-1 to hostID.., bind-mounting the network
// namespace at n.Path (where `ip netns` finds it) and the user namespace at
// n.UserNS.
//
// As runc does (and overlay.NewUserns), a child is started traced with the
// namespaces, so it stops at its execve and never runs; the namespaces
// outlive it in their mounts.
func createOwned(n *Net, hostID, size uint32) error {
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(hostID), Size: int(size)}}
	p, err := os.StartProcess("/proc/self/exe", []string{"arbor-netns"}, &os.ProcAttr{Sys: &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWUSER | unix.CLONE_NEWNET, UidMappings: m, GidMappings: m, Ptrace: true,
		// As in a user namespace the runtime makes: the sandbox's root may
		// set its processes' groups (the mapping is the host root's, so
		// "deny" protects nothing here).
		GidMappingsEnableSetgroups: true,
	}})
	if err != nil {
		return fmt.Errorf("user and network namespace for %s: %w", n.Name, err)
	}
	defer func() {
		_ = p.Kill()
		_, _ = p.Wait()
	}()
	n.UserNS = filepath.Join(usernsDir, n.Name)
	for _, b := range []struct{ ns, target string }{{"net", n.Path}, {"user", n.UserNS}} {
		if err := bindNS(fmt.Sprintf("/proc/%d/ns/%s", p.Pid, b.ns), b.target); err != nil {
			unbindNS(n.Path)
			return err
		}
	}
	return nil
}

// bindNS keeps the namespace file src alive at target, a new file.
func bindNS(src, target string) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("namespace file: %w", err)
	}
	f.Close()
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		os.Remove(target)
		return fmt.Errorf("keep namespace %s at %s: %w", src, target, err)
	}
	return nil
}

// unbindNS releases a namespace kept by bindNS (or `ip netns add`).
func unbindNS(target string) {
	if target == "" {
		return
	}
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return // still mounted: removing would fail (EBUSY), and the file is the namespace's claim
	}
	_ = os.Remove(target)
}

// cleanupUserns removes the owning user namespaces of this daemon's
// networks an earlier run left behind (their networks go with `ip netns
// del`).
func (m *Manager) cleanupUserns(ctx context.Context) {
	ents, err := os.ReadDir(usernsDir)
	if err != nil {
		return
	}
	prefix := "arbor-" + m.tag + "-"
	for _, e := range ents {
		if ctx.Err() != nil {
			return
		}
		if strings.HasPrefix(e.Name(), prefix) {
			unbindNS(filepath.Join(usernsDir, e.Name()))
		}
	}
}
