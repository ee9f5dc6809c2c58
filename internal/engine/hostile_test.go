package engine

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/store"
)

// spawnWait runs a shell command and returns its operation whatever its
// status.
func spawnWait(t testing.TB, e *Engine, image, cmd string) (store.Operation, apitypes.InstanceMetadata) {
	t.Helper()
	sh, disp := true, true
	op, _, err := e.Spawn(context.Background(), acct, apitypes.InstanceSpawnRequest{Command: cmd, Image: image, Shell: &sh, Disposable: &disp})
	if err != nil {
		t.Fatalf("Spawn(%q): %v", cmd, err)
	}
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
				o, m := spawnWait(t, e, base, hostileWrites)
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
	o, _ := run(t, e, base, "hostname", disposable, func(r *apitypes.InstanceSpawnRequest) { r.Hostname = ptr("box1") })
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
