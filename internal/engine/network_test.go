package engine

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/testutil"
)

// serverNetns creates a network namespace playing an outside server at a
// documentation address (TEST-NET-2, routed nowhere beyond this host),
// which networked sandboxes may reach by default. It returns its address.
func serverNetns(t *testing.T) string {
	t.Helper()
	// Each server its own /30: tests run in parallel, and two namespaces on
	// one address (a random pick collided often with ten servers among 62
	// slots) route one test's probes into another's server. The counter
	// spreads this process's servers; serverIn's claim keeps other test
	// processes on the host (other packages, other checkouts) off them.
	start := int(serverSlot.Add(1))
	return serverIn(t, func(i int) (string, string) {
		r := 4 * ((start+i)%62 + 1)
		return fmt.Sprintf("198.51.100.%d", r+1), fmt.Sprintf("198.51.100.%d", r+2)
	})
}

// serverSlot numbers the servers of this test process (serverNetns).
var serverSlot atomic.Int32

// serverIn starts a server (serverAt) at the first address pair pick(0),
// pick(1), ... that no other server on this host holds.
func serverIn(t *testing.T, pick func(i int) (hostIP, srvIP string)) string {
	t.Helper()
	for i := range 64 {
		host, srv := pick(i)
		if srv, ok := tryServerAt(t, host, srv); ok {
			return srv
		}
	}
	t.Fatal("no free test server address on this host")
	return ""
}

// addrInUse reports whether a host interface has an address in p.
func addrInUse(p netip.Prefix) bool {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && p.Contains(ip.Unmap()) {
				return true
			}
		}
	}
	return false
}

// tryServerAt creates a network namespace joined to the host by its own
// veth pair (host end hostIP/30, namespace end srvIP/30), with busybox
// httpd serving hello.txt on port 18080, and returns srvIP once the host
// has fetched the file from it: a test that finds a sandbox cannot reach
// it knows the server was there. The host interface, named after hostIP,
// is the claim on the addresses (as for sandbox networks): ok is false
// when another server, maybe another test process's, holds them.
func tryServerAt(t *testing.T, hostIP, srvIP string) (string, bool) {
	t.Helper()
	testutil.RequiresRoot(t) // it makes network namespaces
	a := netip.MustParseAddr(hostIP).As4()
	id := hex.EncodeToString(a[:])
	ns, hostIf := "arbt-srv-"+id, "arbts"+id
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	if err := exec.Command("ip", "link", "add", hostIf, "type", "veth", "peer", "name", "arbtp"+id).Run(); err != nil {
		if _, lerr := net.InterfaceByName(hostIf); lerr == nil {
			return "", false
		}
		t.Fatalf("test server veth %s: %v", hostIf, err)
	}
	if addrInUse(netip.PrefixFrom(netip.MustParseAddr(hostIP), 30).Masked()) {
		// Held by a server that did not claim it by name (an older checkout's).
		exec.Command("ip", "link", "del", hostIf).Run()
		return "", false
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", ns).Run()
		exec.Command("ip", "link", "del", hostIf).Run()
	})
	sh("ip", "netns", "add", ns)
	sh("ip", "link", "set", "arbtp"+id, "netns", ns, "name", "eth0")
	sh("ip", "addr", "add", hostIP+"/30", "dev", hostIf)
	sh("ip", "link", "set", hostIf, "up")
	sh("ip", "-n", ns, "addr", "add", srvIP+"/30", "dev", "eth0")
	sh("ip", "-n", ns, "link", "set", "eth0", "up")
	sh("ip", "-n", ns, "link", "set", "lo", "up")
	sh("ip", "-n", ns, "route", "add", "default", "via", hostIP)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from outside\n"), 0o644)
	srv := exec.Command("ip", "netns", "exec", ns, "/bin/busybox", "httpd", "-f", "-p", "18080", "-h", dir)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	c := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := c.Get("http://" + srvIP + ":18080/hello.txt")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) == "hello from outside\n" {
				return srvIP, true
			}
			err = fmt.Errorf("got %q", b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("test server %s is not serving: %v", srvIP, err)
		}
		time.Sleep(20 * time.Millisecond) // httpd starting: nothing to wait on but the port
	}
}

