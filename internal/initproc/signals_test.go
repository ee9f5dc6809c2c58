package initproc

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeSurvivesSignals: a serving init, here a plain host process
// where nothing drops signals for it, survives every standard signal a
// process can catch and still runs a command. As a sandbox's PID 1 the
// kernel spares it what it does not catch; Go's runtime must not end it
// either (it dies on SIGTERM or SIGHUP, crashes on SIGQUIT or SIGSEGV sent
// by a process, and default actions stop it on SIGTSTP). The real-time
// signals are checked from inside a sandbox (TestInitIgnoresSignalsFromInside).
func TestServeSurvivesSignals(t *testing.T) {
	forInits(t, func(t *testing.T, k initKind) {
		a, cmd := startServer(t, k)
		// Its signal handling is in place once it answers.
		var empty bytes.Buffer
		if err := tar.NewWriter(&empty).Close(); err != nil {
			t.Fatal(err)
		}
		if err := a.Place(&empty); err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid
		for sig := syscall.Signal(1); sig < 32; sig++ {
			if sig == syscall.SIGKILL || sig == syscall.SIGSTOP {
				continue
			}
			if err := syscall.Kill(pid, sig); err != nil {
				t.Fatalf("kill %d: %v", sig, err)
			}
			// Taken by a handler (or fatal by now) before the next one.
			for deadline := time.Now().Add(time.Minute); pending(t, pid, sig); {
				if time.Now().After(deadline) {
					t.Fatalf("signal %d still pending after a minute", sig)
				}
				time.Sleep(time.Millisecond) // polls the kernel's pending set
			}
		}
		var out bytes.Buffer
		x, _, err := a.Run(Request{Args: []string{"/bin/sh", "-c", "echo alive"}, Env: []string{"PATH=/usr/bin:/bin"}, Cwd: "/",
			UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}, nil, &out, nil, nil)
		if err != nil || x.Code != 0 || out.String() != "alive\n" {
			t.Fatalf("after the signals: exit %+v, %q, %v; want the init alive and serving", x, out.String(), err)
		}
	})
}

// pending reports whether signal sig waits for pid's main thread to take
// it. (One the init inherited blocked can never reach it and does not
// count: those are all signals Go drops anyway.)
func pending(t *testing.T, pid int, sig syscall.Signal) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("the init is gone after signal %d: %v", sig, err)
	}
	set := map[string]uint64{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && (strings.HasPrefix(k, "Sig") || strings.HasPrefix(k, "Shd")) {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			set[k] = n
		}
	}
	return (set["SigPnd"]|set["ShdPnd"])&^set["SigBlk"]&(1<<(sig-1)) != 0
}
