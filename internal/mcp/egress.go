package mcp

import "github.com/arborsh/arbor/client/apitypes"

// egressOf is the egress policy of run's and branch's allow and deny
// inputs; nil (the daemon's default) when both are empty.
func egressOf(allow, deny []string) *apitypes.Egress {
	if len(allow)+len(deny) == 0 {
		return nil
	}
	return &apitypes.Egress{Allow: allow, Deny: deny}
}
