package overlay

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"
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

	mu sync.Mutex
	// clones are idmapped clones of directories, kept from one mount to
	// the next until Close: closing a detached clone unmounts it, and every
	// unmount waits for an expedited RCU grace period, which the kernel
	// serialises over all processes (runtimes' own mounts included): two
	// per mount made concurrent sandbox starts queue behind each other.
	clones map[string]int
}

// maxClones bounds the directories whose clones a Userns keeps: the layer
// store and the run directory, plus a few more.
const maxClones = 4

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

// Close releases the namespace and its kept clones.
func (u *Userns) Close() {
	if u == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for dir, fd := range u.clones {
		unix.Close(fd)
		delete(u.clones, dir)
	}
	if u.fd >= 0 {
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

// layerFDs opens each dir through an idmapped clone of the directory up
// levels above it (1: its parent), as O_PATH descriptors, returned with
// the function that closes them. The clones are kept for the next mount
// (see clones); one that no longer holds the path (its directory was
// replaced) is made afresh.
func (u *Userns) layerFDs(dirs []string, up int) ([]int, func(), error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var fds, temp []int
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		for _, fd := range temp {
			unix.Close(fd)
		}
	}
	for _, d := range dirs {
		base, rel := splitUp(filepath.Clean(d), up)
		fd, err := u.openVia(base, rel, &temp)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("open layer %s: %w", d, err)
		}
		fds = append(fds, fd)
	}
	return fds, closeAll, nil
}

// openVia opens rel beneath an idmapped clone of base: the kept one, else
// a new one (kept if there is room, else added to temp); u.mu is held.
func (u *Userns) openVia(base, rel string, temp *[]int) (int, error) {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	if c, ok := u.clones[base]; ok {
		if sameDir(c, base) {
			if fd, err := unix.Openat2(c, rel, how); err == nil {
				return fd, nil
			}
		}
		// Stale (base was replaced since) or rel is missing: a fresh clone
		// tells which.
		unix.Close(c)
		delete(u.clones, base)
	}
	c, err := u.idmapped(base)
	if err != nil {
		return -1, err
	}
	if len(u.clones) < maxClones {
		if u.clones == nil {
			u.clones = map[string]int{}
		}
		u.clones[base] = c
	} else {
		*temp = append(*temp, c)
	}
	return unix.Openat2(c, rel, how)
}

// sameDir reports whether clone c is still of the directory at path.
func sameDir(c int, path string) bool {
	var a, b unix.Stat_t
	return unix.Fstat(c, &a) == nil && unix.Stat(path, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino
}

// splitUp splits clean path d into the directory up levels above it and
// the rest ("/a/b/c", 2: "/a", "b/c").
func splitUp(d string, up int) (base, rel string) {
	base = d
	for range up {
		base = filepath.Dir(base)
	}
	rel, _ = filepath.Rel(base, d) // d is below base: cannot fail
	return base, rel
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