func TestNetworking(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			e, base := newEngine(t, rt)
			srv := serverNetns(t)
			// busybox's wget segfaults resolving without NSS modules; nc takes IPs.
			fetch := "printf 'GET /hello.txt HTTP/1.0\\r\\n\\r\\n' | nc -w 5 " + srv + " 18080"
			net := func(r *SpawnRequest) {
				r.Networking = &Networking{Enabled: ptr(true)}
				r.Timeout = ptr(20.0)
			}

			// Outbound works with networking enabled...
			_, m := run(t, e, base, fetch, net, disposable)
			if got := stdout(t, m); !strings.HasSuffix(got, "\r\n\r\nhello from outside\n") {
				b, _ := m.Result.Stderr.Bytes()
				t.Fatalf("outbound fetch got %q (stderr %q), want the server's file", got, b)
			}
			// ...and not without it.
			_, m = run(t, e, base, fetch+"; echo done", disposable)
			if got := stdout(t, m); strings.Contains(got, "hello") {
				t.Fatalf("run without networking reached the server: %q", got)
			}
		})
	}
}

// TestNoInbound: a networked sandbox listening on a port cannot be reached
// from the host, and cannot reach a host service. Neither check can pass
// by accident: the host dials only once the sandbox has connected to its
// own listener, and the same run must reach the outside server.
func TestNoInbound(t *testing.T) {
	e, base := newEngine(t, "runc")
	srv := serverNetns(t)
	hostSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "host") })}
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	go hostSrv.Serve(ln)
	defer hostSrv.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	cmd := fmt.Sprintf(`nc -ll -p 9000 -e echo inside &
for i in $(seq 100); do nc -w 1 127.0.0.1 9000 2>/dev/null | grep -q inside && echo listening && break; sleep 0.05; done
printf 'GET /hello.txt HTTP/1.0\r\n\r\n' | nc -w 5 %s 18080 | grep -q 'hello from outside' && echo outbound-ok
printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 $(ip route | awk '/default/ {print $3}') %d | grep -q host && echo host-reached || echo host-blocked
read done`, srv, port)
	op, _, err := e.Spawn(context.Background(), acct, SpawnRequest{
		Command: cmd, Image: base, Shell: ptr(true), Disposable: ptr(true), Timeout: ptr(30.0),
		Stdin:      &Stdin{Close: ptr(false)},
		Networking: &Networking{Enabled: ptr(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var ip, out string
	dialled := false
	err = e.FollowEvents(context.Background(), acct, op, FollowOptions{After: -1, Follow: true}, func(ev Event) error {
		switch ev.Type {
		case apitypes.EventNetwork:
			var d apitypes.EventDataNetwork
			json.Unmarshal(ev.Data, &d)
			ip = strings.Split(d.Configured.IP4, "/")[0]
		case apitypes.EventStdout:
			var d apitypes.EventDataStream
			json.Unmarshal(ev.Data, &d)
			b, _ := apitypes.StreamRepr{Value: d.Value, Encoding: d.Encoding}.Bytes()
			out += string(b)
		}
		if !dialled && strings.Contains(out, "host-") {
			// The sandbox listens (it said so) and still runs (it reads stdin).
			dialled = true
			if ip == "" {
				t.Error("no network event with the sandbox address")
			} else if c, err := net.DialTimeout("tcp", ip+":9000", 2*time.Second); err == nil {
				c.Close()
				t.Errorf("host connected into the sandbox at %s:9000", ip)
			}
			return e.WriteStdin(context.Background(), acct, op, 1, Stdin{Value: "\n", Close: ptr(true)})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"listening", "outbound-ok", "host-blocked"} {
		if !strings.Contains(out, want) {
			t.Errorf("sandbox printed %q, want %s", out, want)
		}
	}
	if !dialled {
		t.Error("the host never dialled the sandbox")
	}
}

// TestWarmNetworking: networked runs are served by warm sandboxes that
// joined their own outbound-only namespace at boot; runs without
// networking never get one of them.
func TestWarmNetworking(t *testing.T) {
	e, base := newWarmEngine(t, "runsc")
	srv := serverNetns(t)
	fetch := "printf 'GET /hello.txt HTTP/1.0\\r\\n\\r\\n' | nc -w 5 " + srv + " 18080"
	netOn := func(r *SpawnRequest) {
		r.Networking = &Networking{Enabled: ptr(true)}
		r.Timeout = ptr(20.0)
	}
	waitNet := func(network bool) {
		t.Helper()
		// A bound on hangs: a boot took over 30 s at load 45 (CI beside two benchmarks).
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if err := e.warm.WaitIdle(ctx, func(k warmKey) bool { return k.image == base && k.network == network }, 1); err != nil {
			t.Fatalf("no idle sandbox with network=%v: %+v: %v", network, e.WarmStats(), err)
		}
	}
	run(t, e, base, "true", netOn, disposable) // cold; asks for a networked sandbox
	waitNet(true)
	_, m := run(t, e, base, fetch, netOn, disposable)
	if e.WarmStats().Hits != 1 {
		t.Fatalf("networked run not served warm: %+v", e.WarmStats())
	}
	if got := stdout(t, m); !strings.HasSuffix(got, "\r\n\r\nhello from outside\n") {
		b, _ := m.Result.Stderr.Bytes()
		t.Fatalf("warm outbound fetch got %q (stderr %q)", got, b)
	}
	run(t, e, base, "true", disposable) // cold; asks for a plain sandbox
	waitNet(false)
	waitNet(true)
	_, m = run(t, e, base, fetch+"; echo done", disposable)
	if e.WarmStats().Hits != 2 {
		t.Fatalf("run not served warm: %+v", e.WarmStats())
	}
	if got := stdout(t, m); strings.Contains(got, "hello") {
		t.Fatalf("a warm run without networking reached the server: %q", got)
	}
}

// TestEgressDenied: by default a networked sandbox reaches a public-style
// address but not link-local (cloud metadata), RFC 1918 or CGNAT ranges,
// each served by a namespace of this test that the host itself can fetch
// from; the daemon's allow list opens exactly the ranges it names.
func TestEgressDenied(t *testing.T) {
	n := rand.IntN(200) + 20
	in := func(prefix string) string {
		return serverIn(t, func(i int) (string, string) {
			m := (n+i)%200 + 20
			return fmt.Sprintf("%s.%d.1", prefix, m), fmt.Sprintf("%s.%d.2", prefix, m)
		})
	}
	targets := map[string]string{
		"link-local": in("169.254"),
		"10/8":       in("10.89"),
		"172.16/12":  in("172.29"),
		"192.168/16": in("192.168"),
		"CGNAT":      in("100.64"),
		"public":     serverNetns(t),
	}
	probe := ""
	for _, ip := range targets {
		probe += fmt.Sprintf("(printf 'GET /hello.txt HTTP/1.0\\r\\n\\r\\n' | nc -w 3 %s 18080 | grep -q 'hello from outside' && echo %s reached || echo %s blocked) & ", ip, ip, ip)
	}
	probe += "wait"
	reach := func(t *testing.T, e *Engine, base string) map[string]bool {
		t.Helper()
		_, m := run(t, e, base, probe, disposable, func(r *SpawnRequest) {
			r.Networking = &Networking{Enabled: ptr(true)}
			r.Timeout = ptr(30.0)
		})
		got := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(stdout(t, m)), "\n") {
			if f := strings.Fields(line); len(f) == 2 {
				got[f[0]] = f[1] == "reached"
			}
		}
		if len(got) != len(targets) {
			t.Fatalf("probe printed %q, want a line per target", stdout(t, m))
		}
		return got
	}
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newEngine(t, rt)
			got := reach(t, e, base)
			for name, ip := range targets {
				if want := name == "public"; got[ip] != want {
					t.Errorf("default rules: %s (%s) reached=%v, want %v", name, ip, got[ip], want)
				}
			}
			// Allowed by the operator: each range given, in both forms.
			home := testutil.Home(t)
			allow := []string{targets["link-local"], "10.89.0.0/16", "172.29.0.0/16", "192.168.0.0/16", "100.64.0.0/10"}
			ea, err := New(context.Background(), Config{Home: home, Runtime: rt, NetAllow: allow})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ea.Close() })
			got = reach(t, ea, busybox(t, ea))
			for name, ip := range targets {
				if !got[ip] {
					t.Errorf("allowed %s (%s) not reached", name, ip)
				}
			}
		})
	}
}

func TestNetAllowInvalid(t *testing.T) {
	_, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: "runc", NetAllow: []string{"10.0.0.0/33"}})
	if err == nil || !strings.Contains(err.Error(), "--net-allow") || !strings.Contains(err.Error(), "10.0.0.0/33") {
		t.Fatalf("New with a bad allow range: %v, want an error naming it and the flag", err)
	}
}
