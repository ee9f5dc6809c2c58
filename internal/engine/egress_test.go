package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/netns"
	"github.com/arborsh/arbor/internal/testutil"
)

// dnsServer answers A queries for the names in zone from pc until the
// test ends; other names get NXDOMAIN.
func dnsServer(t *testing.T, pc net.PacketConn, zone map[string]string) {
	t.Helper()
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) }, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		if ip, ok := zone[strings.TrimSuffix(q.Name, ".")]; ok {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)})
			}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
}

// listenUDPIn opens a UDP socket in the network namespace that owns ip
// (one of serverAt's): a socket stays in the namespace it was made in.
func listenUDPIn(t *testing.T, ip string, port int) net.PacketConn {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	ns := ""
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "arbt-srv-") {
			if a, _ := exec.Command("ip", "-n", f[0], "-4", "addr").Output(); strings.Contains(string(a), " "+ip+"/") {
				ns = f[0]
			}
		}
	}
	if ns == "" {
		t.Fatalf("no test namespace holds %s", ip)
	}
	type result struct {
		pc  net.PacketConn
		err error
	}
	ch := make(chan result)
	go func() {
		// The thread ends with the goroutine (still locked), so no other
		// goroutine runs in the server's namespace.
		goruntime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		pc, err := net.ListenPacket("udp4", fmt.Sprintf("%s:%d", ip, port))
		ch <- result{pc, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.pc
}

// egressFixture is the outside world of the egress tests: "allowed.test"
// and "other.test" served by namespaces at documentation addresses, the
// upstream resolver naming them (on the host's loopback), and a rogue
// resolver on allowed.test's own address that answers other.test.
type egressFixture struct {
	allowed, other, private string
	upstream                string
}

func newEgressFixture(t *testing.T) egressFixture {
	testutil.RequiresRoot(t)
	var f egressFixture
	f.allowed = serverNetns(t)
	for f.other = serverNetns(t); f.other == f.allowed; f.other = serverNetns(t) {
	}
	n := rand.IntN(200) + 20
	f.private = serverIn(t, func(i int) (string, string) {
		m := (n+i)%200 + 20
		return fmt.Sprintf("10.89.%d.1", m), fmt.Sprintf("10.89.%d.2", m)
	})
	zone := map[string]string{"allowed.test": f.allowed, "other.test": f.other, "private.test": f.private}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dnsServer(t, pc, zone)
	f.upstream = pc.LocalAddr().String()
	rogue := listenUDPIn(t, f.allowed, 53)
	dnsServer(t, rogue, zone)
	// The rogue resolver answers from the host: a sandbox that is not
	// let through could be.
	m := new(dns.Msg)
	m.SetQuestion("other.test.", dns.TypeA)
	if r, err := dns.Exchange(m, f.allowed+":53"); err != nil || len(r.Answer) != 1 {
		t.Fatalf("rogue resolver: %v %v", r, err)
	}
	return f
}

// egressRun runs cmd with the policy and returns its output and the
// egress_denied event's data (nil if none).
func egressRun(t *testing.T, e *Engine, base, cmd string, pol *Egress) (string, *apitypes.EventDataEgressDenied) {
	t.Helper()
	_, out, denied := egressStep(t, e, base, cmd, pol, disposable)
	return out, denied
}

// egressStep is egressRun with further options, returning the operation.
func egressStep(t *testing.T, e *Engine, base, cmd string, pol *Egress, opts ...runOpts) (Operation, string, *apitypes.EventDataEgressDenied) {
	t.Helper()
	op, m := run(t, e, base, cmd, append(opts, func(r *SpawnRequest) {
		r.Networking = &Networking{Enabled: ptr(true), Egress: pol}
		r.Timeout = ptr(60.0)
	})...)
	if pol != nil && (m.Networking.Egress == nil || !slices.Equal(m.Networking.Egress.Allow, pol.Allow)) {
		t.Errorf("metadata echoes egress %+v, want %+v", m.Networking.Egress, pol)
	}
	var denied *apitypes.EventDataEgressDenied
	var order []string
	err := e.FollowEvents(context.Background(), acct, op.UUID, FollowOptions{After: -1}, func(ev Event) error {
		order = append(order, ev.Type)
		if ev.Type == apitypes.EventEgressDenied {
			denied = new(apitypes.EventDataEgressDenied)
			return json.Unmarshal(ev.Data, denied)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.Index(order, apitypes.EventEgressDenied); i >= 0 && i > slices.Index(order, apitypes.EventExit) {
		t.Errorf("egress_denied after the exit event: %v", order)
	}
	t.Logf("%s\n%s\ndenied %+v", cmd, stdout(t, m), denied)
	return op, stdout(t, m), denied
}

// egressProbe prints "NAME reached" or "NAME blocked" for each HTTP target
// (an address, or a name looked up through /etc/resolv.conf's resolver:
// busybox's static nc cannot resolve names itself).
func egressProbe(targets ...string) string {
	s := "echo nameserver 192.0.2.53 > /etc/resolv.conf\n" // any address: DNS goes to arbor's resolver
	for _, tg := range targets {
		addr := tg
		if net.ParseIP(tg) == nil {
			addr = fmt.Sprintf("$(nslookup %s | awk '/^Name:/{n=1} n && /^Address/{print $2}')", tg)
		}
		s += fmt.Sprintf("a=%s; (printf 'GET /hello.txt HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \"$a\" 18080 | grep -q 'hello from outside' && echo %s reached || echo %s blocked)\n", addr, tg, tg)
	}
	return s
}

func reached(out, target string) bool { return strings.Contains(out, target+" reached\n") }

// TestEgressPolicy: with allow ["allowed.test"] a sandbox reaches
// allowed.test by name, and not other.test by name, by its address or
// through a resolver of its own choosing (one it may otherwise reach); the
// denials are reported. CIDR, port and deny rules; the daemon's default
// denial of private ranges holds whatever a policy allows.
func TestEgressPolicy(t *testing.T) {
	f := newEgressFixture(t)
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			e, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: rt, InitBinary: staticInit(t), WarmPerImage: -1, EgressDNS: f.upstream})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			base := busybox(t, e)

			cmd := egressProbe("allowed.test", "other.test", f.other) +
				"nslookup other.test " + f.allowed + " | grep -q " + f.other + " && echo rogue-resolved || echo rogue-refused\n"
			out, denied := egressRun(t, e, base, cmd, &Egress{Allow: []string{"allowed.test"}})
			if !reached(out, "allowed.test") || reached(out, "other.test") || reached(out, f.other) || !strings.Contains(out, "rogue-refused") {
				t.Errorf("allow [allowed.test]:\n%s", out)
			}
			if denied == nil || !slices.Contains(denied.RefusedNames, "other.test") || denied.DroppedPackets == 0 ||
				!slices.Contains(denied.Dropped, apitypes.EgressDestination{Addr: f.other, Proto: "tcp", Port: 18080}) {
				t.Errorf("egress_denied = %+v, want other.test refused and %s:18080 dropped", denied, f.other)
			}

			// CIDR: the other server's address, and nothing resolved.
			out, _ = egressRun(t, e, base, egressProbe(f.other, f.allowed), &Egress{Allow: []string{f.other + "/32"}})
			if !reached(out, f.other) || reached(out, f.allowed) {
				t.Errorf("allow [%s/32]:\n%s", f.other, out)
			}
			// Ports: allowed.test resolves, but only port 9 is open.
			out, denied = egressRun(t, e, base, egressProbe("allowed.test"), &Egress{Allow: []string{"allowed.test", "tcp:9"}})
			if reached(out, "allowed.test") || denied == nil || denied.DroppedPackets == 0 {
				t.Errorf("allow [allowed.test tcp:9]: %s, denied %+v", out, denied)
			}
			// Deny wins over allow; private ranges stay closed (no --net-allow).
			out, _ = egressRun(t, e, base, egressProbe(f.allowed, f.other, "private.test"),
				&Egress{Allow: []string{"198.51.100.0/24", "10.0.0.0/8", "private.test"}, Deny: []string{f.other}})
			if !reached(out, f.allowed) || reached(out, f.other) || reached(out, "private.test") {
				t.Errorf("allow [198.51.100.0/24 10/8 private.test] deny [%s]:\n%s", f.other, out)
			}
			// Without a policy, the same run reaches every public target.
			out, denied = egressRun(t, e, base, egressProbe(f.allowed, f.other), nil)
			if !reached(out, f.allowed) || !reached(out, f.other) || denied != nil {
				t.Errorf("no policy: %s, denied %+v", out, denied)
			}
			if tables := egressTables(t, e); len(tables) != 0 {
				t.Errorf("policy tables left after the runs: %v", tables)
			}
		})
	}
}

