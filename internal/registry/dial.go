package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
)

// A registry reference is chosen by the client, and the daemon that follows
// it runs as root next to services that trust loopback and the LAN. So
// imports reach public addresses only, unless the operator lists others in
// Options.AllowRegistries, and the address is checked when the connection
// is made (after name resolution, on the address actually dialled), so a
// name that resolves to a public address when checked and to 127.0.0.1 when
// dialled (DNS rebinding) does not get round it.

// dialPolicy decides which addresses registry connections may go to.
type dialPolicy struct {
	prefixes []netip.Prefix
	names    map[string]bool // host or host:port, lower case
}

// newDialPolicy parses Options.AllowRegistries: CIDR ranges
// ("10.0.0.0/8"), addresses ("127.0.0.1", "::1") and registry names, with
// or without a port ("localhost", "registry.lan:5000").
func newDialPolicy(allow []string) (*dialPolicy, error) {
	p := &dialPolicy{names: map[string]bool{}}
	for _, a := range allow {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if pfx, err := netip.ParsePrefix(a); err == nil {
			p.prefixes = append(p.prefixes, pfx.Masked())
			continue
		}
		if ip, err := netip.ParseAddr(strings.Trim(a, "[]")); err == nil {
			p.prefixes = append(p.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			continue
		}
		host := a
		if h, _, err := net.SplitHostPort(a); err == nil {
			host = h
		}
		if host == "" || strings.ContainsAny(a, "/ ") {
			return nil, fmt.Errorf("registry: allowed registry %q is not a CIDR range, an address or a HOST[:PORT] name", a)
		}
		p.names[strings.ToLower(a)] = true
	}
	return p, nil
}

// nonPublic are the ranges that are not public unicast addresses beyond
// what netip's predicates cover: shared address space (CGNAT), IETF
// protocol assignments, benchmarking, documentation, reserved, and the
// IPv6 translation, documentation and discard prefixes.
var nonPublic = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "240.0.0.0/4", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001:db8::/32", "2002::/16", "::/96", "fec0::/10",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// isPublic reports whether ip is a public unicast address.
func isPublic(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsGlobalUnicast() || ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

func (p *dialPolicy) allowedName(hostport string) bool {
	hostport = strings.ToLower(hostport)
	if p.names[hostport] {
		return true
	}
	host, _, err := net.SplitHostPort(hostport)
	return err == nil && p.names[host]
}

func (p *dialPolicy) allowedAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if isPublic(ip) {
		return true
	}
	for _, pfx := range p.prefixes {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// errAddrNotAllowed is a connection the policy refused before it was made.
type errAddrNotAllowed struct {
	host string
	ip   netip.Addr
}

func (e *errAddrNotAllowed) Error() string {
	what := "address " + e.ip.String() + " is not public"
	if h, err := netip.ParseAddr(e.host); err != nil || h.Unmap() != e.ip {
		what = "host " + e.host + " resolves to " + e.ip.String() + ", which is not public"
	}
	return fmt.Sprintf("registry %s: this server reaches registries on loopback, private and other non-public addresses only when its operator allows them (arbor serve --allow-registry)", what)
}

func (e *errAddrNotAllowed) Unwrap() error { return errdefs.ErrForbidden }

// dialContext returns a DialContext for http.Transport that dials through d
// and refuses, at connect time, addresses the policy does not allow.
func (p *dialPolicy) dialContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if p.allowedName(addr) {
			return d.DialContext(ctx, network, addr)
		}
		host, _, _ := net.SplitHostPort(addr)
		checked := *d
		checked.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			if !p.allowedAddr(ap.Addr()) {
				return &errAddrNotAllowed{host: host, ip: ap.Addr().Unmap()}
			}
			return nil
		}
		conn, err := checked.DialContext(ctx, network, addr)
		var na *errAddrNotAllowed
		if errors.As(err, &na) {
			return nil, na // the dialer's other attempts say nothing more
		}
		return conn, err
	}
}

// newDialer is the dialer registry connections use.
func newDialer() *net.Dialer {
	return &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
}
