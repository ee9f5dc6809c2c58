package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// arborBinary builds cmd/arbor once per test run.
func arborBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "arbor-bin-")
		if err != nil {
			binErr = err
			return
		}
		cleanups = append(cleanups, func() { os.RemoveAll(dir) })
		binPath = filepath.Join(dir, "arbor")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/arborsh/arbor/cmd/arbor").CombinedOutput()
		if err != nil {
			binErr = errors.New("go build ./cmd/arbor: " + err.Error() + "\n" + string(out))
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// binaryCmd prepares the compiled arbor with the environment a user has:
// ARBOR_HOME pointing at the daemon's home and no other ARBOR_ variables,
// so discovery (client.Discover) finds it with no flags.
func (d *testDaemon) binaryCmd(ctx context.Context, t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, arborBinary(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ARBOR_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "ARBOR_HOME="+d.home)
	return cmd
}

func TestBinaryExitCodes(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		args       []string
		code       int
		stdout     string
		stderrWant string
	}{
		{[]string{"run", "--image", "busybox", "--disposable", "--", "sh", "-c", "echo hi; exit 7"}, 7, "hi\n", "exit 7"},
		{[]string{"run", "--image", "busybox", "--disposable", "--timeout", "0.5", "--", "sleep", "10"}, 124, "", "timed out"},
		{[]string{"run", "--image", "busybx", "--", "true"}, 1, "", "did you mean busybox"},
		{[]string{"grep", "no-such-thing", "busybox:/etc"}, 1, "", ""},
		{[]string{"--url", "http://127.0.0.1:1", "images"}, 1, "", "cannot reach the arbor daemon at http://127.0.0.1:1"},
		{[]string{"cat", "busybox:/etc/hostname"}, 0, "linuxkit\n", ""},
	} {
		var out, errb bytes.Buffer
		cmd := d.binaryCmd(ctx, t, tc.args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("arbor %v: %v", tc.args, err)
		}
		if code != tc.code || out.String() != tc.stdout || !strings.Contains(errb.String(), tc.stderrWant) {
			t.Errorf("arbor %s: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr containing %q",
				strings.Join(tc.args, " "), code, out.String(), errb.String(), tc.code, tc.stdout, tc.stderrWant)
		}
	}
}

// TestBinaryCtrlC sends SIGINT to a running `arbor run` and checks that
// the output streamed live, the operation ended CANCELLED on the daemon, and
// the exit status is 130.
func TestBinaryCtrlC(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := d.binaryCmd(ctx, t, "run", "--image", "busybox", "--", "sh", "-c", "echo started; sleep 100")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first line arrives while the command is still running: live.
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "started\n" {
		t.Fatalf("first stdout line = %q, %v; want started", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("arbor run after SIGINT: %v, want exit status 130\nstderr: %s", err, errb.String())
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("arbor run took %v to stop after SIGINT", time.Since(start))
	}
	m := regexp.MustCompile(`cancelling operation ([0-9a-f-]{36})`).FindStringSubmatch(errb.String())
	if m == nil {
		t.Fatalf("stderr does not name the cancelled operation: %q", errb.String())
	}
	res, err := d.c.Operation(t.Context(), m[1])
	if err != nil || res.Status != apitypes.StatusCancelled {
		t.Errorf("operation %s after Ctrl-C: %+v, %v; want CANCELLED", m[1], res, err)
	}
}
