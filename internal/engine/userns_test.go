package engine

import (
	"testing"

	"github.com/arborsh/arbor/internal/overlay"
	"github.com/arborsh/arbor/internal/testutil"
)

// TestIDRangeSpares: a freed id range keeps its user namespace for the
// next runc sandbox (no new namespace, so no fork of the daemon, on the
// start path), live sandboxes never share a range, and the spares are
// bounded, a range beyond the bound going back to the pool.
func TestIDRangeSpares(t *testing.T) {
	testutil.RequiresRoot(t)
	a := newIDAlloc()
	made := 0
	a.newNS = func(hostID, size uint32) (*overlay.Userns, error) {
		made++
		return overlay.NewUserns(hostID, size)
	}
	defer a.close()
	first, err := a.get()
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.get()
	if err != nil {
		t.Fatal(err)
	}
	if first.HostID == second.HostID {
		t.Fatalf("two live sandboxes got range %d", first.HostID)
	}
	a.put(first)
	again, err := a.get()
	if err != nil {
		t.Fatal(err)
	}
	if again != first || made != 2 {
		t.Fatalf("after a free, get made a namespace (%d made) or another range (%d, freed %d)", made, again.HostID, first.HostID)
	}
	// The spare's range stays reserved: fresh ranges never collide with it.
	a.put(again)
	var live []*overlay.Userns
	for range maxSpareNS + 2 {
		ns, err := a.get()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range append(live, second) {
			if l.HostID == ns.HostID {
				t.Fatalf("range %d handed out twice", ns.HostID)
			}
		}
		live = append(live, ns)
	}
	for _, ns := range append(live, second) {
		a.put(ns)
	}
	if len(a.spare) != maxSpareNS || len(a.used) != maxSpareNS {
		t.Fatalf("%d spares, %d ranges reserved; want %d of each", len(a.spare), len(a.used), maxSpareNS)
	}
}
