package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/client/apitypes"
)

// spawnDisposable runs a shell command and returns its operation whatever its
// status.
func spawnDisposable(t testing.TB, e *Engine, image, cmd string) (Operation, apitypes.InstanceMetadata) {
	t.Helper()
	sh, disp := true, true
	op, _, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: cmd, Image: image, Shell: &sh, Disposable: &disp})
	if err != nil {
		t.Fatalf("Spawn(%q): %v", cmd, err)
	}
	return waitMeta(t, e, op, cmd)
}

// waitMeta waits (up to 2 min) for operation op of command cmd and returns
// it with its decoded metadata.
func waitMeta(t testing.TB, e *Engine, op, cmd string) (Operation, apitypes.InstanceMetadata) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o, err := e.WaitOperation(ctx, acct, op)
	if err != nil {
		t.Fatalf("wait %q: %v", cmd, err)
	}
	var m apitypes.InstanceMetadata
	if err := json.Unmarshal([]byte(o.Metadata), &m); err != nil {
		t.Fatal(err)
	}
	return o, m
}

// hostileWrites writes a forged 'started' frame and random bytes to every
// file descriptor of every other process the command can open (the init's
// pipes to the daemon among them, if reachable), and names those it reached.
const hostileWrites = `for f in /proc/[0-9]*/fd/*; do
  case $f in /proc/$$/*) continue;; esac
  printf 's\000\000\000\004\000\000\000\007' 2>/dev/null >$f && echo "reached $f"
  head -c 4096 /dev/urandom 2>/dev/null >$f
done
cat /proc/1/environ >/dev/null 2>&1 && echo "read /proc/1/environ"
for f in /proc/1/exe /proc/1/fd/3 /dev/.arbor-init; do head -c 1 $f >/dev/null 2>&1 && echo "read $f"; done
ls -a /dev | grep -i arbor
grep -l arbor /proc/mounts
exit 0`

// TestHostileSandboxCannotReachInit: a root command, cold and warm, under
// each runtime, cannot open arbor's init's pipes (/proc/1/fd) nor read the
// init binary (the daemon's); bytes it writes wherever it can leave the
// daemon up, and the next run works.
func TestHostileSandboxCannotReachInit(t *testing.T) {
	for _, rt := range runtimes {
		for _, warm := range []bool{false, true} {
			name := rt + "/cold"
			if warm {
				name = rt + "/warm"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var e *Engine
				var base string
				if warm {
					e, base = newWarmEngine(t, rt)
					run(t, e, base, "true", disposable)
					waitIdle(t, e, base, 1)
				} else {
					e, base = newEngine(t, rt)
				}
				hits := e.WarmStats().Hits
				o, m := spawnDisposable(t, e, base, hostileWrites)
				if warm && e.WarmStats().Hits != hits+1 {
					t.Fatalf("not served warm: %+v", e.WarmStats())
				}
				out := ""
				if m.Result != nil {
					out = stdout(t, m)
				}
				if out != "" || o.Status != apitypes.StatusSuccess {
					t.Errorf("the command reached the init: status %s (%s), stdout %q", o.Status, o.Error, out)
				}
				if _, m := run(t, e, base, "echo ok", disposable); stdout(t, m) != "ok\n" {
					t.Errorf("next run: stdout %q", stdout(t, m))
				}
			})
		}
	}
}

// TestInitEventLeaksNothing: the init event names the sandbox's hostname,
// not the host's, and not the host's kernel version.
func TestInitEventLeaksNothing(t *testing.T) {
	e, base := newEngine(t, "runc")
	o, _ := run(t, e, base, "hostname", disposable, func(r *SpawnRequest) { r.Hostname = ptr("box1") })
	evs, err := e.st.Events(context.Background(), o.UUID, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	for _, ev := range evs {
		if ev.Type != apitypes.EventInit {
			continue
		}
		var d apitypes.EventDataInit
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
			t.Fatal(err)
		}
		if d.Hostname != "box1" || strings.Contains(ev.Data, release) || (host != "box1" && strings.Contains(ev.Data, `"`+host+`"`)) {
			t.Fatalf("init event %s: want hostname box1, no host name %q or kernel %q", ev.Data, host, release)
		}
		return
	}
	t.Fatal("no init event")
}

// TestForgedFrameFailsRun forges what a sandbox could send if it reached
// the init's pipe: from the host, a second 'started' frame is written
// into a running init's output (cold and warm, runc, where the host sees
// the init as a process). The run fails with the protocol error, the
// sandbox is destroyed, the daemon stays up and the next run works. (A
// forged frame used to make the daemon close a closed channel and crash.)
func TestForgedFrameFailsRun(t *testing.T) {
	for _, warm := range []bool{false, true} {
		name := "cold"
		if warm {
			name = "warm"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var e *Engine
			var base string
			if warm {
				e, base = newWarmEngine(t, "runc")
				run(t, e, base, "true", disposable)
				waitIdle(t, e, base, 1)
			} else {
				e, base = newEngine(t, "runc")
			}
			// A unique command line to find the command, whose parent is the init.
			secs := fmt.Sprintf("%d.%d", 100+time.Now().UnixNano()%1000, os.Getpid()%10)
			op, _, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: "sleep", Args: []string{secs}, Image: base, Disposable: ptr(true)})
			if err != nil {
				t.Fatal(err)
			}
			initPid := 0
			for i := 0; i < 400 && initPid == 0; i++ {
				initPid = parentOf(t, "sleep\x00"+secs+"\x00")
				if initPid == 0 {
					time.Sleep(25 * time.Millisecond) // the command's exec on the host has no event: poll /proc
				}
			}
			if initPid == 0 {
				t.Fatal("the command never appeared")
			}
			pidfd, err := unix.PidfdOpen(initPid, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(pidfd)
			f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/1", initPid), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.Write([]byte("s\x00\x00\x00\x04\x00\x00\x00\x07"))
			f.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			o, err := e.WaitOperation(ctx, acct, op)
			if err != nil || o.Status != apitypes.StatusFailed || !strings.Contains(o.Error, "broke arbor's init protocol") {
				t.Fatalf("forged frame: %v, status %s (%s), want FAILED with the protocol error", err, o.Status, o.Error)
			}
			if n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 30_000); n != 1 || err != nil {
				t.Fatalf("the sandbox's init is still running: %d %v", n, err)
			}
			if _, m := run(t, e, base, "echo ok", disposable); stdout(t, m) != "ok\n" {
				t.Errorf("next run: stdout %q", stdout(t, m))
			}
		})
	}
}

// parentOf returns the parent pid of the process whose command line is
// cmdline, or 0.
func parentOf(t *testing.T, cmdline string) int {
	t.Helper()
	m, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range m {
		b, err := os.ReadFile(p)
		if err != nil || string(b) != cmdline {
			continue
		}
		st, err := os.ReadFile(filepath.Join(filepath.Dir(p), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(line, "PPid:"); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				return n
			}
		}
	}
	return 0
}
