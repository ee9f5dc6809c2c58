package baseimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// HostPythonPath is the interpreter [WriteHostPythonTar] takes: Debian's
// python3 package (scripts/setup.sh installs it with python3-pytest).
const HostPythonPath = "/usr/bin/python3"

// WriteHostPythonTar writes a root filesystem holding the host's own
// python3 as a tar stream: the busybox image of [WriteBusyboxTar] (a shell
// and the usual tools) plus the interpreter, its standard library (without
// the static library, the test suite and IDLE), Debian's site hook in
// /etc/python3.X, and every shared library that the interpreter and the
// standard library's extension modules load, as ldd resolves them on the
// host. These are the same files a Debian image with the same python3
// package holds (what `arbor import --python` builds with debootstrap in
// two to three minutes), assembled in about a second: for tests and
// benchmarks that need a real CPython in a sandbox.
func WriteHostPythonTar(w io.Writer) error {
	exe, err := filepath.EvalSymlinks(HostPythonPath)
	if err != nil {
		return fmt.Errorf("no python3 on the host (%v): install it with `apt-get install python3`", err)
	}
	ver := filepath.Base(exe) // python3.11
	if !strings.HasPrefix(ver, "python3.") {
		return fmt.Errorf("%s resolves to %s, not a python3.X interpreter", HostPythonPath, exe)
	}
	stdlib := filepath.Join("/usr/lib", ver)
	if _, err := os.Stat(filepath.Join(stdlib, "os.py")); err != nil {
		return fmt.Errorf("python3's standard library is not in %s: %w", stdlib, err)
	}
	var files []string // host paths, each written at the same path
	skip := func(rel string) bool {
		top, _, _ := strings.Cut(rel, "/")
		return strings.HasPrefix(top, "config-") || top == "test" || top == "idlelib"
	}
	var elves []string
	roots := []string{stdlib}
	if _, err := os.Stat(filepath.Join("/etc", ver)); err == nil { // Debian's site hook
		roots = append(roots, filepath.Join("/etc", ver))
	}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if rel, _ := filepath.Rel(root, p); root == stdlib && rel != "." && skip(rel) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.IsDir() {
				files = append(files, p)
				if strings.HasSuffix(p, ".so") {
					elves = append(elves, p)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	libs, err := sharedLibs(append([]string{exe}, elves...), exe)
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	if err := writeBusybox(tw); err != nil {
		return err
	}
	mtime := time.Unix(1700000000, 0)
	dirs := map[string]bool{}
	for _, d := range busyboxDirs {
		dirs[d.name] = true
	}
	var mkdirs func(dir string) error
	mkdirs = func(dir string) error {
		if dir == "." || dir == "" || dirs[dir] {
			return nil
		}
		if err := mkdirs(path.Dir(dir)); err != nil {
			return err
		}
		dirs[dir] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: mtime})
	}
	// add writes host file p at name: a symlink as a symlink, anything
	// else with the content of the file it is.
	add := func(p, name string, follow bool) error {
		name = strings.TrimPrefix(name, "/")
		if err := mkdirs(path.Dir(name)); err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink != 0 && !follow {
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, ModTime: mtime})
		}
		if st, err = os.Stat(p); err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return nil // no sockets or devices in a library
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		// The host's times: a .pyc is valid only while its source keeps
		// the mtime recorded in it, or python compiles the module again
		// at every start (and writes it into the sandbox's upper).
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(st.Mode().Perm()), Size: st.Size(), ModTime: st.ModTime()}); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	}
	if err := add(exe, exe, true); err != nil {
		return err
	}
	for _, link := range []string{"usr/bin/python3", "usr/bin/python"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: link, Linkname: ver, ModTime: mtime}); err != nil {
			return err
		}
	}
	for _, p := range files {
		if err := add(p, p, false); err != nil {
			return err
		}
	}
	for _, p := range libs { // at the path the loader asks for, with the content it gets
		if err := add(p, p, true); err != nil {
			return err
		}
	}
	return tw.Close()
}

// sharedLibs returns the shared libraries (and the dynamic loader) that
// the ELF files load, from one ldd call. A library the interpreter needs
// and the host lacks is an error; one only an extension module needs is
// left out (that module then fails to import, as on the host).
func sharedLibs(elves []string, exe string) ([]string, error) {
	out, err := exec.Command("ldd", elves...).Output()
	if err != nil && len(out) == 0 {
		return nil, fmt.Errorf("ldd %s: %w", exe, err)
	}
	seen := map[string]bool{}
	var libs []string
	file := exe // ldd heads each file's list with "FILE:" only when given several
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "\t") { // "FILE:" heads each file's list
			file = strings.TrimSuffix(line, ":")
			continue
		}
		line = strings.TrimSpace(line)
		if strings.Contains(line, "not found") {
			if file == exe {
				return nil, fmt.Errorf("%s needs a library the host lacks: %s", exe, line)
			}
			continue
		}
		p := line
		if _, after, ok := strings.Cut(line, "=> "); ok {
			p = after
		}
		p, _, _ = strings.Cut(p, " (")
		if !strings.HasPrefix(p, "/") || seen[p] { // linux-vdso.so.1 has no file
			continue
		}
		seen[p] = true
		libs = append(libs, p)
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd found no libraries for %s: %s", exe, out)
	}
	sort.Strings(libs)
	return libs, nil
}
