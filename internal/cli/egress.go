package cli

import (
	"github.com/spf13/pflag"

	"github.com/arborsh/arbor/client/apitypes"
)

// egressFlags are a run's egress policy (arbor run --allow/--deny); either
// turns networking on.
type egressFlags struct {
	allow, deny []string
}

func (f *egressFlags) register(fl *pflag.FlagSet) {
	fl.StringArrayVar(&f.allow, "allow", nil, "network access to this only (implies --network): a domain name (pypi.org, *.pythonhosted.org), a CIDR or address, or a port (443, tcp:443, udp:8000-8100); repeatable")
	fl.StringArrayVar(&f.deny, "deny", nil, "no network access to this (implies --network): a name, CIDR, address or port as for --allow; repeatable, wins over --allow")
}

func (f *egressFlags) set() bool { return len(f.allow)+len(f.deny) > 0 }

// policy is the request's egress object, nil when no flag was given (the
// daemon's default applies).
func (f *egressFlags) policy() *apitypes.Egress {
	if !f.set() {
		return nil
	}
	return &apitypes.Egress{Allow: f.allow, Deny: f.deny}
}
