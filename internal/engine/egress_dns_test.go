package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/arborsh/arbor/internal/testutil"
)

// TestEgressDNSSecondQuery: a resolver client sending two queries from one
// socket before the first is answered (busybox's nslookup asks A and AAAA
// at once) gets both answered on the first try. The firewall used to admit
// only a redirected flow's first packet: the second query was dropped,
// answered only on a retry 2.5 s later, or never (the lookups the egress
// tests saw fail under load).
func TestEgressDNSSecondQuery(t *testing.T) {
	f := newEgressFixture(t)
	e, base := newEgressEngine(t, f, nil)
	// One try each (-retry=1): what is dropped is not answered.
	out, _ := egressRun(t, e, base, "echo nameserver 192.0.2.53 > /etc/resolv.conf; nslookup -retry=1 -timeout=10 allowed.test 2>&1",
		&Egress{Allow: []string{"allowed.test"}})
	if !strings.Contains(out, "Address: "+f.allowed) || strings.Contains(out, "Can't find") {
		t.Errorf("nslookup through the policy's resolver:\n%s\nwant the A answer and the (empty) AAAA one", out)
	}
}

// newEgressEngine starts a cold runsc engine whose policies resolve
// through f's upstream, with cfg's other settings (nil: none).
func newEgressEngine(t *testing.T, f egressFixture, cfg func(*Config)) (*Engine, string) {
	t.Helper()
	c := Config{Home: testutil.Home(t), Runtime: "runsc", InitBinary: staticInit(t), WarmPerImage: -1, EgressDNS: f.upstream}
	if cfg != nil {
		cfg(&c)
	}
	e, err := New(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, busybox(t, e)
}
