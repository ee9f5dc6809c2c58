package egress

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// forgetConnections deletes the connection tracking entries of sandbox
// address ip. Addresses are reused by later sandboxes, and an entry
// outlives its sandbox (UDP for 30 s and more): a policy must not find a
// new sandbox's packets matching an earlier run's entries, whether
// "established" (let through without the policy's checks) or redirected
// to an earlier run's resolver.
func forgetConnections(ip string) error {
	a := net.ParseIP(ip)
	if a == nil {
		return fmt.Errorf("sandbox address %q", ip)
	}
	f := &netlink.ConntrackFilter{}
	if err := f.AddIP(netlink.ConntrackOrigSrcIP, a); err != nil {
		return err
	}
	if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
		return fmt.Errorf("forget connections of %s: %w", ip, err)
	}
	return nil
}
