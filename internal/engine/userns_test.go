package engine

import (
	"context"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/overlay"
	"github.com/arborsh/arbor/internal/testutil"
)

// countingIDAlloc is an idAlloc that counts the namespaces it makes,
// closed at the end of the test.
func countingIDAlloc(t *testing.T) (*idAlloc, *int) {
	t.Helper()
	testutil.RequiresRoot(t)
	a := newIDAlloc()
	made := new(int)
	a.newNS = func(hostID, size uint32) (*overlay.Userns, error) {
		*made++
		return overlay.NewUserns(hostID, size)
	}
	t.Cleanup(a.close)
	return a, made
}

// TestIDRangeSpares: a freed id range keeps its user namespace for the
// next runc sandbox (no new namespace, so no fork of the daemon, on the
// start path), live sandboxes never share a range, and the spares are
// bounded, a range beyond the bound going back to the pool.
func TestIDRangeSpares(t *testing.T) {
	a, made := countingIDAlloc(t)
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
	if again != first || *made != 2 {
		t.Fatalf("after a free, get made a namespace (%d made) or another range (%d, freed %d)", *made, again.HostID, first.HostID)
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

// TestIDRangePrefill: prefill makes spares up to its count (no more if
// there are some already, none once its context has ended), each with a
// range of its own, and the next gets take them without making one.
func TestIDRangePrefill(t *testing.T) {
	a, made := countingIDAlloc(t)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	a.prefill(done, 4)
	if *made != 0 {
		t.Fatalf("prefill after its context ended made %d namespaces", *made)
	}
	a.prefill(context.Background(), 4)
	a.prefill(context.Background(), 3) // there are enough
	if *made != 4 || len(a.spare) != 4 || len(a.used) != 4 {
		t.Fatalf("prefill(4) then prefill(3): %d made, %d spare, %d ranges used; want 4 each", *made, len(a.spare), len(a.used))
	}
	seen := map[uint32]bool{}
	var live []*overlay.Userns
	for range 4 {
		ns, err := a.get()
		if err != nil {
			t.Fatal(err)
		}
		if seen[ns.HostID] {
			t.Fatalf("range %d handed out twice", ns.HostID)
		}
		seen[ns.HostID] = true
		live = append(live, ns)
	}
	if *made != 4 {
		t.Fatalf("gets after a prefill made %d namespaces more", *made-4)
	}
	for _, ns := range live {
		a.put(ns)
	}
}

// TestEnginePrefillsIDRanges: an engine that may run runc makes a burst's
// worth of spare namespaces when it starts.
func TestEnginePrefillsIDRanges(t *testing.T) {
	testutil.RequiresRoot(t)
	e, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: "runc", InitBinary: staticInit(t), Slots: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	spares := func() int {
		e.ids.mu.Lock()
		defer e.ids.mu.Unlock()
		return len(e.ids.spare)
	}
	for deadline := time.Now().Add(30 * time.Second); spares() < 5; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d spare namespaces 30 s after the start, want 5", spares())
		}
	}
}
