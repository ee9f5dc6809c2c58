package overlay

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Userns is a user namespace that only carries an id mapping (ids
// 0..Size-1 to host ids HostID..), for idmapped mounts: files stored with
// uid 0 appear owned by HostID through such a mount, and HostID writes
// uid 0. A sandbox whose root is HostID (runc in a user namespace) then
// sees and writes layers exactly as root would, with no change to their
// content.
type Userns struct {
	fd           int
	HostID, Size uint32
}

// NewUserns creates a user namespace with the mapping. Close it once the
// mounts are made (they keep the namespace alive).
//
// A process must hold the mapping: as runc does (libcontainer/userns), the
// child is started traced, so it stops at its execve and never runs; its
// namespace is opened, then it is killed.
func NewUserns(hostID, size uint32) (*Userns, error) {
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(hostID), Size: int(size)}}
	p, err := os.StartProcess("/proc/self/exe", []string{"arbor-userns"}, &os.ProcAttr{Sys: &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWUSER, UidMappings: m, GidMappings: m, Ptrace: true,
	}})
	if err != nil {
		return nil, fmt.Errorf("user namespace for id mapping: %w", err)
	}
	defer func() {
		_ = p.Kill()
		_, _ = p.Wait()
	}()
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", p.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open user namespace: %w", err)
	}
	return &Userns{fd: fd, HostID: hostID, Size: size}, nil
}

// Close releases the namespace.
func (u *Userns) Close() {
	if u != nil && u.fd >= 0 {
		unix.Close(u.fd)
		u.fd = -1
	}
}

// idmapped returns a detached idmapped clone of dir (not recursive).
func (u *Userns) idmapped(dir string) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", dir, err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(u.fd)}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("idmap %s: %w", dir, err)
	}
	return fd, nil
}

// layerFDs opens each dir through an idmapped clone of its parent (one
// clone per distinct parent: the layer store is usually one). The fds
// are O_PATH; the clones live as long as they do.
func (u *Userns) layerFDs(dirs []string) ([]int, func(), error) {
	clones := map[string]int{}
	var fds []int
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		for _, fd := range clones {
			unix.Close(fd)
		}
	}
	for _, d := range dirs {
		parent := filepath.Dir(d)
		c, ok := clones[parent]
		if !ok {
			var err error
			if c, err = u.idmapped(parent); err != nil {
				closeAll()
				return nil, nil, err
			}
			clones[parent] = c
		}
		fd, err := unix.Openat(c, filepath.Base(d), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("open layer %s: %w", d, err)
		}
		fds = append(fds, fd)
	}
	return fds, closeAll, nil
}

// AsHostID runs fn on a thread of its own whose filesystem uid and gid are
// id, keeping root's capabilities. Writes through an idmapped overlay must
// come from an id in its mapping (root's own, 0, has no place in the
// layers then): the overlay's creator, and the daemon placing files.
func AsHostID(id uint32, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		// The thread goes back to the pool only with its credentials
		// restored. It must not end instead: a process it started earlier
		// for another goroutine (a runtime, with Pdeathsig) would be killed.
		restored := false
		defer func() {
			if restored {
				goruntime.UnlockOSThread()
			}
		}()
		// Keep capabilities across the fsuid change (SECBIT_NO_SETUID_FIXUP).
		if err := unix.Prctl(unix.PR_SET_SECUREBITS, secbitNoSetuidFixup, 0, 0, 0); err != nil {
			restored = true
			done <- fmt.Errorf("securebits: %w", err)
			return
		}
		unix.Setfsuid(int(id))
		unix.Setfsgid(int(id))
		err := fn()
		unix.Setfsuid(0)
		unix.Setfsgid(0)
		restored = unix.Prctl(unix.PR_SET_SECUREBITS, 0, 0, 0, 0) == nil && fsids() == [2]int{0, 0}
		done <- err
	}()
	return <-done
}

const secbitNoSetuidFixup = 1 << 2

// fsids reports the calling thread's filesystem uid and gid (an invalid
// id changes nothing, and the call returns the current one).
func fsids() [2]int {
	u, _ := unix.SetfsuidRetUid(-1)
	g, _ := unix.SetfsgidRetGid(-1)
	return [2]int{u, g}
}
