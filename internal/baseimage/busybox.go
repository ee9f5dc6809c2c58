// Package baseimage builds small base root filesystems from the host's own
// packages, for machines without registry access: a busybox image (from
// Debian's busybox-static) for tests and quick starts.
package baseimage

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/initproc"
)

// BusyboxPath is where Debian's busybox-static installs the binary.
const BusyboxPath = "/bin/busybox"

// FindBusybox returns a static busybox binary on the host.
func FindBusybox() (string, error) {
	for _, p := range []string{os.Getenv("ARBOR_BUSYBOX"), BusyboxPath, "/usr/bin/busybox"} {
		if p == "" {
			continue
		}
		if IsStatic(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("no static busybox found: install it with `apt-get install busybox-static` (or set ARBOR_BUSYBOX)")
}

// IsStatic reports whether p is an ELF executable without an interpreter,
// i.e. one that runs inside an image with no libc (see initproc.IsStatic).
func IsStatic(p string) bool { return initproc.IsStatic(p) }

// busyboxDirs are the directories of the busybox root filesystem.
var busyboxDirs = []struct {
	name string
	mode int64
}{{"bin", 0o755}, {"sbin", 0o755}, {"usr", 0o755}, {"usr/bin", 0o755}, {"usr/sbin", 0o755}, {"etc", 0o755},
	{"root", 0o700}, {"tmp", 0o1777}, {"proc", 0o555}, {"sys", 0o555}, {"dev", 0o755}, {"home", 0o755}, {"var", 0o755}, {"var/tmp", 0o1777}}

// WriteBusyboxTar writes a minimal busybox root filesystem as a tar stream:
// the binary, a link for every applet in /bin, and a small /etc.
func WriteBusyboxTar(w io.Writer) error {
	tw := tar.NewWriter(w)
	if err := writeBusybox(tw); err != nil {
		return err
	}
	return tw.Close()
}

// writeBusybox writes WriteBusyboxTar's entries to tw, leaving it open.
func writeBusybox(tw *tar.Writer) error {
	bin, err := FindBusybox()
	if err != nil {
		return err
	}
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return fmt.Errorf("%s --list: %w", bin, err)
	}
	applets := strings.Fields(string(out))
	sort.Strings(applets)
	mtime := time.Unix(1700000000, 0)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: mtime})
	}
	file := func(name string, mode int64, body []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	for _, d := range busyboxDirs {
		if err := dir(d.name, d.mode); err != nil {
			return err
		}
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	if err := file("bin/busybox", 0o755, body); err != nil {
		return err
	}
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: path.Join("bin", a), Linkname: "/bin/busybox", ModTime: mtime}); err != nil {
			return err
		}
	}
	etc := map[string]string{
		"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":      "root:x:0:\nnogroup:x:65534:\n",
		"etc/hostname":   "linuxkit\n",
		"etc/hosts":      "127.0.0.1 localhost\n::1 localhost\n",
		"etc/os-release": "NAME=\"arbor busybox\"\nID=busybox\n",
	}
	keys := make([]string, 0, len(etc))
	for k := range etc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := file(k, 0o644, []byte(etc[k])); err != nil {
			return err
		}
	}
	return nil
}
