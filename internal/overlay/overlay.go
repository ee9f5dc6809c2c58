// Package overlay mounts overlayfs stacks with the new mount API.
//
// The classic mount(2) passes options in one page and silently truncates long
// lowerdir lists (measured: 50 layers requested, 49 mounted, rc=0). fsconfig
// "lowerdir+" adds one layer per call with no such limit, and every mount is
// verified against /proc/self/mountinfo afterwards.
package overlay

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxLayers is the kernel's limit on lower layers (OVL_MAX_STACK).
const MaxLayers = 500

// Mount mounts an overlay at target. lowers are ordered top first. With upper
// and work empty the mount is read-only.
func Mount(lowers []string, upper, work, target string) error {
	return MountAs(lowers, upper, work, target, nil)
}

// MountAs is Mount with every layer seen through ns's id mapping (nil: as
// Mount): the overlay is stacked on idmapped mounts of the layers, so a
// file stored as uid 0 is owned by ns.HostID in it, and ns.HostID's writes
// reach the upper dir as uid 0. upper and work must share their parent.
// The layers are given by file descriptor, so mountinfo shows them by
// their place in the clone ("/<layer id>", "/upper"), not by host path.
func MountAs(lowers []string, upper, work, target string, ns *Userns) error {
	if len(lowers) == 0 {
		return errors.New("overlay: no lower layers")
	}
	if len(lowers) > MaxLayers {
		return fmt.Errorf("overlay: %d layers exceed the kernel limit of %d", len(lowers), MaxLayers)
	}
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fd)
	set := func(key, val string) error {
		if err := unix.FsconfigSetString(fd, key, val); err != nil {
			return fmt.Errorf("overlay option %s=%s: %w", key, val, err)
		}
		return nil
	}
	if ns != nil {
		if upper != "" && filepath.Dir(upper) != filepath.Dir(work) {
			return fmt.Errorf("overlay: upper %s and work %s must share a parent", upper, work)
		}
		// Layers through a clone of their store; upper and work (a run's
		// own directory) through one of the directory holding every run's.
		fds, closeFDs, err := ns.layerFDs(lowers, 1)
		if err != nil {
			return err
		}
		defer closeFDs()
		if upper != "" {
			uw, closeUW, err := ns.layerFDs([]string{upper, work}, 2)
			if err != nil {
				return err
			}
			defer closeUW()
			fds = append(fds, uw...)
		}
		for i, l := range lowers {
			if err := unix.FsconfigSetFd(fd, "lowerdir+", fds[i]); err != nil {
				return fmt.Errorf("overlay option lowerdir+=%s: %w", l, err)
			}
		}
		if upper != "" {
			if err := unix.FsconfigSetFd(fd, "upperdir", fds[len(lowers)]); err != nil {
				return fmt.Errorf("overlay option upperdir=%s: %w", upper, err)
			}
			if err := unix.FsconfigSetFd(fd, "workdir", fds[len(lowers)+1]); err != nil {
				return fmt.Errorf("overlay option workdir=%s: %w", work, err)
			}
		}
	} else {
		for _, l := range lowers {
			if err := set("lowerdir+", l); err != nil {
				return err
			}
		}
		if upper != "" {
			if err := set("upperdir", upper); err != nil {
				return err
			}
			if err := set("workdir", work); err != nil {
				return err
			}
		}
	}
	// Layers must be self-contained: no redirects, metacopy or index entries
	// pointing into other layers, so an upper dir can later serve as a lower.
	for _, kv := range [][2]string{{"redirect_dir", "off"}, {"metacopy", "off"}, {"index", "off"}, {"xino", "off"}} {
		if err := set(kv[0], kv[1]); err != nil {
			return err
		}
	}
	create := func() error { return unix.FsconfigCreate(fd) }
	if ns != nil {
		// The overlay works in its upper dir with its creator's
		// credentials, which must be in the mapping (see AsHostID).
		create = func() error { return AsHostID(ns.HostID, func() error { return unix.FsconfigCreate(fd) }) }
	}
	if err := create(); err != nil {
		return fmt.Errorf("create overlay (%d layers): %w", len(lowers), err)
	}
	var attr int
	if upper == "" {
		attr = unix.MOUNT_ATTR_RDONLY
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, attr|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount overlay to %s: %w", target, err)
	}
	n, err := countLowers(target)
	if err == nil && n != len(lowers) {
		err = fmt.Errorf("overlay at %s has %d lower layers, want %d", target, n, len(lowers))
	}
	if err != nil {
		_ = Unmount(target)
		return err
	}
	return nil
}

// Unmount detaches the mount at target. A target that is not mounted is not an error.
func Unmount(target string) error {
	err := unix.Unmount(target, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", target, err)
}

// IsMounted reports whether target is a mount point.
func IsMounted(target string) bool {
	_, err := mountOptions(target)
	return err == nil
}

// countLowers reads back how many lower layers the kernel actually stacked.
func countLowers(target string) (int, error) {
	opts, err := mountOptions(target)
	if err != nil {
		return 0, err
	}
	plus := 0
	for _, o := range splitUnescaped(opts, ',') {
		if strings.HasPrefix(o, "lowerdir+=") {
			plus++ // kernels that keep the fsconfig form show one option per layer
			continue
		}
		if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
			n := 0
			for _, p := range splitUnescaped(v, ':') {
				if p != "" { // "::" separates data-only layers
					n++
				}
			}
			return n, nil
		}
	}
	if plus > 0 {
		return plus, nil
	}
	return 0, fmt.Errorf("overlay at %s: no lowerdir in mount options", target)
}

// mountOptions returns the super options of the mount at target from mountinfo.
func mountOptions(target string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<26) // grows only for long lines (deep lowerdir lists)
	var found string
	ok := false
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Split(sc.Text(), " ")
		if len(fields) < 10 || UnescapeMountField(fields[4]) != target {
			continue
		}
		for i, fl := range fields {
			if fl == "-" && i+3 < len(fields) {
				found, ok = fields[i+3], true // the last matching line is the top mount
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%s is not mounted", target)
	}
	return found, nil
}

// splitUnescaped splits s at sep characters not preceded by a backslash.
func splitUnescaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == sep {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// UnescapeMountField decodes mountinfo's \040-style escapes (in a mount
// point or a root).
func UnescapeMountField(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// UnmountUnder detaches every mount at or below dir (deepest first), for
// cleaning up after runtimes that mount inside their state directories.
func UnmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var targets []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<26) // grows only for long lines (deep lowerdir lists)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), " ")
		if len(fields) < 5 {
			continue
		}
		t := UnescapeMountField(fields[4])
		if t == dir || strings.HasPrefix(t, dir+"/") {
			targets = append(targets, t)
		}
	}
	f.Close()
	var errs []error
	for i := len(targets) - 1; i >= 0; i-- {
		if err := Unmount(targets[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
