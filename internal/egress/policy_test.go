package egress

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/testutil"
)

func TestParse(t *testing.T) {
	r, err := Parse(Policy{Allow: []string{"PyPI.org.", "*.pythonhosted.org", "203.0.113.0/24", "198.51.100.7", "tcp:443", "53", "udp:8000-8100"}, Deny: []string{"evil.pythonhosted.org", "203.0.113.9"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"pypi.org": true, "PYPI.ORG.": true, "www.pypi.org": false, "files.pythonhosted.org": true,
		"pythonhosted.org": false, "evil.pythonhosted.org": false, "a.evil.pythonhosted.org": true, "other.test": false,
	} {
		if got := r.NameAllowed(name); got != want {
			t.Errorf("NameAllowed(%q) = %v, want %v", name, got, want)
		}
	}
	if !r.Restricted() {
		t.Error("a policy allowing names is not restricted")
	}
	if want := []PortRange{{"tcp", 443, 443}, {"", 53, 53}, {"udp", 8000, 8100}}; len(r.allow.ports) != 3 || r.allow.ports[0] != want[0] || r.allow.ports[1] != want[1] || r.allow.ports[2] != want[2] {
		t.Errorf("ports = %v, want %v", r.allow.ports, want)
	}
	// Deny-only and port-only policies leave names and destinations open.
	r, _ = Parse(Policy{Allow: []string{"tcp:443"}, Deny: []string{"*.example.com"}})
	if r.Restricted() || !r.NameAllowed("pypi.org") || r.NameAllowed("a.example.com") {
		t.Errorf("port-only policy: restricted=%v pypi=%v a.example.com=%v", r.Restricted(), r.NameAllowed("pypi.org"), r.NameAllowed("a.example.com"))
	}
	for _, bad := range []string{"", "tcp:0", "tcp:99999", "udp:9-3", "exa mple.com", "-x.com", "fd00::/8", "10.0.0.0/33", "*.", "http://pypi.org"} {
		if _, err := Parse(Policy{Allow: []string{bad}}); err == nil || !strings.Contains(err.Error(), "domain name") {
			t.Errorf("Parse(%q) = %v, want an error naming the forms", bad, err)
		}
	}
}

// TestTableRules: a policy's table loads into nftables, resolved
// addresses join its set with a bounded timeout that renews, and an
// empty report reads back.
func TestTableRules(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	table := "arbor_test_" + strings.ReplaceAll(t.Name(), "/", "_")
	r, err := Parse(Policy{Allow: []string{"allowed.test", "203.0.113.0/24", "tcp:443", "udp:8000-8100"}, Deny: []string{"203.0.113.9", "25"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := nft(ctx, tableRules(table, "arbhtest", netip.MustParseAddrPort("10.88.255.253:5353"), 5354, r)); err != nil {
		t.Fatal(err)
	}
	defer exec.Command("nft", "delete", "table", "inet", table).Run()
	a := netip.MustParseAddr("198.51.100.9")
	var renew []netip.Addr // the second admit renews the first's entry
	for _, ttl := range []time.Duration{time.Second, 2 * time.Hour} {
		if err := admit(table, []netip.Addr{a}, renew, ttl); err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command("nft", "list", "set", "inet", table, "dns4").CombinedOutput()
		want := "198.51.100.9 timeout " + map[time.Duration]string{time.Second: "30s", 2 * time.Hour: "1h"}[ttl]
		if !strings.Contains(string(out), want) {
			t.Errorf("after admit with TTL %v the set reads:\n%s\nwant %q", ttl, out, want)
		}
		renew = []netip.Addr{a}
	}
	n, dropped, err := readDenied(table)
	if err != nil || n != 0 || len(dropped) != 0 {
		t.Errorf("readDenied = %d %v %v, want nothing", n, dropped, err)
	}
}

// TestCleanup: a killed daemon's run tables (its prefix) go; others stay.
func TestCleanup(t *testing.T) {
	testutil.RequiresRoot(t)
	r, _ := Parse(Policy{Allow: []string{"allowed.test"}})
	for _, table := range []string{"arbor_testdead_1", "arbor_testlive_1"} {
		if err := nft(context.Background(), tableRules(table, "arbhtestc", netip.MustParseAddrPort("10.88.255.253:5353"), 5354, r)); err != nil {
			t.Fatal(err)
		}
		defer exec.Command("nft", "delete", "table", "inet", table).Run()
	}
	Cleanup(context.Background(), "arbor_testdead_")
	if exec.Command("nft", "list", "table", "inet", "arbor_testdead_1").Run() == nil {
		t.Error("Cleanup left the dead daemon's table")
	}
	if err := exec.Command("nft", "list", "table", "inet", "arbor_testlive_1").Run(); err != nil {
		t.Error("Cleanup removed another daemon's table")
	}
}
