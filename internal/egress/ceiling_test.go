package egress

import (
	"slices"
	"strings"
	"testing"
)

// TestWithin: a run narrows its ceiling or is refused, naming its entry;
// what it leaves unsaid comes from the ceiling; denials add up.
func TestWithin(t *testing.T) {
	ceiling := Policy{Allow: []string{"pypi.org", "*.pythonhosted.org", "203.0.113.0/24", "tcp:443", "udp:8000-8100", "53"},
		Deny: []string{"evil.pythonhosted.org", "203.0.113.128/25", "tcp:25"}}
	for _, tc := range []struct {
		run        Policy
		allow, den []string // the policy in force
		refused    string   // else the entry the error names
	}{
		{run: Policy{}, allow: ceiling.Allow},
		{run: Policy{Allow: []string{"pypi.org"}}, allow: []string{"pypi.org", "tcp:443", "udp:8000-8100", "53"}},
		{run: Policy{Allow: []string{"files.pythonhosted.org", "*.a.pythonhosted.org", "203.0.113.8/29", "tcp:443"}, Deny: []string{"x.test"}},
			allow: []string{"files.pythonhosted.org", "*.a.pythonhosted.org", "203.0.113.8/29", "tcp:443"}, den: []string{"x.test"}},
		{run: Policy{Allow: []string{"udp:8080-8090", "tcp:53", "udp:53"}}, allow: []string{"pypi.org", "*.pythonhosted.org", "203.0.113.0/24", "udp:8080-8090", "tcp:53", "udp:53"}},
		{run: Policy{Allow: []string{"other.test"}}, refused: "other.test"},
		{run: Policy{Allow: []string{"www.pypi.org"}}, refused: "www.pypi.org"},
		{run: Policy{Allow: []string{"*.org"}}, refused: "*.org"},
		{run: Policy{Allow: []string{"pythonhosted.org"}}, refused: "pythonhosted.org"},
		{run: Policy{Allow: []string{"203.0.0.0/16"}}, refused: "203.0.0.0/16"},
		{run: Policy{Allow: []string{"198.51.100.7"}}, refused: "198.51.100.7"},
		{run: Policy{Allow: []string{"tcp:80"}}, refused: "tcp:80"},
		{run: Policy{Allow: []string{"443"}}, refused: "443"}, // UDP 443 is not in the ceiling
		{run: Policy{Allow: []string{"udp:8000-9000"}}, refused: "udp:8000-9000"},
		{run: Policy{Allow: []string{"evil.pythonhosted.org"}}, refused: "evil.pythonhosted.org"},
		{run: Policy{Allow: []string{"203.0.113.200"}}, refused: "203.0.113.200"},
	} {
		got, err := Within(tc.run, ceiling)
		if tc.refused != "" {
			if err == nil || !strings.Contains(err.Error(), `"`+tc.refused+`"`) {
				t.Errorf("Within(%v) = %v, %v; want a refusal naming %q", tc.run, got, err, tc.refused)
			}
			continue
		}
		if err != nil {
			t.Errorf("Within(%v): %v", tc.run, err)
			continue
		}
		if want := append(append([]string(nil), tc.den...), ceiling.Deny...); !slices.Equal(got.Allow, tc.allow) || !slices.Equal(got.Deny, want) {
			t.Errorf("Within(%v) = %v, want allow %v deny %v", tc.run, got, tc.allow, want)
		}
	}
	// A ceiling of ports and denials alone bounds ports only.
	got, err := Within(Policy{Allow: []string{"example.com"}}, Policy{Allow: []string{"tcp:443"}, Deny: []string{"*.internal.test"}})
	if err != nil || !slices.Equal(got.Allow, []string{"example.com", "tcp:443"}) || !slices.Equal(got.Deny, []string{"*.internal.test"}) {
		t.Errorf("under a port ceiling: %v, %v", got, err)
	}
	if _, err := Within(Policy{Allow: []string{"x.internal.test"}}, Policy{Deny: []string{"*.internal.test"}}); err == nil {
		t.Error("a run allowed a name its ceiling denies")
	}
	// No ceiling: the run's own, as given.
	if got, err := Within(Policy{Allow: []string{"tcp:80"}}, Policy{}); err != nil || !slices.Equal(got.Allow, []string{"tcp:80"}) {
		t.Errorf("without a ceiling: %v, %v", got, err)
	}
}
