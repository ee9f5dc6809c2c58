package engine

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/arborsh/arbor/internal/errdefs"
)

// TestEgressCeiling: the daemon's and an account's egress policies bound
// what a run may ask: a run that would widen them is refused (403, naming
// whose policy), one that narrows gets exactly what it asked within them,
// and what it leaves unsaid comes from the ceiling.
func TestEgressCeiling(t *testing.T) {
	f := newEgressFixture(t)
	engine := func(allow ...string) (*Engine, string) {
		return newEgressEngine(t, f, func(c *Config) { c.EgressAllow, c.EgressDeny = allow, []string{"tcp:25"} })
	}
	e, base := engine("allowed.test", "other.test", "tcp:18080")
	// The account's own policy replaces the daemon's.
	solo, soloBase := engine("other.test", acct+"=allowed.test")
	ctx := context.Background()
	spawn := func(e *Engine, base string, pol *Egress) (string, []string, error) {
		op, m, err := e.Spawn(ctx, acct, SpawnRequest{Command: "true", Image: base, Disposable: ptr(true), Networking: &Networking{Enabled: ptr(true), Egress: pol}})
		if err != nil {
			return "", nil, err
		}
		waitOp(t, e, op)
		return op, append(m.Networking.Egress.Allow, m.Networking.Egress.Deny...), nil
	}
	for _, tc := range []struct {
		e            *Engine
		base         string
		entry, whose string
	}{
		{e, base, f.other + "/32", "the daemon's"}, // an address range under a ceiling of names
		{e, base, "tcp:80", "the daemon's"},
		{e, base, "*.test", "the daemon's"},
		{solo, soloBase, "other.test", "account " + acct + "'s"},
	} {
		_, _, err := spawn(tc.e, tc.base, &Egress{Allow: []string{tc.entry}})
		if !errors.Is(err, errdefs.ErrForbidden) || !strings.Contains(err.Error(), `"`+tc.entry+`"`) || !strings.Contains(err.Error(), tc.whose+" egress policy") {
			t.Errorf("asking %q: %v, want a 403 naming the entry and %s egress policy", tc.entry, err, tc.whose)
		}
	}
	// Narrowing: the run's names, the ceiling's ports, both's denials.
	if _, got, err := spawn(e, base, &Egress{Allow: []string{"allowed.test"}, Deny: []string{"udp:53"}}); err != nil ||
		!slices.Equal(got, []string{"allowed.test", "tcp:18080", "udp:53", "tcp:25"}) {
		t.Errorf("narrowed policy in force: %v, %v", got, err)
	}
	if _, got, err := spawn(solo, soloBase, nil); err != nil || !slices.Equal(got, []string{"allowed.test"}) {
		t.Errorf("account default: %v, %v", got, err)
	}
	// And enforced: other.test, which the ceiling allows, is out of this run's reach.
	out, _ := egressRun(t, e, base, egressProbe("allowed.test", "other.test"), &Egress{Allow: []string{"allowed.test", "tcp:18080"}})
	if !reached(out, "allowed.test") || reached(out, "other.test") {
		t.Errorf("run narrowed to allowed.test:\n%s", out)
	}
}
