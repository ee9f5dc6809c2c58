package baseimage

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The Debian release and packages of the Python base.
const (
	PythonSuite    = "bookworm"
	PythonPackages = "python3,python3-pytest"
)

// APT source locations read by [DefaultMirror]; variables so tests can
// point them at fixtures.
var (
	aptSourcesList = "/etc/apt/sources.list"
	aptSourcesDir  = "/etc/apt/sources.list.d"
)

// BuildPython builds a minimal Debian root filesystem with python3 and
// pytest (from Debian's packages) into dir, which must be absent or empty:
//
//	debootstrap --variant=minbase --include=python3,python3-pytest bookworm DIR MIRROR
//
// mirror is a Debian archive URL; "" means [DefaultMirror]. debootstrap's
// output goes to progress (nil discards it). It takes two to three minutes
// and about 260 MB, needs root and network access to the mirror, and the
// debootstrap package (apt-get install debootstrap).
//
// On failure or cancellation every mount debootstrap made below dir is
// detached before BuildPython returns, so the caller may remove dir. The
// caller then archives dir (for example with tar --numeric-owner) and
// imports it as a plain root filesystem.
func BuildPython(ctx context.Context, dir, mirror string, progress io.Writer) (err error) {
	if dir == "" {
		return errors.New("BuildPython: no target directory")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	if err := checkEmpty(dir); err != nil {
		return err
	}
	if mirror != "" {
		if err := checkMirror(mirror); err != nil {
			return err
		}
	}
	bin, err := exec.LookPath("debootstrap")
	if err != nil {
		return errors.New("debootstrap is not installed: install it with `apt-get install debootstrap`")
	}
	if os.Geteuid() != 0 {
		return errors.New("building the Python base needs root (debootstrap chroots and mounts)")
	}
	if mirror == "" {
		if mirror, err = DefaultMirror(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if progress == nil {
		progress = io.Discard
	}
	tail := &tailBuffer{max: 4 << 10}
	out := io.MultiWriter(progress, tail)
	fmt.Fprintf(out, "I: debootstrap %s into %s from %s (python3, pytest; takes 2-3 minutes)\n", PythonSuite, dir, mirror)

	cmd := exec.CommandContext(ctx, bin, "--variant=minbase", "--include="+PythonPackages, PythonSuite, dir, mirror)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	// debootstrap runs dpkg and maintainer scripts in a chroot: cancel the
	// whole process group, not only the shell script at its top.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	defer func() {
		// debootstrap unmounts proc, sys and (in containers) bind-mounted
		// device nodes on a clean exit; a killed one leaves them behind.
		if uerr := unmountBelow(dir); uerr != nil && err == nil {
			err = uerr
		}
	}()
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("debootstrap cancelled: %w", context.Cause(ctx))
		}
		msg := strings.TrimSpace(tail.String())
		if log := debootstrapLogTail(dir); log != "" {
			msg += "\n--- debootstrap.log ---\n" + log
		}
		return fmt.Errorf("debootstrap %s from %s failed (%v):\n%s", PythonSuite, mirror, err, msg)
	}
	// The package cache is only needed during the build.
	debs, _ := filepath.Glob(filepath.Join(dir, "var/cache/apt/archives/*.deb"))
	for _, p := range debs {
		_ = os.Remove(p)
	}
	if _, err := os.Lstat(filepath.Join(dir, "usr/bin/python3")); err != nil {
		return fmt.Errorf("debootstrap succeeded but %s has no /usr/bin/python3: %w", dir, err)
	}
	return nil
}

// checkEmpty accepts an absent or empty directory.
func checkEmpty(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case len(ents) > 0:
		return fmt.Errorf("target directory %s is not empty: BuildPython needs an empty or absent directory", dir)
	}
	return nil
}

// checkMirror accepts the URL schemes debootstrap can fetch from.
func checkMirror(m string) error {
	u, err := url.Parse(m)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("mirror %q is not a URL such as http://HOST/debian", m)
	}
	switch u.Scheme {
	case "http", "https", "ftp", "file":
		return nil
	}
	return fmt.Errorf("mirror %q: debootstrap cannot fetch %s:// URLs; use http, https, ftp or file", m, u.Scheme)
}