// TestEgressWarm: a warm sandbox, booted before any policy was known, gets
// the run's policy when the run takes it; the daemon's default policy
// applies to runs that give none; under runsc and runc.
func TestEgressWarm(t *testing.T) {
	f := newEgressFixture(t)
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) { testEgressWarm(t, f, rt) })
	}
}

func testEgressWarm(t *testing.T, f egressFixture, rt string) {
	e, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: rt, InitBinary: staticInit(t), WarmPerImage: 2,
		EgressDNS: f.upstream, EgressAllow: []string{"allowed.test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	base := busybox(t, e)
	run(t, e, base, "true", disposable, func(r *SpawnRequest) { r.Networking = &Networking{Enabled: ptr(true)} }) // cold; asks for a networked sandbox
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.warm.WaitIdle(ctx, func(k warmKey) bool { return k.image == base && k.network }, 1); err != nil {
		t.Fatalf("no idle networked sandbox: %v", err)
	}
	out, denied := egressRun(t, e, base, egressProbe("allowed.test", f.other), &Egress{Allow: []string{"allowed.test"}})
	if e.WarmStats().Hits != 1 {
		t.Fatalf("policy run not served warm: %+v", e.WarmStats())
	}
	if !reached(out, "allowed.test") || reached(out, f.other) || denied == nil {
		t.Errorf("warm run: %s, denied %+v", out, denied)
	}
	// The daemon default (allow allowed.test) for a run giving no policy.
	out, _ = egressRun(t, e, base, egressProbe("allowed.test", "other.test"), nil)
	if !reached(out, "allowed.test") || reached(out, "other.test") {
		t.Errorf("daemon default policy:\n%s", out)
	}
}

// TestEgressInvalid: a bad policy is refused with an error naming the
// entry (or the missing networking), at spawn and in the daemon's flags.
func TestEgressInvalid(t *testing.T) {
	e, base := newEngine(t, "runc")
	for _, tc := range []struct {
		n    *Networking
		want string
	}{
		{&Networking{Egress: &Egress{Allow: []string{"pypi.org"}}}, "networking.enabled"},
		{&Networking{Enabled: ptr(true), Egress: &Egress{Allow: []string{"pypi.org", "tcp:70000"}}}, "tcp:70000"},
		{&Networking{Enabled: ptr(true), Egress: &Egress{Deny: []string{"fd00::/8"}}}, "IPv4 only"},
	} {
		_, _, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: "true", Image: base, Networking: tc.n})
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("spawn with %+v: %v, want an invalid-argument error naming %q", tc.n.Egress, err, tc.want)
		}
	}
	_, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: "runc", EgressAllow: []string{"acct1=exa mple"}})
	if err == nil || !strings.Contains(err.Error(), "--egress-allow") || !strings.Contains(err.Error(), "exa mple") {
		t.Errorf("New with a bad --egress-allow: %v", err)
	}
}

