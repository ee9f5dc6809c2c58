package initproc

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/testutil"
)

// The test binary doubles as the init: started with Arg it serves.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == Arg {
		os.Exit(Main(os.Args[1:]))
	}
	code := m.Run()
	testutil.RemoveBuildDir()
	os.Exit(code)
}

// initKind is one init the protocol tests run: the Go init (this test
// binary) in its warm and cold serve modes, and the C init of cold batch
// runs (cmd/arbor-init-c), which must behave the same.
type initKind struct {
	name string
	c    bool // the C init: compact requests, serve --exit only
	exit bool // serve --exit
}

var inits = []initKind{{name: "go"}, {name: "go-exit", exit: true}, {name: "c", c: true, exit: true}}

// forInits runs f for each init kind as a subtest.
func forInits(t *testing.T, f func(t *testing.T, k initKind)) {
	for _, k := range inits {
		t.Run(k.name, func(t *testing.T) { f(t, k) })
	}
}

// startServer runs a serving init as a plain child process (no sandbox:
// these tests cover the protocol; the engine's warm tests cover sandboxes).
func startServer(t *testing.T, kinds ...initKind) (*Agent, *exec.Cmd) {
	t.Helper()
	// The init runs every command with set credentials and no supplementary
	// groups, as root in a sandbox does: setgroups needs CAP_SETGID.
	testutil.RequiresRoot(t)
	k := inits[0]
	if len(kinds) > 0 {
		k = kinds[0]
	}
	a, pipes, err := NewAgentPipes()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{os.Args[0], Arg, "serve"}
	if k.c {
		bin, err := testutil.ColdInit()
		if err != nil {
			t.Fatal(err)
		}
		args[0] = bin
		a.CompactRequests()
	}
	if k.exit {
		args = append(args, ExitAfterRun)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pipes.Stdin, pipes.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pipes.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		a.Close()
	})
	if !k.exit {
		// A warm init says it serves before anything else, as the engine
		// waits for at boot.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := a.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return a, cmd
}

// TestAgentRun runs commands through each init (see inits) and requires
// the same results from all: output, exit, signals, credentials, limits,
// and commands hostile to the init.
func TestAgentRun(t *testing.T) {
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB: more than a pipe holds
	for _, tc := range []struct {
		name, script, stdin string
		uid, gid            uint32 // 0: this test's own
		fsize               int64
		wantOut, wantErr    string
		wantCode, wantSig   int
		signal              syscall.Signal
	}{
		{name: "stdio and exit code", script: "cat; echo err >&2; exit 3", stdin: "hello\n", wantOut: "hello\n", wantErr: "err\n", wantCode: 3},
		{name: "signal", script: "echo up; exec sleep 100", wantOut: "up\n", wantCode: -1, wantSig: 15, signal: syscall.SIGTERM},
		{name: "exit 143 is not a signal", script: "exit 143", wantCode: 143},
		{name: "background holder", script: "sleep 3 & echo hi", wantOut: "hi\n"},
		{name: "env and cwd", script: "echo $X; pwd", wantOut: "y\n/tmp\n"},
		{name: "credentials, no groups", script: "id -u; id -g; id -G", uid: 65534, gid: 65533, wantOut: "65534\n65533\n65533\n"},
		{name: "own session", script: `[ "$(cut -d' ' -f6 /proc/$$/stat)" = $$ ] && echo leader`, wantOut: "leader\n"},
		{name: "file size limit", script: "head -c 5000 /dev/zero > /tmp/arbor-initproc-fsize-$$; r=$?; rm -f /tmp/arbor-initproc-fsize-$$; exit $r", fsize: 4096, wantCode: 128 + 25, wantErr: "*"}, // SIGXFSZ
		{name: "large stdin through", script: "cat", stdin: big, wantOut: big},
		{name: "stdin not read", script: "exec 0<&-; echo done", stdin: big, wantOut: "done\n"},
		{name: "output flood", script: "head -c 3000000 /dev/zero | tr '\\0' x; echo", wantOut: strings.Repeat("x", 3000000) + "\n"},
		{name: "closes its output", script: "exec >&- 2>&-; sleep 0.1; exit 4", wantCode: 4},
		{name: "cannot reach the init", script: "cat /proc/$PPID/environ || ls /proc/$PPID/fd/ || echo sealed", uid: 65534, gid: 65534, wantOut: "sealed\n", wantErr: "*"},
		{name: "default dispositions", script: "grep -E '^Sig(Ign|Blk)' /proc/self/status", wantOut: "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forInits(t, func(t *testing.T, k initKind) {
				a, _ := startServer(t, k)
				var out, errb bytes.Buffer
				started := make(chan int, 1)
				var stdin io.Reader
				if tc.stdin != "" {
					stdin = strings.NewReader(tc.stdin)
				}
				done := make(chan struct{})
				var x Exit
				var err error
				begin := time.Now()
				go func() {
					defer close(done)
					req := Request{Args: []string{"/bin/sh", "-c", tc.script}, Env: []string{"PATH=/usr/bin:/bin", "X=y"}, Cwd: "/tmp", UID: uid, GID: gid, FileSize: tc.fsize}
					if tc.uid != 0 {
						req.UID, req.GID = tc.uid, tc.gid
					}
					x, _, err = a.Run(req, stdin, &out, &errb, func(pid int) { started <- pid })
				}()
				select {
				case pid := <-started:
					if pid <= 0 {
						t.Fatalf("pid %d", pid)
					}
				case <-done:
					t.Fatalf("Run ended before its process started: %v", err)
				}
				if tc.signal != 0 {
					time.Sleep(200 * time.Millisecond) // let the script reach sleep
					if err := a.Signal(tc.signal); err != nil {
						t.Fatal(err)
					}
				}
				<-done
				if err != nil {
					t.Fatal(err)
				}
				gotErr := errb.String()
				if tc.wantErr == "*" && gotErr != "" {
					gotErr = "*"
				}
				if x.Code != tc.wantCode || x.Signal != tc.wantSig || out.String() != tc.wantOut || gotErr != tc.wantErr {
					t.Errorf("exit %d signal %d stdout %.200q stderr %q; want %d %d %.200q %q", x.Code, x.Signal, out.String(), errb.String(), tc.wantCode, tc.wantSig, tc.wantOut, tc.wantErr)
				}
				if x.Rusage.Utime.Sec+x.Rusage.Utime.Usec+x.Rusage.Stime.Sec+x.Rusage.Stime.Usec == 0 && x.Rusage.Minflt == 0 {
					t.Errorf("no resource usage reported: %+v", x.Rusage)
				}
				if tc.name == "background holder" && time.Since(begin) > 2*time.Second {
					t.Errorf("the run waited %v for a background process holding its output", time.Since(begin))
				}
			})
		})
	}
}

