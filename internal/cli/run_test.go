package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
)

func TestRunStreamsOutputAndPropagatesExitCode(t *testing.T) {
	t.Parallel()
	d := fakeDaemon(t)
	r := d.arbor(t, "run", "--image", "busybox", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.code != 3 {
		t.Fatalf("exit code = %d, want 3\n%v", r.code, r)
	}
	if r.stdout != "out\n" {
		t.Errorf("stdout = %q, want only the command's output %q", r.stdout, "out\n")
	}
	wantContains(t, "stderr", r.stderr, "err\n", "arbor: image ", "exit 3")
}

func TestRunJSONTagsResultImage(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	res := okJSON[runResult](t, d, "run", "--image", "busybox", "--tag", "run-json", "--", "echo hi > /root/f && echo done && echo warn >&2")
	if res.Status != apitypes.StatusSuccess || res.ExitCode != 0 || res.TimedOut {
		t.Fatalf("result = %+v, want SUCCESS, exit 0", res)
	}
	if res.Stdout != "done\n" || res.Stderr != "warn\n" {
		t.Errorf("stdout, stderr = %q, %q, want %q, %q", res.Stdout, res.Stderr, "done\n", "warn\n")
	}
	if res.Image == nil || res.Tag == nil || *res.Tag != "run-json" || !apitypes.IsUUID(res.Operation) || res.Duration <= 0 {
		t.Fatalf("result = %+v, want an image tagged run-json, an operation and a duration", res)
	}
	if got := d.ok(t, "cat", "run-json:/root/f"); got != "hi\n" {
		t.Errorf("cat run-json:/root/f = %q, want %q", got, "hi\n")
	}
	// The operation that made it is the one reported.
	im, err := d.c.Image(t.Context(), *res.Image)
	if err != nil || deref(im.OperationUUID) != res.Operation || deref(im.ParentUUID) != d.busybox {
		t.Errorf("image %s = %+v, %v; want operation %s, parent %s", *res.Image, im, err, res.Operation, d.busybox)
	}
}

func TestRunCommandForms(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t) // shell word splitting and expansion, ls
	for _, tc := range []struct {
		name string
		args []string // after --image busybox
		want string
	}{
		{"exec form keeps arguments", []string{"--", "echo", "a  b", "$HOME"}, "a  b $HOME\n"},
		{"single argument with spaces runs in a shell", []string{"--", "echo a && echo $HOME"}, "a\n/root\n"},
		{"--shell joins the words", []string{"-s", "--", "echo", "x;", "echo", "y"}, "x\ny\n"},
		{"without -- flags stop at the command", []string{"ls", "-d", "/etc"}, "/etc\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"run", "-q", "--disposable", "--image", "busybox"}, tc.args...)
			if got := d.ok(t, args...); got != tc.want {
				t.Errorf("arbor %s = %q, want %q", strings.Join(args, " "), got, tc.want)
			}
		})
	}
}

