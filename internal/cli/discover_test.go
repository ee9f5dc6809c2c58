package cli

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// main runs the CLI exactly as given (no --url/--token added).
func mainCLI(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb strings.Builder
	code := Main(t.Context(), args, strings.NewReader(""), &out, &errb)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// TestDiscovery is not parallel: it clears ARBOR_* variables.
func TestDiscovery(t *testing.T) {
	d := fakeDaemon(t)
	for _, k := range []string{"ARBOR_URL", "ARBOR_TOKEN", "ARBOR_HOME"} {
		t.Setenv(k, "")
	}
	// --home finds the url and token files.
	if r := mainCLI(t, "--home", d.home, "whoami"); r.code != 0 || !strings.Contains(r.stdout, d.url) {
		t.Errorf("whoami --home: %v", r)
	}
	// $ARBOR_HOME with no flags is client.Discover's path.
	t.Setenv("ARBOR_HOME", d.home)
	if r := mainCLI(t, "whoami"); r.code != 0 || !strings.Contains(r.stdout, d.url) {
		t.Errorf("whoami with ARBOR_HOME: %v", r)
	}
	// ARBOR_URL and ARBOR_TOKEN override the files.
	t.Setenv("ARBOR_HOME", "/nonexistent")
	t.Setenv("ARBOR_URL", d.url)
	t.Setenv("ARBOR_TOKEN", d.token)
	if r := mainCLI(t, "whoami"); r.code != 0 {
		t.Errorf("whoami with ARBOR_URL and ARBOR_TOKEN: %v", r)
	}
	t.Setenv("ARBOR_URL", "")
	t.Setenv("ARBOR_TOKEN", "")

	// A home without a daemon says how to start one.
	for _, args := range [][]string{{"--home", t.TempDir(), "images"}, {"images"}} {
		r := mainCLI(t, args...)
		if r.code != 1 {
			t.Fatalf("arbor %v without a daemon: %v", args, r)
		}
		wantContains(t, "stderr", r.stderr, "cannot find the arbor daemon", "url does not exist", "sudo arbor serve")
	}
	// A url file but no token file.
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, "url"), []byte(d.url+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := mainCLI(t, "--home", home, "images"); r.code != 1 || !strings.Contains(r.stderr, "--token") {
		t.Errorf("home without a token file: %v", r)
	}
}

func TestDaemonDown(t *testing.T) {
	t.Parallel()
	// A port nothing listens on: bind one, then close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	for _, args := range [][]string{{"images"}, {"run", "--image", "busybox", "--", "true"}, {"cat", "busybox:/etc/passwd"}} {
		r := mainCLI(t, append([]string{"--url", url, "--token", "x"}, args...)...)
		if r.code != 1 {
			t.Fatalf("arbor %v with the daemon down: %v", args, r)
		}
		want := "arbor: cannot reach the arbor daemon at " + url + ": is it running? start it with `sudo arbor serve`"
		if !strings.HasPrefix(r.stderr, want) {
			t.Errorf("stderr = %q, want it to start with %q", r.stderr, want)
		}
	}
	if r := mainCLI(t, "--url", "localhost:7777", "--token", "x", "images"); r.code != 1 || !strings.Contains(r.stderr, "http://127.0.0.1:7777") {
		t.Errorf("a URL without a scheme: %v", r)
	}
}

// TestHelp checks that every command explains itself with examples.
func TestHelp(t *testing.T) {
	t.Parallel()
	g := &globals{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			n++
			if sub.Short == "" || sub.Long == "" || sub.Example == "" {
				t.Errorf("command %q lacks Short, Long or Example", sub.CommandPath())
			}
			walk(sub)
		}
	}
	walk(newRoot(g))
	if n < 20 {
		t.Errorf("found %d commands, want at least 20", n)
	}
	r := mainCLI(t, "run", "--help")
	if r.code != 0 {
		t.Fatalf("run --help: %v", r)
	}
	wantContains(t, "run --help", r.stdout, "Examples:", "--image", "--disposable", "--tag", "/bin/sh -c", "124")
	for _, shell := range []string{"bash", "zsh", "fish"} {
		if r := mainCLI(t, "completion", shell); r.code != 0 || !strings.Contains(r.stdout, "arbor") {
			t.Errorf("completion %s: exit %d", shell, r.code)
		}
	}
	if r := mainCLI(t, "imagez"); r.code != 1 || !strings.Contains(r.stderr, "images") {
		t.Errorf("a misspelt command: %v, want a suggestion", r)
	}
}

func TestClosest(t *testing.T) {
	tags := []string{"busybox", "busybox:latest", "python", "python-3.12", "env", "attempt-1", "attempt-2"}
	for _, tc := range []struct {
		name string
		want string
	}{
		{"busybx", "busybox"},
		{"bussybox", "busybox"},
		{"pyhton", "python"},
		{"attempt", "attempt-1,attempt-2"},
		{"python-3", "python-3.12,python"},
		{"zzzzzz", ""},
	} {
		if got := strings.Join(closest(tc.name, tags, 2), ","); got != tc.want {
			t.Errorf("closest(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestSplitImagePath(t *testing.T) {
	for _, tc := range []struct{ arg, ref, path string }{
		{"busybox:/etc", "busybox", "/etc"},
		{"busybox:latest:/etc/passwd", "busybox:latest", "/etc/passwd"},
		{"tag:py:3.12:/usr", "tag:py:3.12", "/usr"},
		{"3f2a9c1e", "3f2a9c1e", ""},
	} {
		ref, p, _ := splitImagePath(tc.arg)
		if ref != tc.ref || p != tc.path {
			t.Errorf("splitImagePath(%q) = %q, %q; want %q, %q", tc.arg, ref, p, tc.ref, tc.path)
		}
	}
}

func TestParseSeconds(t *testing.T) {
	for in, want := range map[string]float64{"30": 30, "1.5": 1.5, "90s": 90, "2m": 120, "1h30m": 5400, "2d": 172800, "1w": 604800} {
		if got, err := parseSeconds("--timeout", in); err != nil || got != want {
			t.Errorf("parseSeconds(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "soon", "-2m", "xd"} {
		if _, err := parseSeconds("--timeout", in); err == nil {
			t.Errorf("parseSeconds(%q) succeeded, want an error", in)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "512M": 512 << 20, "512m": 512 << 20, "2G": 2 << 30, "1.5GiB": 3 << 29, "64MB": 64 << 20, "4k": 4096} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1", "lots", "0"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) succeeded, want an error", in)
		}
	}
}