// TestAgentSandboxGone: when the init dies mid-run, Run reports it.
func TestAgentSandboxGone(t *testing.T) {
	forInits(t, func(t *testing.T, k initKind) {
		a, cmd := startServer(t, k)
		go func() {
			time.Sleep(300 * time.Millisecond) // deliberate: kill the init mid-run
			_ = cmd.Process.Kill()
		}()
		_, _, err := a.Run(Request{Args: []string{"/bin/sleep", "2"}, Cwd: "/", UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}, nil, nil, nil, nil)
		if !IsSandboxGone(err) {
			t.Fatalf("Run after the init died: %v, want the sandbox-gone error", err)
		}
	})
}

// TestAgentStartError: a command that cannot start is an error, not a
// hang, and says why in the same words from either init.
func TestAgentStartError(t *testing.T) {
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	for _, tc := range []struct {
		name string
		req  Request
		want string
	}{
		{"not in PATH", Request{Args: []string{"no-such-command"}, Env: []string{"PATH=/nonexistent"}, Cwd: "/"}, "no-such-command: executable file not found in $PATH"},
		{"no such file", Request{Args: []string{"/nonexistent"}, Cwd: "/", UID: uid, GID: gid}, "/nonexistent: no such file or directory"},
		{"no such cwd", Request{Args: []string{"/bin/true"}, Cwd: "/nonexistent", UID: uid, GID: gid}, "/bin/true: no such file or directory"},
		{"not executable", Request{Args: []string{"/etc/passwd"}, Cwd: "/", UID: uid, GID: gid}, "/etc/passwd: permission denied"},
		{"NUL in an argument", Request{Args: []string{"/bin/echo", "a\x00b"}, Cwd: "/", UID: uid, GID: gid}, "/bin/echo: invalid argument"},
		{"no command", Request{Cwd: "/"}, "no command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forInits(t, func(t *testing.T, k initKind) {
				a, _ := startServer(t, k)
				_, _, err := a.Run(tc.req, nil, nil, nil, nil)
				if err == nil || err.Error() != tc.want {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
			})
		})
	}
}

// TestReadFrameBounds: a frame longer than the reader's limit is refused
// before anything is allocated.
func TestReadFrameBounds(t *testing.T) {
	var hdr [5]byte
	hdr[0] = frameStdout
	binary.BigEndian.PutUint32(hdr[1:], maxFrame+1)
	if _, _, err := readFrame(bytes.NewReader(hdr[:]), maxFrame); err == nil {
		t.Fatal("oversized frame accepted")
	}
	binary.BigEndian.PutUint32(hdr[1:], 3)
	typ, p, err := readFrame(bytes.NewReader(append(hdr[:], "abc"...)), maxFrame)
	if err != nil || typ != frameStdout || string(p) != "abc" {
		t.Fatalf("readFrame = %q %q %v", typ, p, err)
	}
}

// TestAgentAlive: an idle serving init is alive; once it dies, it is not.
func TestAgentAlive(t *testing.T) {
	forInits(t, func(t *testing.T, k initKind) {
		a, cmd := startServer(t, k)
		if !a.Alive() {
			t.Fatal("a running init reported dead")
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if a.Alive() {
			t.Fatal("a dead init reported alive")
		}
	})
}