// DefaultMirror returns the Debian archive this machine's APT uses: the URL
// of the first enabled "deb" source for the release [PythonSuite], read
// from /etc/apt/sources.list and then /etc/apt/sources.list.d/*.list and
// *.sources (one-line and deb822 formats) in the order APT reads them.
// Sources for other suites (bookworm-security, bookworm-updates) are used
// only when no source names the release itself, since a security mirror
// cannot bootstrap a system.
func DefaultMirror() (string, error) {
	srcs, err := readAptSources(aptSourcesList, aptSourcesDir)
	if err != nil {
		return "", err
	}
	if m, ok := pickMirror(srcs, PythonSuite); ok {
		return m, nil
	}
	return "", fmt.Errorf("no usable deb source in %s or %s/*.{list,sources}: pass a Debian mirror URL explicitly", aptSourcesList, aptSourcesDir)
}

// aptSource is one enabled "deb" entry.
type aptSource struct {
	uri    string
	suites []string
}

// pickMirror chooses the first source whose suites include suite exactly,
// then the first whose suites are not security, updates or backports
// pockets, then the first usable source at all.
func pickMirror(srcs []aptSource, suite string) (string, bool) {
	var usable []aptSource
	for _, s := range srcs {
		if checkMirror(s.uri) == nil {
			usable = append(usable, s)
		}
	}
	for _, s := range usable {
		for _, su := range s.suites {
			if su == suite {
				return s.uri, true
			}
		}
	}
	for _, s := range usable {
		pocket := false
		for _, su := range s.suites {
			pocket = pocket || strings.ContainsAny(su, "-/")
		}
		if !pocket {
			return s.uri, true
		}
	}
	if len(usable) > 0 {
		return usable[0].uri, true
	}
	return "", false
}

// readAptSources reads list, then the *.list and *.sources files of dir in
// lexical order, as APT does. Missing files are skipped.
func readAptSources(list, dir string) ([]aptSource, error) {
	var out []aptSource
	if b, err := os.ReadFile(list); err == nil {
		out = append(out, parseOneLine(b)...)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		var parse func([]byte) []aptSource
		switch {
		case strings.HasSuffix(n, ".list"):
			parse = parseOneLine
		case strings.HasSuffix(n, ".sources"):
			parse = parseDeb822
		default:
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		out = append(out, parse(b)...)
	}
	return out, nil
}

// parseOneLine parses the one-line format:
//
//	deb [ option1=value1 option2=value2 ] uri suite [component1] ...
func parseOneLine(b []byte) []aptSource {
	var out []aptSource
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			// Options run to the first field ending in "]"; they may be
			// written "[opt=v]", "[ opt=v ]" or "[opt=v opt2=w]".
			end := -1
			for i, x := range f {
				if strings.HasSuffix(x, "]") {
					end = i
					break
				}
			}
			if end < 0 {
				continue
			}
			f = f[end+1:]
		}
		if len(f) < 2 {
			continue
		}
		out = append(out, aptSource{uri: f[0], suites: []string{f[1]}})
	}
	return out
}

// parseDeb822 parses the deb822 format of *.sources files: stanzas of
// "Key: value" fields separated by blank lines, with continuation lines
// starting with whitespace and comment lines starting with "#".
func parseDeb822(b []byte) []aptSource {
	var out []aptSource
	fields := map[string]string{}
	key := ""
	flush := func() {
		defer func() { fields, key = map[string]string{}, "" }()
		if len(fields) == 0 || !hasField(fields["types"], "deb") {
			return
		}
		switch strings.ToLower(strings.TrimSpace(fields["enabled"])) {
		case "no", "false", "0":
			return
		}
		suites := strings.Fields(fields["suites"])
		for _, u := range strings.Fields(fields["uris"]) {
			out = append(out, aptSource{uri: u, suites: suites})
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if key != "" {
				fields[key] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			key = strings.ToLower(strings.TrimSpace(k))
			fields[key] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

func hasField(list, want string) bool {
	for _, f := range strings.Fields(list) {
		if f == want {
			return true
		}
	}
	return false
}

// unmountBelow detaches every mount at or below dir, deepest first.
func unmountBelow(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := unescapeMountPath(f[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// debootstrapLogTail returns the end of debootstrap's own log in dir.
func debootstrapLogTail(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "debootstrap", "debootstrap.log"))
	if err != nil {
		return ""
	}
	const n = 2 << 10
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.buf) }
