package baseimage

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/testutil"
)

func TestParseOneLine(t *testing.T) {
	in := `# a comment line
deb http://deb.example.org/debian bookworm main contrib
deb-src http://src.example.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://opt.example.org/debian bookworm-updates main
deb [ arch=amd64 ] https://spaced.example.org/debian bookworm main # trailing comment
  deb   http://indented.example.org/debian   sid main
deb [broken http://broken.example.org/debian bookworm main
deb http://short.example.org/debian
#deb http://commented.example.org/debian bookworm main
`
	got := parseOneLine([]byte(in))
	want := []aptSource{
		{uri: "http://deb.example.org/debian", suites: []string{"bookworm"}},
		{uri: "http://opt.example.org/debian", suites: []string{"bookworm-updates"}},
		{uri: "https://spaced.example.org/debian", suites: []string{"bookworm"}},
		{uri: "http://indented.example.org/debian", suites: []string{"sid"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseOneLine() = %+v, want %+v", got, want)
	}
}

func TestParseDeb822(t *testing.T) {
	in := `# Debian's default since bookworm
Types: deb deb-src
URIs: http://deb.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example.org/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src-only.example.org/debian
Suites: bookworm

Types: deb
Enabled: no
URIs: http://disabled.example.org/debian
Suites: bookworm

types: deb
uris: http://one.example.org/debian
 http://two.example.org/debian
suites: trixie
components: main
`
	got := parseDeb822([]byte(in))
	want := []aptSource{
		{uri: "http://deb.example.org/debian", suites: []string{"bookworm", "bookworm-updates"}},
		{uri: "http://security.example.org/debian-security", suites: []string{"bookworm-security"}},
		{uri: "http://one.example.org/debian", suites: []string{"trixie"}},
		{uri: "http://two.example.org/debian", suites: []string{"trixie"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseDeb822() = %+v, want %+v", got, want)
	}
}

func TestPickMirror(t *testing.T) {
	sec := aptSource{uri: "http://security.example.org/debian-security", suites: []string{"bookworm-security"}}
	upd := aptSource{uri: "http://updates.example.org/debian", suites: []string{"bookworm-updates"}}
	main := aptSource{uri: "http://main.example.org/debian", suites: []string{"bookworm"}}
	other := aptSource{uri: "http://other.example.org/debian", suites: []string{"stable"}}
	cdrom := aptSource{uri: "cdrom:[Debian GNU/Linux]/", suites: []string{"bookworm"}}
	tests := []struct {
		name string
		srcs []aptSource
		want string
		ok   bool
	}{
		{"exact suite wins over earlier pockets", []aptSource{sec, upd, main}, main.uri, true},
		{"first of several exact", []aptSource{main, {uri: "http://second.example.org/debian", suites: []string{"bookworm"}}}, main.uri, true},
		{"no exact suite: a non-pocket source", []aptSource{sec, other}, other.uri, true},
		{"only pockets: the first", []aptSource{upd, sec}, upd.uri, true},
		{"unusable schemes skipped", []aptSource{cdrom, upd}, upd.uri, true},
		{"nothing", nil, "", false},
		{"nothing usable", []aptSource{cdrom}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := pickMirror(tc.srcs, "bookworm")
			if got != tc.want || ok != tc.ok {
				t.Errorf("pickMirror() = %q, %v, want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestDefaultMirrorReadsFilesInAPTOrder(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "sources.list")
	d := filepath.Join(dir, "sources.list.d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func(l, dd string) { aptSourcesList, aptSourcesDir = l, dd }(aptSourcesList, aptSourcesDir)
	aptSourcesList, aptSourcesDir = list, d

	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing configured at all.
	if m, err := DefaultMirror(); err == nil {
		t.Fatalf("DefaultMirror() with no sources = %q, want an error", m)
	} else if !strings.Contains(err.Error(), "pass a Debian mirror URL") {
		t.Errorf("DefaultMirror() error = %q, want it to say what to do", err)
	}

	// Only the deb822 file (Debian 12's default layout).
	write(filepath.Join(d, "debian.sources"), "Types: deb\nURIs: http://b.example.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n")
	write(filepath.Join(d, "README"), "deb http://ignored.example.org/debian bookworm main\n")
	if m, err := DefaultMirror(); err != nil || m != "http://b.example.org/debian" {
		t.Errorf("DefaultMirror() = %q, %v, want the deb822 URI", m, err)
	}
	// An earlier *.list file in lexical order wins.
	write(filepath.Join(d, "a-local.list"), "deb http://a.example.org/debian bookworm main\n")
	if m, err := DefaultMirror(); err != nil || m != "http://a.example.org/debian" {
		t.Errorf("DefaultMirror() = %q, %v, want the a-local.list URI", m, err)
	}
	// sources.list comes before sources.list.d; its security line does not count.
	write(list, "deb http://security.example.org/debian-security bookworm-security main\ndeb http://first.example.org/debian bookworm main\n")
	if m, err := DefaultMirror(); err != nil || m != "http://first.example.org/debian" {
		t.Errorf("DefaultMirror() = %q, %v, want the sources.list URI", m, err)
	}
}

func TestCheckMirror(t *testing.T) {
	for _, ok := range []string{"http://x/debian", "https://x/debian", "file:///srv/mirror", "ftp://x/debian"} {
		if err := checkMirror(ok); err != nil {
			t.Errorf("checkMirror(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "deb.debian.org/debian", "cdrom:[x]/", "mirror+file:/etc/apt/mirrors.txt"} {
		if err := checkMirror(bad); err == nil {
			t.Errorf("checkMirror(%q) = nil, want an error", bad)
		}
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{`/a/b`: "/a/b", `/a\040b`: "/a b", `/x\134y`: `/x\y`, `/trail\04`: `/trail\04`} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBuildPythonChecksArguments(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := BuildPython(context.Background(), dir, "http://mirror.invalid/debian", nil)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("BuildPython(non-empty dir) = %v, want a not-empty error", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "keep")); err != nil {
		t.Errorf("BuildPython touched the existing directory: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "new")
	if err := BuildPython(context.Background(), empty, "cdrom:[x]/", nil); err == nil || !strings.Contains(err.Error(), "cannot fetch") {
		t.Errorf("BuildPython(cdrom mirror) = %v, want a mirror error", err)
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Errorf("BuildPython created %s before validating its arguments", empty)
	}
}

// TestBuildPythonDebootstrap runs the real debootstrap (2-3 minutes, needs
// the mirror). Set ARBOR_TEST_DEBOOTSTRAP=1 to run it.
func TestBuildPythonDebootstrap(t *testing.T) {
	if os.Getenv("ARBOR_TEST_DEBOOTSTRAP") != "1" {
		t.Skip("set ARBOR_TEST_DEBOOTSTRAP=1 to run debootstrap (2-3 minutes, needs the apt mirror)")
	}
	testutil.RequiresRoot(t)
	dir := filepath.Join(t.TempDir(), "rootfs")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var log bytes.Buffer
	start := time.Now()
	if err := BuildPython(ctx, dir, "", &log); err != nil {
		t.Fatalf("BuildPython: %v\n%s", err, log.String())
	}
	t.Logf("debootstrap took %s", time.Since(start).Round(time.Second))
	if err := unmountBelow(dir); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("chroot", dir, "python3", "-c", "import pytest, sys; print(sys.version_info[0], pytest.__version__)").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "3 ") {
		t.Fatalf("python3 with pytest in the new root = %q, %v", out, err)
	}
	if debs, _ := filepath.Glob(filepath.Join(dir, "var/cache/apt/archives/*.deb")); len(debs) > 0 {
		t.Errorf("%d .deb files left in the package cache", len(debs))
	}
}

// TestWriteHostPythonTar: the host's python3, assembled with its standard
// library and libraries, runs in a root of its own (no ld.so.cache), with
// the extension modules that load shared libraries.
func TestWriteHostPythonTar(t *testing.T) {
	testutil.RequiresRoot(t) // chroot
	var buf bytes.Buffer
	if err := WriteHostPythonTar(&buf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tx := exec.Command("tar", "-x", "-C", dir)
	tx.Stdin = &buf
	if out, err := tx.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "etc/ld.so.cache")); err == nil {
		t.Fatal("the image has an ld.so.cache: the test would not show the libraries are where the loader looks")
	}
	before := time.Now().Add(-time.Second)
	py := exec.Command("chroot", dir, "/bin/sh", "-c",
		`python3 -c 'import ctypes, email.mime.multipart, hashlib, http.server, json, socketserver, sqlite3, ssl, sys; print(sys.prefix, sqlite3.sqlite_version != "")'`)
	py.Env = []string{"PATH=/usr/bin:/bin"} // as in a sandbox: nothing like PYTHONDONTWRITEBYTECODE
	out, err := py.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "/usr True" {
		t.Fatalf("python3 in the assembled root: %v: %s", err, out)
	}
	// The compiled modules are valid: python wrote none again.
	var rewritten []string
	_ = filepath.WalkDir(filepath.Join(dir, "usr/lib"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".pyc") {
			if fi, err := d.Info(); err == nil && fi.ModTime().After(before) {
				rewritten = append(rewritten, p)
			}
		}
		return nil
	})
	if len(rewritten) > 0 {
		t.Errorf("python3 compiled %d modules again at start (stale .pyc), e.g. %s", len(rewritten), rewritten[0])
	}
}
