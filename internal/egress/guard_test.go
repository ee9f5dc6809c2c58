package egress

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/arborsh/arbor/internal/testutil"
)

// TestGuardResolver: over UDP and TCP the resolver forwards allowed names
// upstream and admits their addresses to the run's set before answering,
// refuses other names without asking upstream, and reports the refusals; Close removes the table.
func TestGuardResolver(t *testing.T) {
	testutil.RequiresRoot(t)
	asked := make(chan string, 16)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		asked <- r.Question[0].Name
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(198, 51, 100, 77)})
		w.WriteMsg(m)
	})}
	go up.ActivateAndServe()
	defer up.Shutdown()
	rules, _ := Parse(Policy{Allow: []string{"*.allowed.test"}})
	table := "arbor_test_guard"
	g, err := Start(context.Background(), Config{Table: table, HostIf: "arbhtestg", Gateway: "127.0.0.1", Sandbox: "127.0.0.2", Upstream: pc.LocalAddr().String(), Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	defer exec.Command("nft", "delete", "table", "inet", table).Run()
	for _, s := range []*dns.Server{g.udp, g.tcp} {
		// The "sandbox" asks from 127.0.0.2: the guard forgets its
		// connections, and this test's are the only ones from there.
		c := &dns.Client{Net: "udp", Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}}}
		network, target := "udp", ""
		if s.Listener != nil {
			network, target = "tcp", s.Listener.Addr().String()
			c = &dns.Client{Net: "tcp", Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}}
		} else {
			target = s.PacketConn.LocalAddr().String()
		}
		q := new(dns.Msg)
		q.SetQuestion("www.allowed.test.", dns.TypeA)
		r, _, err := c.Exchange(q, target)
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("%s: allowed name: %v %v", network, r, err)
		}
		if got := <-asked; got != "www.allowed.test." {
			t.Errorf("upstream asked %q", got)
		}
		q.SetQuestion("other.test.", dns.TypeA)
		if r, _, err = c.Exchange(q, target); err != nil || r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s: refused name: %v %v", network, r, err)
		}
	}
	select {
	case n := <-asked:
		t.Errorf("upstream asked for %q", n)
	default:
	}
	out, _ := exec.Command("nft", "list", "set", "inet", table, "dns4").CombinedOutput()
	if !strings.Contains(string(out), "198.51.100.77 timeout 30s") {
		t.Errorf("answered address not admitted (TTL 5 s raised to 30 s):\n%s", out)
	}
	// Answers again within half the entry's time do not run nft again (a
	// sandbox repeating a query must not fork nft on every answer): an
	// entry removed behind the guard's back stays gone until then.
	exec.Command("nft", "delete", "element", "inet", table, "dns4", "{ 198.51.100.77 }").Run()
	if err := g.admit(context.Background(), []netip.Addr{netip.MustParseAddr("198.51.100.77")}, time.Second); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("nft", "list", "set", "inet", table, "dns4").CombinedOutput(); strings.Contains(string(out), "198.51.100.77") {
		t.Errorf("a repeated answer ran nft again:\n%s", out)
	}
	if err := g.admit(context.Background(), []netip.Addr{netip.MustParseAddr("198.51.100.77")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("nft", "list", "set", "inet", table, "dns4").CombinedOutput(); !strings.Contains(string(out), "198.51.100.77 timeout 1h") {
		t.Errorf("an answer with a longer TTL did not renew the entry:\n%s", out)
	}
	rep, err := g.Close(context.Background())
	if err != nil || strings.Join(rep.RefusedNames, ",") != "other.test" || rep.RefusedQueries != 2 {
		t.Errorf("report = %+v, %v; want other.test refused twice", rep, err)
	}
	if exec.Command("nft", "list", "table", "inet", table).Run() == nil {
		t.Error("Close left the table")
	}
}