// TestRunEnvWorkdirFilesStdin is not parallel: it sets an environment
// variable for -e NAME to copy.
func TestRunEnvWorkdirFilesStdin(t *testing.T) {
	d := sharedDaemon(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "hello.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"hello $NAME from $(pwd)\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data.txt")
	if err := os.WriteFile(data, []byte("payload\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ARBOR_TEST_COPIED", "copied")
	r := d.arborIn(t, "from stdin\n", "run", "--disposable", "--image", "busybox", "-e", "NAME=arbor", "-e", "ARBOR_TEST_COPIED",
		"-C", "/work/dir", "-f", script+":/usr/local/bin/hello:0755", "-f", data+":/work/dir/data.txt", "-i", "--",
		"sh", "-c", "hello; echo $ARBOR_TEST_COPIED; stat -c %a /work/dir/data.txt; cat data.txt; cat")
	if r.code != 0 {
		t.Fatalf("run: %v", r)
	}
	want := "hello arbor from /work/dir\ncopied\n600\npayload\nfrom stdin\n"
	if r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
}

func TestRunTimeoutExits124(t *testing.T) {
	t.Parallel()
	d := fakeDaemon(t)
	r := d.arbor(t, "run", "--image", "busybox", "--disposable", "--timeout", "1s", "--", "sleep", "30")
	if r.code != 124 {
		t.Fatalf("exit code = %d, want 124\n%v", r.code, r)
	}
	wantContains(t, "stderr", r.stderr, "timed out", "--timeout")

	r = d.arbor(t, "--json", "run", "--image", "busybox", "--disposable", "--timeout", "0.5", "--", "sleep", "30")
	res := decode[runResult](t, r.stdout)
	if r.code != 124 || !res.TimedOut || res.Image != nil {
		t.Errorf("--json timeout: exit %d, result %+v; want 124, timed_out, no image", r.code, res)
	}
}

func TestRunDisposableSavesNothing(t *testing.T) {
	t.Parallel()
	d := fakeDaemon(t)
	res := okJSON[runResult](t, d, "run", "--disposable", "--image", "busybox", "--", "touch", "/x")
	if res.Image != nil || res.Status != apitypes.StatusSuccess {
		t.Errorf("disposable run = %+v, want SUCCESS without an image", res)
	}
}

func TestRunMissingProgramExits127(t *testing.T) {
	t.Parallel()
	d := fakeDaemon(t)
	r := d.arbor(t, "run", "--disposable", "--image", "busybox", "--", "no-such-program")
	if r.code != 127 {
		t.Errorf("missing program: exit %d, want 127\n%v", r.code, r)
	}
	wantContains(t, "stderr", r.stderr, "not found in the image")
}

func TestRunImageReferences(t *testing.T) {
	t.Parallel()
	d := fakeDaemon(t)
	for _, ref := range []string{d.busybox, strings.ToUpper(d.busybox), d.busybox[:8], d.busybox[:6], "tag:busybox", "busybox"} {
		if got := d.ok(t, "run", "-q", "--disposable", "--image", ref, "--", "cat", "/etc/hostname"); got != "linuxkit\n" {
			t.Errorf("run --image %s = %q, want linuxkit", ref, got)
		}
	}
}

// TestRunMistakes is not parallel: it sets $ARBOR_IMAGE.
func TestRunMistakes(t *testing.T) {
	d := fakeDaemon(t)
	t.Setenv("ARBOR_IMAGE", "busybox")
	if got := d.ok(t, "run", "-q", "--disposable", "--", "echo", "env"); got != "env\n" {
		t.Errorf("run with $ARBOR_IMAGE set = %q, want env", got)
	}
	t.Setenv("ARBOR_IMAGE", "")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no image", []string{"run", "--", "true"}, []string{"pass --image", "ARBOR_IMAGE"}},
		{"unknown tag suggests close ones", []string{"run", "--image", "busybx", "--", "true"}, []string{`no image has tag "busybx"`, "did you mean busybox"}},
		{"unknown explicit tag", []string{"run", "--image", "tag:nothing-like-it", "--", "true"}, []string{`no image has tag "nothing-like-it"`, "arbor images"}},
		{"unknown uuid", []string{"run", "--image", "00000000-0000-4000-8000-000000000000", "--", "true"}, []string{"not found"}},
		{"bad -f", []string{"run", "--image", "busybox", "-f", "nocolon", "--", "true"}, []string{"LOCAL:/PATH"}},
		{"missing -f file", []string{"run", "--image", "busybox", "-f", "/nonexistent/x:/x", "--", "true"}, []string{"no such file"}},
		{"relative -C", []string{"run", "--image", "busybox", "-C", "rel", "--", "true"}, []string{"absolute"}},
		{"bad timeout", []string{"run", "--image", "busybox", "--timeout", "soon", "--", "true"}, []string{"--timeout", "90s"}},
		{"tag with disposable", []string{"run", "--image", "busybox", "--disposable", "--tag", "x", "--", "true"}, []string{"--disposable"}},
		{"bad tag", []string{"run", "--image", "busybox", "--tag", "-bad", "--", "true"}, []string{"invalid tag"}},
		{"unknown runtime", []string{"run", "--image", "busybox", "--runtime", "kata", "--", "true"}, []string{`runtime "kata"`, "available"}},
		{"no command", []string{"run", "--image", "busybox"}, []string{"requires at least 1 arg"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := d.arbor(t, tc.args...)
			if r.code != 1 {
				t.Fatalf("arbor %s: exit %d, want 1\n%v", strings.Join(tc.args, " "), r.code, r)
			}
			wantContains(t, "stderr", r.stderr, tc.want...)
			if strings.Contains(r.stderr, "arbor: arbor:") || strings.Contains(r.stderr, "HTTP 4") {
				t.Errorf("stderr = %q: want a plain message, not the raw client error", r.stderr)
			}
		})
	}
}

func TestOutcomeCode(t *testing.T) {
	for _, tc := range []struct {
		o    outcome
		want int
	}{
		{outcome{status: apitypes.StatusSuccess, exitCode: 0}, 0},
		{outcome{status: apitypes.StatusSuccess, exitCode: 42}, 42},
		{outcome{status: apitypes.StatusSuccess, exitCode: -1, signal: 9, timedOut: true}, 124},
		{outcome{status: apitypes.StatusSuccess, exitCode: -1, signal: 9}, 137},
		{outcome{status: apitypes.StatusCancelled, exitCode: -1}, 130},
		{outcome{status: apitypes.StatusFailed, exitCode: 0}, 1},
	} {
		if got := tc.o.code(); got != tc.want {
			t.Errorf("%+v.code() = %d, want %d", tc.o, got, tc.want)
		}
	}
}

func TestRunNetworkAndLimits(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	// What the sandbox's network looks like is the engine's business (and
	// tested there); here: the flags reach the daemon.
	m := runMetadata(t, d, "run", "--disposable", "--image", "busybox", "--network", "--memory", "64M", "--cpus", "0.5", "--", "true")
	if !m.Networking.Enabled || m.ResourcesLimits.MemoryBytes == nil || *m.ResourcesLimits.MemoryBytes != 64<<20 ||
		m.ResourcesLimits.CPUs == nil || *m.ResourcesLimits.CPUs != 0.5 {
		t.Errorf("--network --memory 64M --cpus 0.5 reached the daemon as %+v, %+v", m.Networking, m.ResourcesLimits)
	}
	if got := d.ok(t, "run", "-q", "--disposable", "--image", "busybox", "--", "ip", "-4", "addr"); strings.Contains(got, "eth0") {
		t.Errorf("without --network: interfaces %q, want loopback only", got)
	}
	if r := d.arbor(t, "run", "--disposable", "--image", "busybox", "--memory", "1M", "--", "true"); r.code != 1 || !strings.Contains(r.stderr, "at least 4 MiB") {
		t.Errorf("--memory 1M: %v", r)
	}
}

// TestRunTagOnlyOnSuccess: --tag moves only onto the result of a command
// that exited 0, and never takes the input image's own tag away when the
// run changed nothing; stderr (and --json's tag_not_set) says why.
func TestRunTagOnlyOnSuccess(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	good := d.runImage(t, "busybox", "echo 1 > /v", "--tag", "tag-good")
	for _, tc := range []struct {
		name     string
		args     []string // after run
		code     int
		why      string // in the tag_not_set reason and on stderr
		notExist string // a tag that must not have been set
	}{
		{"failed command", []string{"--image", "tag-good", "--tag", "tag-good", "--", "echo 2 > /v; exit 3"}, 3, "the command exited 3", ""},
		{"unchanged run", []string{"--image", "tag-good", "--tag", "tag-other", "--", "true"}, 0, "the run changed nothing", "tag-other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := d.arbor(t, append([]string{"run"}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\n%v", r.code, tc.code, r)
			}
			wantContains(t, "stderr", r.stderr, " not set: ", tc.why)
			rj := d.arbor(t, append([]string{"--json", "run"}, tc.args...)...)
			if res := decode[runResult](t, rj.stdout); rj.code != tc.code || res.Tag != nil || !strings.Contains(res.TagNotSet, tc.why) {
				t.Errorf("--json: exit %d, %+v; want exit %d, no tag, tag_not_set %q", rj.code, res, tc.code, tc.why)
			}
			if im, err := d.c.Image(t.Context(), good); err != nil || deref(im.Tag) != "tag-good" {
				t.Errorf("image %s = %+v, %v; want it still tagged tag-good", good, im, err)
			}
			if tc.notExist != "" {
				if r := d.arbor(t, "ls", tc.notExist); r.code == 0 {
					t.Errorf("tag %s was set: %v", tc.notExist, r)
				}
			}
		})
	}
	if got := d.ok(t, "cat", "tag-good:/v"); got != "1\n" {
		t.Errorf("cat tag-good:/v = %q, want the good state 1", got)
	}
	// The daemon tags as it records the run (result_tag), so a run that
	// ends after arbor run has returned gets its tag too.
	op := strings.TrimSpace(d.ok(t, "run", "--keep-stdin", "--image", "busybox", "--tag", "tag-later", "--shell", "--", "cat > /got"))
	if err := d.c.WriteStdin(t.Context(), op, 1, apitypes.ClosableStreamRepr{Value: "late\n", Close: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.c.Wait(t.Context(), op); err != nil {
		t.Fatal(err)
	}
	if got := d.ok(t, "cat", "tag-later:/got"); got != "late\n" {
		t.Errorf("cat tag-later:/got = %q, want what the kept-open run read", got)
	}
}

// TestRunSandboxFlags: --uid, --gid, --hostname, --truncate-output-at and
// --preserve-env act in the sandbox; --pids and --max-layer-bytes reach
// the daemon.
func TestRunSandboxFlags(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	if got := d.ok(t, "run", "-q", "--disposable", "--image", "busybox", "--uid", "1000", "--gid", "1001", "--hostname", "ci-1", "-C", "/",
		"--", "id -u; id -g; hostname"); got != "1000\n1001\nci-1\n" {
		t.Errorf("--uid 1000 --gid 1001 --hostname ci-1: %q", got)
	}
	r := d.arbor(t, "run", "--disposable", "--image", "busybox", "--truncate-output-at", "4", "--", "echo", "123456789")
	if r.code != 0 || r.stdout != "1234" {
		t.Errorf("--truncate-output-at 4: %v", r)
	}
	wantContains(t, "stderr", r.stderr, "output truncated")
	env := d.runImage(t, "busybox", "true", "--preserve-env", "-e", "KEPT=yes")
	if got := d.ok(t, "run", "-q", "--disposable", "--image", env, "--", "echo $KEPT"); got != "yes\n" {
		t.Errorf("a run on the --preserve-env result sees KEPT=%q, want yes", got)
	}
	m := runMetadata(t, d, "run", "--disposable", "--image", "busybox", "--pids", "64", "--max-layer-bytes", "100M", "--", "true")
	if l := m.ResourcesLimits; l.Pids == nil || *l.Pids != 64 || l.MaxLayerBytes == nil || *l.MaxLayerBytes != 100<<20 {
		t.Errorf("--pids 64 --max-layer-bytes 100M reached the daemon as %+v", l)
	}
}
