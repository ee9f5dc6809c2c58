package initproc

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/testutil"
)

// TestAgentContinue: after a reported exit and the init's word that the
// sandbox is fresh, Continue readies the agent for the next command; after
// anything else (a start error, a protocol error, an init that could not
// make the sandbox fresh) it refuses, and so does an agent not yet used.
func TestAgentContinue(t *testing.T) {
	if fakeAgent("").Continue(time.Second) == nil {
		t.Fatal("an unused agent continued")
	}
	exit0, fresh := frame(frameExit, `{"code":0}`), frame(frameFresh, "")
	a := fakeAgent(frame(frameStarted, pid7) + exit0 + fresh + frame(frameStarted, pid7) + exit0 + frame(frameFresh, "/dev changed"))
	for i := range 2 {
		if _, _, err := a.Run(Request{Args: []string{"x"}}, nil, nil, nil, nil); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		err := a.Continue(time.Second)
		switch {
		case i == 0 && err != nil:
			t.Fatalf("no continuing after a reported exit and a fresh sandbox: %v", err)
		case i == 0 && a.pid.Load() != 0:
			t.Fatal("after Continue the agent still names the old command")
		case i == 1 && (err == nil || !strings.Contains(err.Error(), "/dev changed")):
			t.Fatalf("continued after the init said the sandbox is not fresh: %v", err)
		}
	}
	for _, script := range []string{
		frame(frameError, "nope"),
		frame(frameStarted, pid7) + frame(frameStarted, pid7),
		frame(frameStarted, pid7) + frame(frameFresh, ""), // 'f' before the exit
	} {
		a := fakeAgent(script)
		if _, _, err := a.Run(Request{Args: []string{"x"}}, nil, nil, nil, nil); err == nil {
			t.Fatal("bad script accepted")
		}
		if a.Continue(time.Second) == nil {
			t.Errorf("continued after %q", script)
		}
	}
	// A forged second 'f', or output after it, is a protocol error.
	a = fakeAgent(frame(frameStarted, pid7) + exit0 + fresh + fresh)
	if _, _, err := a.Run(Request{Args: []string{"x"}}, nil, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Continue(time.Second); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Run(Request{Args: []string{"x"}}, nil, nil, nil, nil); !IsProtocolError(err) {
		t.Fatalf("'f' while starting: %v, want a protocol error", err)
	}
}

// TestServeOneCommandUnlessPID1: an init that is not PID 1 cannot kill
// what a command leaves behind, so it says the sandbox is not fresh and
// refuses a second command.
func TestServeOneCommandUnlessPID1(t *testing.T) {
	a, _ := startServer(t)
	if _, _, err := a.Run(Request{Args: []string{"/bin/sh", "-c", "true"}}, strings.NewReader(""), nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Continue(5 * time.Second); err == nil || !strings.Contains(err.Error(), "not PID 1") {
		t.Fatalf("Continue with an init that is not PID 1: %v", err)
	}
}

// TestSignalNamesItsCommand: the init drops a signal frame that names
// another command's pid (one that exited before the sandbox went on), so a
// late signal never reaches the next command.
func TestSignalNamesItsCommand(t *testing.T) {
	a, _ := startServer(t)
	started := make(chan struct{})
	type ran struct {
		x   Exit
		err error
	}
	done := make(chan ran, 1)
	go func() {
		x, _, err := a.Run(Request{Args: []string{"/bin/sh", "-c", "exec sleep 100"}}, strings.NewReader(""), nil, nil, func(int) { close(started) })
		done <- ran{x, err}
	}()
	<-started
	// A SIGKILL for a pid that is not the command's, then a SIGTERM for it:
	// frames are handled in order, so a delivered SIGKILL would win.
	if err := a.w.write(frameSignal, []byte{byte(syscall.SIGKILL), 0, 0, 0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.x.Signal != int(syscall.SIGTERM) {
		t.Fatalf("command ended %+v (%v), want killed by SIGTERM alone", r.x, r.err)
	}
}

// TestStartTakesPreparedPipes: a command starts on the pipes prepared
// while the sandbox was idle, which carry its stdin and output as pipes
// made at the start would, and a run that finds none makes its own; a
// second set prepared while one waits is closed, not leaked.
func TestStartTakesPreparedPipes(t *testing.T) {
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	spare := make(chan *cmdPipes, 1)
	before := fds()
	prepare(spare)
	prepare(spare) // one waits already: this one is closed
	if got := fds() - before; got != 6 {
		t.Fatalf("%d descriptors open after preparing twice, want the 6 of one set", got)
	}
	for i, prepared := range []bool{true, false} {
		if prepared != (len(spare) == 1) {
			t.Fatalf("run %d: %d sets waiting", i, len(spare))
		}
		var out testutil.SyncBuffer
		fw := &frameWriter{w: &out}
		pid, stdin, done, err := start(Request{Args: []string{"/bin/sh", "-c", "read x; echo got $x"}, Env: []string{"PATH=/bin:/usr/bin"}}, fw, spare)
		if err != nil {
			t.Fatal(err)
		}
		if len(spare) != 0 {
			t.Fatalf("run %d: the prepared pipes were not taken", i)
		}
		stdin <- []byte("hello\n")
		close(stdin)
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
			t.Fatalf("run %d: wait: %v, status %v", i, err, ws)
		}
		done()
		if !strings.Contains(out.String(), "got hello") {
			t.Fatalf("run %d: frames %q lack the command's output", i, out.String())
		}
	}
}
