package egress

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// What changes while a run runs (addresses admitted, counters read, the
// table deleted) goes over netlink (github.com/google/nftables): forking
// `nft` cost ~15 ms a call, and an answer waits for its admission
// (BENCHMARKS.md section 12). Loading a table stays with `nft -f` (once per
// run), whose rule language tableRules writes far more plainly than
// netlink expressions would.

func nftTable(table string) *nftables.Table {
	return &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
}

// admit adds addrs to table's dns4 set for ttl (bounded). Those of them
// in renew, which may be there already, get the new timeout: add, delete
// and add again in one batch, which the kernel applies as one
// transaction, so an address in use never leaves the set (a plain add
// leaves an element's timeout alone on kernels before 6.12 or so). The
// delete is what costs (~15 ms against 0.1 ms for an add: the kernel
// waits for readers of the set to pass), so only renewals pay it.
func admit(table string, addrs, renew []netip.Addr, ttl time.Duration) error {
	ttl = min(max(ttl, minTTL), maxTTL)
	set := &nftables.Set{Table: nftTable(table), Name: "dns4", KeyType: nftables.TypeIPAddr, HasTimeout: true}
	els := func(addrs []netip.Addr) []nftables.SetElement {
		out := make([]nftables.SetElement, 0, len(addrs))
		for _, a := range addrs {
			if a.Is4() {
				b := a.As4()
				out = append(out, nftables.SetElement{Key: b[:], Timeout: ttl})
			}
		}
		return out
	}
	all, again := els(addrs), els(renew)
	if len(all) == 0 {
		return nil
	}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	if err := c.SetAddElements(set, all); err != nil {
		return err
	}
	if len(again) > 0 {
		if err := c.SetDeleteElements(set, again); err != nil {
			return err
		}
		if err := c.SetAddElements(set, again); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("admit %v to %s: %w", addrs, table, err)
	}
	return nil
}

// readDenied returns table's dropped packet count and the denied
// destinations it recorded.
func readDenied(table string) (int64, []Dropped, error) {
	c, err := nftables.New()
	if err != nil {
		return 0, nil, err
	}
	t := nftTable(table)
	o, err := c.GetObject(&nftables.CounterObj{Table: t, Name: "dropped"})
	if err != nil {
		return 0, nil, fmt.Errorf("read counter of %s: %w", table, err)
	}
	var packets int64
	if ctr, ok := o.(*nftables.CounterObj); ok {
		packets = int64(ctr.Packets)
	}
	els, err := c.GetSetElements(&nftables.Set{Table: t, Name: "denied"})
	if err != nil {
		return packets, nil, fmt.Errorf("read denied destinations of %s: %w", table, err)
	}
	var dropped []Dropped
	for _, el := range els {
		// ipv4_addr . inet_proto . inet_service: each field in a 4-byte
		// register, the protocol one byte, the port big-endian.
		if len(el.Key) != 12 {
			continue
		}
		d := Dropped{Addr: netip.AddrFrom4([4]byte(el.Key[:4])).String(), Port: int(binary.BigEndian.Uint16(el.Key[8:10]))}
		switch el.Key[4] {
		case unix.IPPROTO_TCP:
			d.Proto = "tcp"
		case unix.IPPROTO_UDP:
			d.Proto = "udp"
		default:
			d.Proto = fmt.Sprint(el.Key[4])
		}
		dropped = append(dropped, d)
	}
	return packets, dropped, nil
}

// deleteTable removes table.
func deleteTable(table string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.DelTable(nftTable(table))
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete table %s: %w", table, err)
	}
	return nil
}
