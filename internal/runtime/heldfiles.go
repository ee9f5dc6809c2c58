package runtime

import (
	"bufio"
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
	// HeldForWrite returns the regular files under rootfs (the sandbox's
	// root filesystem as mounted on the host), as paths relative to it,
	// that sandbox id's host processes hold open for writing. A file
	// whose path cannot be found is left out.
	HeldForWrite(id, rootfs string) ([]string, error)
}

// HeldForWrite implements WriteHolder for runsc, whose sandbox and gofer
// processes hold the descriptors. Under runc and crun the sandbox's own
// processes do, and their exit closes them: it returns nothing.
func (o *OCI) HeldForWrite(id, rootfs string) ([]string, error) {
	if o.name != "runsc" {
		return nil, nil
	}
	var root unix.Stat_t
	if err := unix.Stat(rootfs, &root); err != nil {
		return nil, &os.PathError{Op: "stat", Path: rootfs, Err: err}
	}
	seen := map[string]bool{}
	var rels []string
	for _, pid := range o.runscPids(id) {
		fds, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
		if err != nil {
			continue // gone: it holds nothing
		}
		for _, fd := range fds {
			rel, ok := heldFile(pid, fd.Name(), rootfs, &root)
			if ok && !seen[rel] {
				seen[rel] = true
				rels = append(rels, rel)
			}
		}
	}
	return rels, nil
}

// heldFile reports the path relative to rootfs of pid's descriptor fd if
// it is a regular file on rootfs's filesystem open for writing. The
// descriptor's path is the one in the process's own mount namespace (runsc
// mounts the root filesystem somewhere of its choosing there), so the file
// is looked for under rootfs by that path's suffixes, longest first, and
// taken where the inode is the same.
func heldFile(pid int, fd, rootfs string, root *unix.Stat_t) (string, bool) {
	link := filepath.Join("/proc", strconv.Itoa(pid), "fd", fd)
	var st unix.Stat_t
	if unix.Stat(link, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Dev != root.Dev {
		return "", false
	}
	if !openForWrite(pid, fd) {
		return "", false
	}
	target, err := os.Readlink(link)
	if err != nil || !strings.HasPrefix(target, "/") {
		return "", false
	}
	rel := strings.TrimPrefix(target, "/")
	for rel != "" {
		var at unix.Stat_t
		if unix.Lstat(filepath.Join(rootfs, rel), &at) == nil && at.Dev == st.Dev && at.Ino == st.Ino {
			return rel, true
		}
		_, rest, ok := strings.Cut(rel, "/")
		if !ok {
			break
		}
		rel = rest
	}
	return "", false
}

// openForWrite reports whether pid's descriptor fd was opened for writing
// (its fdinfo's flags).
func openForWrite(pid int, fd string) bool {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "fdinfo", fd))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err == nil && flags&unix.O_ACCMODE != unix.O_RDONLY
		}
	}
	return false
}
