package egress

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os/exec"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"

	"github.com/arborsh/arbor/internal/testutil"
)

// BenchmarkGuard times what a policy adds to a run (BENCHMARKS.md section
// 12): starting and closing a guard (resolver listeners and the run's
// table), a query for an allowed name whose answer brings a new address
// (upstream on loopback, the address admitted to the set), a refused
// query, admitting a new address alone and renewing one, and reading
// what was blocked.
//
//	go test -run '^$' -bench Guard -benchtime 200x ./internal/egress/
func BenchmarkGuard(b *testing.B) {
	testutil.RequiresRoot(b)
	var n atomic.Uint32
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, 0xc6336400+n.Add(1)%(1<<24)) // a new address each time, from 198.51.100.0 up
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: ip})
		_ = w.WriteMsg(m)
	})}
	go func() { _ = up.ActivateAndServe() }()
	defer func() { _ = up.Shutdown() }()
	rules, _ := Parse(Policy{Allow: []string{"*.allowed.test"}})
	table := "arbor_test_bench"
	defer exec.Command("nft", "delete", "table", "inet", table).Run()
	cfg := Config{Table: table, HostIf: "arbhtestb", Gateway: "127.0.0.1", Sandbox: "127.0.0.3", Upstream: pc.LocalAddr().String(), Rules: rules}
	ctx := context.Background()
	b.Run("start+close", func(b *testing.B) {
		for range b.N {
			g, err := Start(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := g.Close(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	g, err := Start(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close(ctx)
	// The "sandbox" asks from 127.0.0.3, whose connections the guard forgets.
	c := &dns.Client{Net: "udp", Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3)}}}
	target := g.udp.PacketConn.LocalAddr().String()
	query := func(b *testing.B, name string, rcode int) {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		r, _, err := c.Exchange(q, target)
		if err != nil || r.Rcode != rcode {
			b.Fatalf("%s: %v %v", name, r, err)
		}
	}
	b.Run("allowed-new-address", func(b *testing.B) {
		for range b.N {
			query(b, "www.allowed.test.", dns.RcodeSuccess)
		}
	})
	b.Run("refused", func(b *testing.B) {
		for range b.N {
			query(b, "other.test.", dns.RcodeNameError)
		}
	})
	b.Run("admit-new", func(b *testing.B) {
		for i := range b.N {
			a := netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
			if err := admit(table, []netip.Addr{a}, nil, 300e9); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("admit-renew", func(b *testing.B) {
		a := []netip.Addr{netip.AddrFrom4([4]byte{203, 0, 0, 1})}
		for range b.N {
			if err := admit(table, a, a, 300e9); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("report", func(b *testing.B) {
		for range b.N {
			if _, err := g.Report(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
