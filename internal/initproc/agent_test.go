package initproc

import (
	"bytes"
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
	os.Exit(m.Run())
}

// startServer runs a serving init as a plain child process (no sandbox:
// these tests cover the protocol; the engine's warm tests cover sandboxes).
func startServer(t *testing.T) (*Agent, *exec.Cmd) {
	t.Helper()
	// The init runs every command with set credentials and no supplementary
	// groups, as root in a sandbox does: setgroups needs CAP_SETGID.
	testutil.RequiresRoot(t)
	a, pipes, err := NewAgentPipes()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], Arg, "serve")
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
	return a, cmd
}

func TestAgentRun(t *testing.T) {
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	for _, tc := range []struct {
		name, script, stdin string
		wantOut, wantErr    string
		wantCode, wantSig   int
		signal              syscall.Signal
	}{
		{name: "stdio and exit code", script: "cat; echo err >&2; exit 3", stdin: "hello\n", wantOut: "hello\n", wantErr: "err\n", wantCode: 3},
		{name: "signal", script: "echo up; exec sleep 100", wantOut: "up\n", wantCode: -1, wantSig: 15, signal: syscall.SIGTERM},
		{name: "exit 143 is not a signal", script: "exit 143", wantCode: 143},
		{name: "background holder", script: "sleep 3 & echo hi", wantOut: "hi\n"},
		{name: "env and cwd", script: "echo $X; pwd", wantOut: "y\n/tmp\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := startServer(t)
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
				req := Request{Args: []string{"/bin/sh", "-c", tc.script}, Env: []string{"PATH=/usr/bin:/bin", "X=y"}, Cwd: "/tmp", UID: uid, GID: gid}
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
			if x.Code != tc.wantCode || x.Signal != tc.wantSig || out.String() != tc.wantOut || errb.String() != tc.wantErr {
				t.Errorf("exit %d signal %d stdout %q stderr %q; want %d %d %q %q", x.Code, x.Signal, out.String(), errb.String(), tc.wantCode, tc.wantSig, tc.wantOut, tc.wantErr)
			}
			if tc.name == "background holder" && time.Since(begin) > 2*time.Second {
				t.Errorf("the run waited %v for a background process holding its output", time.Since(begin))
			}
		})
	}
}

// TestAgentSandboxGone: when the init dies mid-run, Run reports it.
func TestAgentSandboxGone(t *testing.T) {
	a, cmd := startServer(t)
	go func() {
		time.Sleep(300 * time.Millisecond) // deliberate: kill the init mid-run
		_ = cmd.Process.Kill()
	}()
	_, _, err := a.Run(Request{Args: []string{"/bin/sleep", "2"}, Cwd: "/", UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}, nil, nil, nil, nil)
	if !IsSandboxGone(err) {
		t.Fatalf("Run after the init died: %v, want the sandbox-gone error", err)
	}
}

// TestAgentStartError: a command that cannot start is an error, not a hang.
func TestAgentStartError(t *testing.T) {
	a, _ := startServer(t)
	_, _, err := a.Run(Request{Args: []string{"no-such-command"}, Env: []string{"PATH=/nonexistent"}, Cwd: "/"}, nil, nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("err = %v, want not found", err)
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
	a, cmd := startServer(t)
	if !a.Alive() {
		t.Fatal("a running init reported dead")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if a.Alive() {
		t.Fatal("a dead init reported alive")
	}
}
