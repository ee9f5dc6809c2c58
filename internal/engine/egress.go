package engine

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/arborsh/arbor/internal/egress"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/netns"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/runtime"
)

// Egress is a networked run's egress policy (see package egress): Allow
// and Deny entries are domain names ("pypi.org", "*.pythonhosted.org"),
// CIDRs or addresses, and ports ("443", "tcp:443", "udp:8000-8100").
type Egress struct {
	Allow []string
	Deny  []string
}

// egressDefaults are the daemon's default policies (Config.EgressAllow,
// EgressDeny): one for every account, and per-account ones replacing it.
type egressDefaults struct {
	all       egress.Policy
	accounts  map[string]egress.Policy
	upstream  string
	upstreamE error // why no upstream resolver was found
}

// parseEgressDefaults reads the daemon's default lists: an entry
// "ACCOUNT=ENTRY" belongs to that account's policy, any other to everyone's.
func parseEgressDefaults(allow, deny []string, upstream string) (egressDefaults, error) {
	d := egressDefaults{accounts: map[string]egress.Policy{}}
	for _, side := range []struct {
		flag    string
		entries []string
		add     func(*egress.Policy, string)
	}{
		{"--egress-allow", allow, func(p *egress.Policy, e string) { p.Allow = append(p.Allow, e) }},
		{"--egress-deny", deny, func(p *egress.Policy, e string) { p.Deny = append(p.Deny, e) }},
	} {
		for _, e := range side.entries {
			if acct, entry, ok := strings.Cut(e, "="); ok {
				p := d.accounts[acct]
				side.add(&p, entry)
				d.accounts[acct] = p
			} else {
				side.add(&d.all, e)
			}
		}
	}
	for _, p := range append([]egress.Policy{d.all}, mapValues(d.accounts)...) {
		if _, err := egress.Parse(p); err != nil {
			return d, fmt.Errorf("%w: fix --egress-allow/--egress-deny", err)
		}
	}
	if upstream == "" {
		upstream, d.upstreamE = hostResolver("/etc/resolv.conf")
	} else if _, _, err := net.SplitHostPort(upstream); err != nil {
		upstream = net.JoinHostPort(upstream, "53")
	}
	d.upstream = upstream
	return d, nil
}

func mapValues[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// hostResolver returns the first nameserver of the host's resolv.conf.
func hostResolver(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("no upstream resolver for egress policies: %v; set arbor serve --egress-dns", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 2 && fs[0] == "nameserver" {
			return net.JoinHostPort(fs[1], "53"), nil
		}
	}
	return "", fmt.Errorf("no nameserver in %s for egress policies; set arbor serve --egress-dns", path)
}

// planEgress checks a run's policy and echoes the one in force. The
// account's default policy (else the daemon's) is a ceiling: a run's own
// may narrow it, never widen it (egress.Within), and a run giving none
// gets it. A run without networking has none.
func (e *Engine) planEgress(p *runPlan, m *oplog.InstanceMetadata, n *Networking) error {
	ceiling, whose := e.egressDef.all, "the daemon's"
	if ap, ok := e.egressDef.accounts[p.account]; ok {
		ceiling, whose = ap, "account "+p.account+"'s"
	}
	pol := ceiling
	if n != nil && n.Egress != nil {
		if !p.network {
			return errdefs.InvalidArgument("networking.egress needs networking.enabled: true")
		}
		own := egress.Policy{Allow: n.Egress.Allow, Deny: n.Egress.Deny}
		if _, err := egress.Parse(own); err != nil {
			return errdefs.InvalidArgument("networking.%v", err)
		}
		var err error
		if pol, err = egress.Within(own, ceiling); err != nil {
			return errdefs.Forbidden("networking.%v: it would widen %s egress policy (allow %q, deny %q), which a run may only narrow; "+
				"ask within it, or have the operator change it (arbor serve --egress-allow/--egress-deny)", err, whose, ceiling.Allow, ceiling.Deny)
		}
	}
	if !p.network || pol.Empty() {
		return nil
	}
	rules, err := egress.Parse(pol)
	if err != nil {
		return errdefs.InvalidArgument("networking.%v", err)
	}
	if e.egressDef.upstream == "" {
		return errdefs.Unavailable("%v", e.egressDef.upstreamE)
	}
	p.egress = rules
	m.Networking.Egress = &oplog.EgressEcho{Allow: nonNil(pol.Allow), Deny: nonNil(pol.Deny)}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// startEgress enforces p's policy on its network n (cold, or a warm
// sandbox's taken now: the rules and resolver live on the host side, so a
// sandbox booted before the policy was known gets it before its command
// runs). The policy then stays on n until the next run on n replaces it or
// n is released: what a run leaves behind (killed after its exit is
// reported) never finds the network open. While the run runs, what is
// blocked is reported as it happens (watchEgress); the returned report
// ends that and emits the run's totals as a final egress_denied event; it
// may be called more than once.
func (e *Engine) startEgress(ctx context.Context, p *runPlan, n *netns.Net) (func(), error) {
	e.dropEgress(n)
	if p.egress == nil {
		return func() {}, nil
	}
	g, err := egress.Start(ctx, egress.Config{
		Table: strings.ReplaceAll(n.Name, "-", "_"), HostIf: n.HostIf, Gateway: n.Gateway, Sandbox: n.IP,
		Upstream: e.egressDef.upstream, Rules: p.egress, Log: e.log,
	})
	if err != nil {
		return nil, err
	}
	e.egressMu.Lock()
	e.egressOn[n.Name] = g
	e.egressMu.Unlock()
	stopLive := e.watchEgress(ctx, p.op, g)
	var once sync.Once
	return func() {
		once.Do(func() {
			stopLive()
			r, err := g.Report(context.WithoutCancel(ctx))
			if err != nil {
				e.log.Warn("egress report", "operation", p.op, "err", err)
			}
			if r.Empty() {
				return
			}
			d := oplog.EventDataEgressDenied{RefusedNames: r.RefusedNames, RefusedQueries: r.RefusedQueries, DroppedPackets: r.DroppedPackets}
			for _, x := range r.Dropped {
				d.Dropped = append(d.Dropped, oplog.EgressDestination{Addr: x.Addr, Proto: x.Proto, Port: x.Port})
			}
			e.events.emit(ctx, p.op, 0, oplog.EventEgressDenied, d)
		})
	}, nil
}

// dropEgress removes the policy left on n by its last run, if any.
func (e *Engine) dropEgress(n *netns.Net) {
	e.egressMu.Lock()
	g := e.egressOn[n.Name]
	delete(e.egressOn, n.Name)
	e.egressMu.Unlock()
	if g != nil {
		if _, err := g.Close(context.Background()); err != nil {
			e.log.Warn("remove egress policy", "network", n.Name, "err", err)
		}
	}
}

// egressTablePrefix names this daemon's per-run tables (see startEgress),
// removed at start after a crash.
func egressTablePrefix(tag string) string { return "arbor_" + tag + "_" }

// createNet makes a sandbox network; under a user namespace (ids: runc,
// crun) one that namespace owns, so that execs into the sandbox (its
// subprocesses, a preview's relay) may join it (see netns.CreateOwned).
func (e *Engine) createNet(ctx context.Context, ids *runtime.IDMap) (*netns.Net, error) {
	if ids == nil {
		return e.nets.Create(ctx)
	}
	return e.nets.CreateOwned(ctx, &netns.Owner{HostID: ids.HostID, Size: ids.Size})
}
