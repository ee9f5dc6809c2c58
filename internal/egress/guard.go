package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Config places one run's policy.
type Config struct {
	Table    string // nftables table name, unique to the run's network
	HostIf   string // host end of the sandbox's veth
	Gateway  string // its address: the resolver listens there
	Sandbox  string // the sandbox's address: the only one answered
	Upstream string // the resolver the allowed queries go to, host:port
	Rules    *Rules
	Log      *slog.Logger
}

// Guard enforces a policy on one sandbox network until Close.
type Guard struct {
	cfg      Config
	udp      *dns.Server
	tcp      *dns.Server
	client   *dns.Client
	mu       sync.Mutex
	refused  map[string]bool // names refused (up to maxRefusedNames)
	nRefused int             // queries refused
	// admitMu serialises admits (each forks nft); admitted holds when
	// each address's set entry expires, so repeated answers renew an
	// entry only once half of it has run out, not on every query.
	admitMu  sync.Mutex
	admitted map[netip.Addr]time.Time
}

// maxRefusedNames bounds the names a report lists.
const maxRefusedNames = 100

// Start installs cfg's rules and starts its resolver. The sandbox may run
// before or after: rules and resolver sit on the host side of its network.
func Start(ctx context.Context, cfg Config) (*Guard, error) {
	gw, err := netip.ParseAddr(cfg.Gateway)
	if err != nil {
		return nil, fmt.Errorf("egress: gateway %q: %v", cfg.Gateway, err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	g := &Guard{cfg: cfg, refused: map[string]bool{}, admitted: map[netip.Addr]time.Time{}, client: &dns.Client{Timeout: 5 * time.Second}}
	// Ports of arbor's choosing: port 53 on the host may be a local resolver's.
	pc, err := net.ListenPacket("udp4", net.JoinHostPort(gw.String(), "0"))
	if err != nil {
		return nil, fmt.Errorf("egress resolver: %w", err)
	}
	ln, err := net.Listen("tcp4", net.JoinHostPort(gw.String(), "0"))
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("egress resolver: %w", err)
	}
	udpAddr := netip.AddrPortFrom(gw, uint16(pc.LocalAddr().(*net.UDPAddr).Port))
	tcpPort := uint16(ln.Addr().(*net.TCPAddr).Port)
	g.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(g.serve)}
	g.tcp = &dns.Server{Listener: ln, Handler: dns.HandlerFunc(g.serve)}
	started := make(chan struct{}, 2)
	for _, s := range []*dns.Server{g.udp, g.tcp} {
		s.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() {
			if err := s.ActivateAndServe(); err != nil {
				cfg.Log.Warn("egress resolver stopped", "table", cfg.Table, "err", err)
			}
		}()
	}
	for range 2 {
		<-started
	}
	if err := nft(ctx, tableRules(cfg.Table, cfg.HostIf, udpAddr, tcpPort, cfg.Rules)); err != nil {
		g.stopServers()
		return nil, fmt.Errorf("egress rules (is nftables installed? run scripts/setup.sh): %w", err)
	}
	// After the rules: whatever the address did before now meets them.
	if err := forgetConnections(cfg.Sandbox); err != nil {
		g.stopServers()
		_ = deleteTable(cfg.Table)
		return nil, err
	}
	return g, nil
}

func (g *Guard) stopServers() {
	_ = g.udp.Shutdown()
	_ = g.tcp.Shutdown()
}

