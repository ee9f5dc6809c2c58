package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/internal/daemon"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// testDaemon is the real daemon (daemon.Run) on a temporary home, serving
// on a loopback port, with a busybox image tagged "busybox" imported
// through the CLI itself.
type testDaemon struct {
	home, url, token string
	c                *client.Client // for checks made behind the CLI's back
	busybox          string         // uuid of the busybox image
}

func TestMain(m *testing.M) {
	code := testdaemon.Main(m)
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(code)
}

// cleanups run after every test (the built binary's directory).
var cleanups []func()

// sharedDaemon returns the daemon every test shares, starting it on first
// use. It uses runc for speed.
func sharedDaemon(t *testing.T) *testDaemon {
	t.Helper()
	td := testdaemon.Shared(t, "cli", testdaemon.Options{Serve: serve})
	sharedOnce.Do(func() {
		shared = &testDaemon{home: td.Home, url: td.URL, token: td.Token, c: td.Client}
		// The base image comes in the way a user without registry access gets it.
		r := shared.exec(context.Background(), "", "--json", "import", "--busybox")
		if r.code != 0 {
			sharedErr = fmt.Errorf("arbor import --busybox: exit %d: %s", r.code, r.stderr)
			return
		}
		var res importResult
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Image == nil {
			sharedErr = fmt.Errorf("arbor import --busybox: output %q: %v", r.stdout, err)
			return
		}
		shared.busybox = *res.Image
	})
	if sharedErr != nil {
		t.Fatalf("start daemon: %v", sharedErr)
	}
	return shared
}

var (
	sharedOnce sync.Once
	shared     *testDaemon
	sharedErr  error
)

// fakeDaemon returns the shared daemon (daemon.Run, as sharedDaemon's)
// over the fake runtime: testdaemon.Shell plays the commands and roots are
// copies, so the tests of what the CLI does with the API's answers run
// without root. Its busybox, tagged "busybox", comes through the API.
func fakeDaemon(t *testing.T) *testDaemon {
	t.Helper()
	td := testdaemon.Shared(t, "cli-fake", testdaemon.Options{Serve: serve, Fake: testdaemon.Shell, Busybox: "busybox"})
	return &testDaemon{home: td.Home, url: td.URL, token: td.Token, c: td.Client, busybox: td.Busybox}
}

// serve runs the product's daemon (daemon.Run) on a loopback port.
func serve(ctx context.Context, home string, cfg engine.Config, ready func(string)) error {
	return daemon.Run(ctx, daemon.Config{Home: home, Listen: "127.0.0.1:0", Engine: cfg,
		Logger: slog.New(slog.DiscardHandler), Ready: ready})
}

// result is one CLI invocation's outcome.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// exec runs the CLI in process (cli.Main, the binary's own code path)
// against d, with --url and --token so the environment cannot interfere.
func (d *testDaemon) exec(ctx context.Context, stdin string, args ...string) result {
	var out, errb bytes.Buffer
	full := append([]string{"--url", d.url, "--token", d.token}, args...)
	code := Main(ctx, full, strings.NewReader(stdin), &out, &errb)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// arbor runs the CLI with a one-minute deadline.
func (d *testDaemon) arbor(t *testing.T, args ...string) result {
	t.Helper()
	return d.arborIn(t, "", args...)
}

func (d *testDaemon) arborIn(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return d.exec(ctx, stdin, args...)
}

// ok runs the CLI and fails t unless it exits 0; it returns stdout.
func (d *testDaemon) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := d.arbor(t, args...)
	if r.code != 0 {
		t.Fatalf("arbor %s: %v", strings.Join(args, " "), r)
	}
	return r.stdout
}

// okJSON runs the CLI with --json, expects exit 0 and decodes stdout.
func okJSON[T any](t *testing.T, d *testDaemon, args ...string) T {
	t.Helper()
	out := d.ok(t, append([]string{"--json"}, args...)...)
	return decode[T](t, out)
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T from %q: %v", v, s, err)
	}
	return v
}

// wantContains fails t unless s contains every one of subs.
func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s = %q, want it to contain %q", what, s, sub)
		}
	}
}

// runImage runs a shell command on image with the CLI and returns the
// result image's uuid.
func (d *testDaemon) runImage(t *testing.T, image, shell string, extra ...string) string {
	t.Helper()
	args := append([]string{"run", "--image", image}, extra...)
	res := okJSON[runResult](t, d, append(args, "--", shell)...)
	if res.Image == nil || res.ExitCode != 0 {
		t.Fatalf("run %q on %s: %+v", shell, image, res)
	}
	return *res.Image
}
