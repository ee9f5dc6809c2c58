package netns

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/arborsh/arbor/internal/testutil"
)

func TestParseAllow(t *testing.T) {
	got, err := ParseAllow([]string{"10.1.2.3/24", " 169.254.169.254 ", "fd00::/8", ""})
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	if want := "10.1.2.0/24 169.254.169.254/32 fd00::/8"; strings.Join(s, " ") != want {
		t.Errorf("ParseAllow = %v, want %s", s, want)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0"} {
		if _, err := ParseAllow([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseAllow(%q) = %v, want an error naming it", bad, err)
		}
	}
}

// TestEgressRulesPerDaemon: each daemon's rules live in a table of its own
// that matches its own host interfaces (by interface group), so one
// daemon's allow list never opens another's sandboxes; Close removes it.
func TestEgressRulesPerDaemon(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	allow, _ := ParseAllow([]string{"10.1.2.0/24"})
	a, b := NewManager(Tag(t.TempDir()), allow...), NewManager(Tag(t.TempDir()))
	for _, m := range []*Manager{a, b} {
		n, err := m.Create(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		defer m.Release(n)
		out, err := exec.Command("nft", "list", "table", "inet", m.egressTable()).CombinedOutput()
		if err != nil {
			t.Fatalf("list %s: %v %s", m.egressTable(), err, out)
		}
		rules := string(out)
		if strings.Contains(rules, "daddr 10.1.2.0/24 accept") != (m == a) {
			t.Errorf("%s:\n%s", m.egressTable(), rules)
		}
		if !strings.Contains(rules, "169.254.0.0/16") {
			t.Errorf("%s lacks the default deny:\n%s", m.egressTable(), rules)
		}
		link, _ := exec.Command("ip", "-d", "link", "show", n.HostIf).Output()
		if !strings.Contains(string(link), " group "+strconv.FormatUint(uint64(m.group()), 10)+" ") {
			t.Errorf("%s is not in group %d: %s", n.HostIf, m.group(), link)
		}
	}
	if a.group() == b.group() {
		t.Fatal("two daemons share an interface group")
	}
	a.Close()
	if err := exec.Command("nft", "list", "table", "inet", a.egressTable()).Run(); err == nil {
		t.Error("Close left the daemon's egress table")
	}
	// After kill -9 the next daemon on the same home removes what is left.
	if err := b.setup(ctx); err != nil {
		t.Fatal(err)
	}
	NewManager(b.tag).Cleanup(ctx)
	if err := exec.Command("nft", "list", "table", "inet", b.egressTable()).Run(); err == nil {
		t.Error("Cleanup left a dead daemon's egress table")
	}
}

// TestFirewallLetsPolicyDNSThrough: the one new connection from a sandbox
// to the host the firewall admits is the DNS an egress policy marked.
func TestFirewallLetsPolicyDNSThrough(t *testing.T) {
	accept := fmt.Sprintf("iifname \"arbh*\" ct mark 0x%08x accept", DNSMark)
	i, j := strings.Index(firewall, accept), strings.Index(firewall, `iifname "arbh*" ct state new drop`)
	if i < 0 || j < 0 || i > j {
		t.Errorf("the input chain lacks %q before its drop:\n%s", accept, firewall)
	}
}
