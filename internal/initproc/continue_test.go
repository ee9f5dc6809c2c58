package initproc

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAgentContinue: after a reported exit, Continue readies the agent for
// the next command; after anything else (a start error, a protocol error)
// it refuses, and so does an agent not yet used.
func TestAgentContinue(t *testing.T) {
	if fakeAgent("").Continue(time.Second) {
		t.Fatal("an unused agent continued")
	}
	a := fakeAgent(frame(frameStarted, pid7) + frame(frameExit, `{"code":0}`) + frame(frameStarted, pid7) + frame(frameExit, `{"code":0,"stale":"/dev changed"}`))
	for i := range 2 {
		x, _, err := a.Run(Request{Args: []string{"x"}}, nil, nil, nil, nil)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if i == 1 && x.Stale != "/dev changed" {
			t.Errorf("stale report lost: %+v", x)
		}
		if !a.Continue(time.Second) {
			t.Fatalf("run %d: no continuing after a reported exit", i)
		}
	}
	for _, script := range []string{frame(frameError, "nope"), frame(frameStarted, pid7) + frame(frameStarted, pid7)} {
		a := fakeAgent(script)
		if _, _, err := a.Run(Request{Args: []string{"x"}}, nil, nil, nil, nil); err == nil {
			t.Fatal("bad script accepted")
		}
		if a.Continue(time.Second) {
			t.Errorf("continued after %q", script)
		}
	}
}

// TestServeOneCommandUnlessPID1: an init that is not PID 1 cannot kill
// what a command leaves behind, so it refuses a second command.
func TestServeOneCommandUnlessPID1(t *testing.T) {
	a, _ := startServer(t)
	if _, _, err := a.Run(Request{Args: []string{"/bin/sh", "-c", "true"}}, strings.NewReader(""), nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !a.Continue(5 * time.Second) {
		t.Fatal("agent not ready after a clean exit")
	}
	_, _, err := a.Run(Request{Args: []string{"/bin/sh", "-c", "true"}}, strings.NewReader(""), nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "cannot run another command") {
		t.Fatalf("second command in a non-PID-1 init: %v", err)
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
	if !a.Continue(5*time.Second) || a.pid.Load() != 0 {
		t.Fatal("after Continue the agent still names the old command")
	}
}
