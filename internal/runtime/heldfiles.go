package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// WriteHolder is implemented by runtimes whose sandbox can keep files of
// its root filesystem open for writing on the host after the processes
// that wrote them are gone. runsc does: its sentry (or, without directfs,
// its gofer) keeps the host descriptor of every file the sandbox opened
// for as long as it caches the file, and a write through a shared mapping
// of such a file goes straight to the host's pages, so the host reports
// neither the write (no inotify IN_MODIFY for mapped writes) nor a close
// (IN_CLOSE_WRITE), which a layers.Tracker waits for.
type WriteHolder interface {
	// HeldForWrite returns paths, relative to rootfs (the sandbox's root
	// filesystem as mounted on the host), that name every regular file of
	// rootfs which sandbox id's host processes hold open for writing. It
	// may name more (files held open for reading only, or paths of other
	// mounts inside the sandbox): the caller checks what each names.
	HeldForWrite(id, rootfs string) ([]string, error)
}

// HeldForWrite implements WriteHolder for runsc, whose sandbox and gofer
// processes hold the descriptors. Under runc and crun the sandbox's own
// processes do, and their exit closes them: it returns nothing.
//
// It names every file of rootfs the processes hold open, for writing or
// not: telling the two apart would take another lookup in /proc per
// descriptor, which costs more than the caller's lstat of a file that did
// not change (the sentry holds one or two descriptors per file in its
// dentry cache, so up to a few thousand: one readlink each, ~5 µs).
func (o *OCI) HeldForWrite(id, rootfs string) ([]string, error) {
	if o.name != "runsc" {
		return nil, nil
	}
	var root unix.Stat_t
	if err := unix.Stat(rootfs, &root); err != nil {
		return nil, &os.PathError{Op: "stat", Path: rootfs, Err: err}
	}
	pids := o.watchedPids(id)
	if pids == nil {
		return nil, fmt.Errorf("sandbox %s: no sandbox and gofer pids in runsc's state", id)
	}
	seen := map[string]bool{}
	var rels []string
	for _, pid := range pids {
		held := appendHeld(nil, pid)
		// Each path is the one in the process's own mount namespace,
		// where runsc mounted rootfs somewhere of its choosing: find where.
		prefix, found, onRoot := "", false, false
		for _, h := range held {
			var on bool
			if prefix, on, found = mountPrefix(h, rootfs, root.Dev); found {
				break
			}
			onRoot = onRoot || on
		}
		if onRoot && !found {
			// Files of rootfs are held but none names where: a mapped write
			// to them would go unseen. The caller commits by other means.
			return nil, fmt.Errorf("sandbox %s: process %d holds files of %s under a path not found there", id, pid, rootfs)
		}
		for _, h := range held {
			rel, ok := strings.CutPrefix(h.path, prefix)
			if found && ok && rel != "" && !seen[rel] {
				seen[rel] = true
				rels = append(rels, rel)
			}
		}
	}
	return rels, nil
}

// heldFD is a descriptor of a process and the path its link shows.
type heldFD struct {
	link, path string
}

// appendHeld appends pid's descriptors that name a path (not a pipe,
// socket or anonymous inode, nor a file since removed). Each is read
// relative to the open fd directory: resolving /proc/PID/fd anew for each
// would cost as much again.
func appendHeld(held []heldFD, pid int) []heldFD {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	d, err := os.Open(dir)
	if err != nil {
		return held // gone: it holds nothing
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return held
	}
	buf := make([]byte, unix.PathMax)
	for _, name := range names {
		n, err := unix.Readlinkat(int(d.Fd()), name, buf)
		if err != nil || n == 0 || n == len(buf) || buf[0] != '/' {
			continue
		}
		if p := string(buf[:n]); !strings.HasSuffix(p, " (deleted)") {
			held = append(held, heldFD{link: filepath.Join(dir, name), path: p})
		}
	}
	return held
}

// mountPrefix reports the prefix of h's path under which rootfs is
// mounted in the process's namespace, if h is a regular file of rootfs's
// filesystem (dev; onRoot): the longest suffix of the path that names the
// same inode under rootfs gives it.
func mountPrefix(h heldFD, rootfs string, dev uint64) (prefix string, onRoot, found bool) {
	var st unix.Stat_t
	if unix.Stat(h.link, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Dev != dev {
		return "", false, false
	}
	for i := 0; i < len(h.path); i++ {
		if h.path[i] != '/' {
			continue
		}
		var at unix.Stat_t
		if unix.Lstat(filepath.Join(rootfs, h.path[i+1:]), &at) == nil && at.Dev == st.Dev && at.Ino == st.Ino {
			return h.path[:i+1], true, true
		}
	}
	return "", true, false
}