// serve answers one query from the sandbox: refused names get NXDOMAIN;
// allowed ones go upstream, and the IPv4 addresses in the answer are
// admitted for their TTL before the sandbox sees them.
func (g *Guard) serve(w dns.ResponseWriter, req *dns.Msg) {
	defer w.Close()
	// The listener is on a host address: answer the sandbox only.
	if host, _, err := net.SplitHostPort(w.RemoteAddr().String()); err != nil || host != g.cfg.Sandbox {
		return
	}
	reply := func(m *dns.Msg) { _ = w.WriteMsg(m) }
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		reply(m)
		return
	}
	name := strings.TrimSuffix(strings.ToLower(req.Question[0].Name), ".")
	g.mu.Lock()
	allowed := g.cfg.Rules.NameAllowed(name)
	if !allowed {
		g.nRefused++
		if len(g.refused) < maxRefusedNames {
			g.refused[name] = true
		}
	}
	g.mu.Unlock()
	if !allowed {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNameError)
		m.RecursionAvailable = true
		reply(m)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := g.forward(ctx, req)
	if err != nil {
		g.cfg.Log.Warn("egress resolver upstream", "upstream", g.cfg.Upstream, "name", name, "err", err)
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		reply(m)
		return
	}
	var addrs []netip.Addr
	ttl := maxTTL
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
				addrs = append(addrs, ip)
				ttl = min(ttl, time.Duration(a.Hdr.Ttl)*time.Second)
			}
		}
	}
	if len(addrs) > 0 {
		if err := g.admit(ctx, addrs, ttl); err != nil {
			g.cfg.Log.Warn("egress admit", "table", g.cfg.Table, "name", name, "err", err)
			m := new(dns.Msg)
			m.SetRcode(req, dns.RcodeServerFailure)
			reply(m)
			return
		}
	}
	resp.Id = req.Id
	reply(resp)
}

// admit lets addrs through for ttl unless their entries already last for
// at least half of it.
func (g *Guard) admit(ctx context.Context, addrs []netip.Addr, ttl time.Duration) error {
	g.admitMu.Lock()
	defer g.admitMu.Unlock()
	ttl = min(max(ttl, minTTL), maxTTL)
	now := time.Now()
	if !slices.ContainsFunc(addrs, func(a netip.Addr) bool { return g.admitted[a].Before(now.Add(ttl / 2)) }) {
		return nil
	}
	// Addresses this guard never admitted are not in the set (its table
	// is the run's own): they are only added, which costs the kernel far
	// less than the delete a renewal needs (see admit).
	var seen []netip.Addr
	for _, a := range addrs {
		if _, ok := g.admitted[a]; ok {
			seen = append(seen, a)
		}
	}
	if err := admit(g.cfg.Table, addrs, seen, ttl); err != nil {
		return err
	}
	for _, a := range addrs {
		g.admitted[a] = now.Add(ttl)
	}
	return nil
}

// forward asks the upstream resolver, over TCP when the UDP answer was cut.
func (g *Guard) forward(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	resp, _, err := g.client.ExchangeContext(ctx, req, g.cfg.Upstream)
	if err == nil && resp.Truncated {
		tc := &dns.Client{Net: "tcp", Timeout: g.client.Timeout}
		resp, _, err = tc.ExchangeContext(ctx, req, g.cfg.Upstream)
	}
	return resp, err
}

// Report says what a policy blocked.
type Report struct {
	RefusedNames   []string  `json:"refused_names,omitempty"`   // names the resolver would not answer
	RefusedQueries int       `json:"refused_queries,omitempty"` // queries for them
	DroppedPackets int64     `json:"dropped_packets,omitempty"` // packets dropped by the rules
	Dropped        []Dropped `json:"dropped,omitempty"`         // their distinct TCP/UDP destinations
}

// Empty reports whether nothing was blocked.
func (r Report) Empty() bool { return r.RefusedQueries == 0 && r.DroppedPackets == 0 }

// Report returns what was blocked so far.
func (g *Guard) Report(ctx context.Context) (Report, error) {
	var r Report
	g.mu.Lock()
	for n := range g.refused {
		r.RefusedNames = append(r.RefusedNames, n)
	}
	r.RefusedQueries = g.nRefused
	g.mu.Unlock()
	sort.Strings(r.RefusedNames)
	var err error
	r.DroppedPackets, r.Dropped, err = readDenied(g.cfg.Table)
	sort.Slice(r.Dropped, func(i, j int) bool {
		a, b := r.Dropped[i], r.Dropped[j]
		return a.Addr+a.Proto < b.Addr+b.Proto || a.Addr+a.Proto == b.Addr+b.Proto && a.Port < b.Port
	})
	return r, err
}

// Close stops the resolver and removes the rules, returning what was
// blocked.
func (g *Guard) Close(ctx context.Context) (Report, error) {
	r, rerr := g.Report(ctx)
	g.stopServers()
	derr := deleteTable(g.cfg.Table)
	// Connections the policy redirected must not outlive it.
	cerr := forgetConnections(g.cfg.Sandbox)
	return r, errors.Join(rerr, derr, cerr)
}
