package engine

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestRuncNetworkedExec: a runc sandbox with networking takes execs, a
// subprocess and a preview's relay, which run in its network namespace,
// cold, warm and continued. (runc joins the sandbox's user namespace
// first, so the network namespace must be one that namespace owns; a host
// one refused them: "setns into net namespace: operation not permitted".)
func TestRuncNetworkedExec(t *testing.T) {
	for _, mode := range []string{"cold", "warm", "continued"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var e *Engine
			var img string
			netOn := func(r *SpawnRequest) { r.Networking = &Networking{Enabled: ptr(true)} }
			switch mode {
			case "cold":
				e, img = newEngine(t, "runc")
			case "warm":
				e, img = newWarmEngine(t, "runc")
				run(t, e, img, "true", netOn, disposable) // warms a networked sandbox on demand
				waitIdle(t, e, img, 1)
			case "continued":
				e, img = newWarmEngine(t, "runc")
				o, _ := run(t, e, img, "echo step1 > /root/step", netOn)
				img = o.ResultImageUUID
				if n := continuedOn(e, img); n != 1 {
					t.Fatalf("%d continued sandboxes after a networked step, want 1", n)
				}
			}
			hits := e.WarmStats().Hits
			ctx := context.Background()
			op, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: img, Shell: ptr(true), Stdin: &Stdin{Close: ptr(false)}, Networking: &Networking{Enabled: ptr(true)},
				Command: "mkdir -p /www; echo " + mode + " > /www/index.html; httpd -p 127.0.0.1:8080 -h /www; echo up; cat"})
			if err != nil {
				t.Fatal(err)
			}
			waitStdout(t, e, op, "up")
			if mode != "cold" && e.WarmStats().Hits != hits+1 {
				t.Fatalf("instance not served by a %s sandbox: %+v", mode, e.WarmStats())
			}
			spid, err := e.Exec(ctx, acct, op, ExecRequest{Command: "ip -4 -o addr show eth0; ls /sys/class/net", Shell: ptr(true)})
			if err != nil {
				t.Fatalf("exec into a networked runc sandbox: %v", err)
			}
			r := waitSub(t, e, op, spid)
			out, _ := r.Stdout.Bytes()
			errOut, _ := r.Stderr.Bytes()
			if r.State.ExitCode != 0 || !strings.Contains(string(out), "inet 10.88.") || !strings.HasSuffix(string(out), "\neth0\nlo\n") {
				t.Errorf("subprocess: exit %d, stdout %q, stderr %q; want the sandbox's eth0 address and its interfaces in /sys", r.State.ExitCode, out, errOut)
			}
			if got := fetchPreview(t, e, op, 8080); got != "200 OK "+mode+"\n" {
				t.Errorf("preview of a networked runc sandbox: %q", got)
			}
			say(t, e, op, "", true)
			waitOp(t, e, op)
		})
	}
}

// TestNoSpoofedSources: root in a networked runc sandbox has raw sockets
// over its network (its user namespace owns it, as in a Docker container:
// ping works), but what it sends with another source address is dropped
// on the host; what it sends from its own address arrives.
func TestNoSpoofedSources(t *testing.T) {
	e, img := newEngine(t, "runc")
	srv := serverNetns(t)
	pc := listenUDPIn(t, srv, 19999)
	defer pc.Close()
	// The spoofed datagram goes first, on the same path: once the genuine
	// one has arrived, the spoofed one would have too.
	_, m := run(t, e, img, "me=$(ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1); "+
		"/probe udpfrom 203.0.113.99 "+srv+" 19999 spoofed; /probe udpfrom $me "+srv+" 19999 genuine",
		probe(t, e), func(r *SpawnRequest) { r.Networking = &Networking{Enabled: ptr(true)} })
	if out := stdout(t, m); out != "udpfrom: ok\nudpfrom: ok\n" {
		t.Fatalf("sandbox: %q, want both datagrams sent", out)
	}
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("the genuine datagram did not arrive: %v", err)
		}
		if string(buf[:n]) == "genuine" {
			return
		}
		t.Errorf("%q arrived from %v", buf[:n], from)
	}
}