// TestEgressDefaults: --egress-allow/--egress-deny entries with ACCOUNT=
// make that account's default; the others everyone's; the upstream
// resolver comes from resolv.conf unless given.
func TestEgressDefaults(t *testing.T) {
	d, err := parseEgressDefaults([]string{"pypi.org", "team=*.internal.test", "team=tcp:443"}, []string{"tcp:25"}, "192.0.2.53")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(d.all.Allow, " ") != "pypi.org" || strings.Join(d.all.Deny, " ") != "tcp:25" ||
		strings.Join(d.accounts["team"].Allow, " ") != "*.internal.test tcp:443" || len(d.accounts["team"].Deny) != 0 {
		t.Errorf("defaults = %+v", d)
	}
	if d.upstream != "192.0.2.53:53" {
		t.Errorf("upstream = %q, want the port added", d.upstream)
	}
	conf := t.TempDir() + "/resolv.conf"
	os.WriteFile(conf, []byte("# comment\nsearch x\nnameserver 192.0.2.1\nnameserver 192.0.2.2\n"), 0o644)
	if got, err := hostResolver(conf); err != nil || got != "192.0.2.1:53" {
		t.Errorf("hostResolver = %q, %v", got, err)
	}
	os.WriteFile(conf, []byte("search x\n"), 0o644)
	if _, err := hostResolver(conf); err == nil || !strings.Contains(err.Error(), "--egress-dns") {
		t.Errorf("hostResolver without a nameserver: %v, want an error naming --egress-dns", err)
	}
}

