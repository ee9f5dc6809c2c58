package warmpool

import (
	"context"
	"testing"
	"time"
)

// TestPut: a sandbox put back goes to the next Take of its key (once), is
// reaped Idle after it was put (not after its boot), keeps the bound by
// evicting another key's oldest sandbox, and can be withdrawn.
func TestPut(t *testing.T) {
	e := newEnv(t, Config[string]{Max: 2, Idle: 2 * time.Minute, Budget: 10})
	ctx := context.Background()
	e.ready(t, "a")
	e.clock.Advance(90 * time.Second)
	b, ok := e.p.Take(ctx, "a")
	if !ok {
		t.Fatal("no sandbox for a")
	}
	if !e.p.Put("a2", b) {
		t.Fatal("Put refused with room in the pool")
	}
	e.clock.Advance(60 * time.Second) // 150 s since its boot, 60 s since Put
	if got := e.p.Idle(func(k string) bool { return k == "a2" }); len(got) != 1 || got[0] != b {
		t.Fatalf("idle on a2 after 60 s: %v (reaped by its boot's age?)", got)
	}
	if got, ok := e.p.Take(ctx, "a2"); !ok || got != b {
		t.Fatalf("Take(a2) = %v %v, want the sandbox put back", got, ok)
	}
	if _, ok := e.p.Take(ctx, "a2"); ok {
		t.Fatal("the sandbox put back went to two runs")
	}

	// At the bound: another key's oldest idle sandbox makes room.
	e.ready(t, "x")
	e.clock.Advance(time.Second) // x is the older (the same instant left the order to chance)
	e.ready(t, "y")
	if !e.p.Put("z", b) {
		t.Fatal("Put at the bound refused although another key's sandbox could go")
	}
	if v := recv(t, e.f.destroyed, "eviction"); v.key != "x" {
		t.Fatalf("evicted %q, want the oldest, x", v.key)
	}
	if got, ok := e.p.Withdraw("z", func(x *box) bool { return x == b }); !ok || got != b {
		t.Fatalf("Withdraw(z) = %v %v", got, ok)
	}
	if _, ok := e.p.Withdraw("z", func(x *box) bool { return x == b }); ok {
		t.Fatal("withdrawn twice")
	}
	e.p.Close()
	if e.p.Put("z", b) {
		t.Fatal("a closed pool took a sandbox")
	}
}

// TestPutHoldsBoots: after a sandbox is put back to continue in, no boot
// starts for Hold, even once the machine has been quiet: its agent's next
// step is likely to come meanwhile and gets the cores to itself.
func TestPutHoldsBoots(t *testing.T) {
	e := newEnv(t, Config[string]{Hold: 2 * time.Second})
	e.ready(t, "a")
	b, _ := e.p.Take(context.Background(), "a")
	e.p.RunBegins()
	e.p.Want("a", 1) // the image used gets a replacement
	if !e.p.Put("a2", b) {
		t.Fatal("Put refused")
	}
	e.p.Want("a2", 2) // and the new one a sandbox for a branch
	e.p.RunEnds()
	e.quietPassed()
	e.noCalls(t)
	if s := e.p.Stats(); s.Booting != 0 || s.Wanted != 2 {
		t.Fatalf("booted within the hold: %+v", s)
	}
	e.clock.Advance(2*time.Second - e.p.cfg.Quiet)
	e.p.held.Wait()
	recv(t, e.f.calls, "boot after the hold")
}