// TestEgressContinue: steps of an agent loop continue in one sandbox,
// each under its own policy (or none): a policy is the run's, not the
// sandbox's; under runsc and runc.
func TestEgressContinue(t *testing.T) {
	f := newEgressFixture(t)
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) { testEgressContinue(t, f, rt) })
	}
}

func testEgressContinue(t *testing.T, f egressFixture, rt string) {
	e, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: rt, InitBinary: staticInit(t), WarmPerImage: 2, EgressDNS: f.upstream})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	img := busybox(t, e)
	steps := []struct {
		pol           *Egress
		reach, refuse []string
	}{
		{&Egress{Allow: []string{"allowed.test"}}, []string{"allowed.test"}, []string{f.other}},
		{&Egress{Allow: []string{f.other}}, []string{f.other}, []string{"allowed.test", f.allowed}},
		{nil, []string{f.allowed, f.other}, nil},
	}
	for i, st := range steps {
		op, out, _ := egressStep(t, e, img, egressProbe(append(st.reach, st.refuse...)...), st.pol)
		for _, tg := range st.reach {
			if !reached(out, tg) {
				t.Errorf("step %d: %s not reached:\n%s", i, tg, out)
			}
		}
		for _, tg := range st.refuse {
			if reached(out, tg) {
				t.Errorf("step %d: %s reached:\n%s", i, tg, out)
			}
		}
		img = op.ResultImageUUID
		if n := continuedOn(e, img); n != 1 {
			t.Fatalf("step %d: %d continued sandboxes on its image, want 1", i, n)
		}
		// The step's policy stays on the idle sandbox (its leftovers are
		// killed after the exit is reported), until the next step's.
		if n := len(egressTables(t, e)); n != map[bool]int{true: 1, false: 0}[st.pol != nil] {
			t.Errorf("step %d: %d policy tables while its sandbox waits", i, n)
		}
	}
	if st := e.WarmStats(); st.Hits != 2 {
		t.Errorf("steps 2 and 3 not served by the sandbox they continue: %+v", st)
	}
}

// egressTables lists the nftables tables of e's run policies.
func egressTables(t *testing.T, e *Engine) []string {
	t.Helper()
	out, err := exec.Command("nft", "list", "tables", "inet").Output()
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && strings.HasPrefix(f[2], egressTablePrefix(netns.Tag(e.cfg.Home))) {
			tables = append(tables, f[2])
		}
	}
	return tables
}

// TestEgressFork: a live fork of an instance under an egress policy runs
// under the same policy on its own network: the copy reaches allowed.test
// and not other.test, and reports its own denials.
func TestEgressFork(t *testing.T) {
	f := newEgressFixture(t)
	e, base := newEgressEngine(t, f, nil)
	ctx := context.Background()
	probe := egressProbe("allowed.test", f.other)
	op, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: base, Shell: ptr(true), Stdin: &Stdin{Value: "a\n", Close: ptr(false)}, Disposable: ptr(true),
		Networking: &Networking{Enabled: ptr(true), Egress: &Egress{Allow: []string{"allowed.test"}}},
		Command:    "while read l; do\n" + probe + "echo \"$l done\"\ndone"})
	if err != nil {
		t.Fatal(err)
	}
	if out := waitStdout(t, e, op, "a done\n"); !reached(out, "allowed.test") || reached(out, f.other) {
		t.Fatalf("the original under allow [allowed.test]:\n%s", out)
	}
	res, err := e.Fork(ctx, acct, op, ForkRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cp := res.Operations[0]
	say(t, e, cp, "x", true)
	if out := waitStdout(t, e, cp, "x done\n"); !reached(out, "allowed.test") || reached(out, f.other) {
		t.Errorf("the copy under its original's allow [allowed.test]:\n%s", out)
	}
	waitOp(t, e, cp)
	var denied *apitypes.EventDataEgressDenied
	err = e.FollowEvents(ctx, acct, cp, FollowOptions{After: -1}, func(ev Event) error {
		if ev.Type == apitypes.EventEgressDenied {
			denied = new(apitypes.EventDataEgressDenied)
			return json.Unmarshal(ev.Data, denied)
		}
		return nil
	})
	if err != nil || denied == nil || denied.Live || !slices.Contains(denied.Dropped, apitypes.EgressDestination{Addr: f.other, Proto: "tcp", Port: 18080}) {
		t.Errorf("the copy's egress_denied = %+v (%v), want %s:18080 dropped", denied, err, f.other)
	}
	say(t, e, op, "", true)
	waitOp(t, e, op)
}
