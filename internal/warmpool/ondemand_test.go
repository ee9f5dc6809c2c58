package warmpool

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestBootForHandsOutAsTheyCome: runs that want a sandbox of one key now
// get a boot each, whatever the quiet and the hold, but none where a boot
// of the pool's is in flight for them; each takes the first sandbox ready,
// and a failed boot is reported to one of them.
func TestBootForHandsOutAsTheyCome(t *testing.T) {
	e := newEnv(t, Config[string]{Hold: time.Hour})
	e.ready(t, "x")
	b, _ := e.p.Take(context.Background(), "x")
	e.p.Put("x2", b) // the hold starts: no boot of the pool's own
	e.p.RunBegins()  // nor during a run
	type got struct {
		b   *box
		err error
	}
	out := make(chan got, 4)
	for range 4 {
		go func() {
			b, err := e.p.BootFor(context.Background(), "a")
			out <- got{b, err}
		}()
	}
	var calls []bootCall
	for range 4 {
		calls = append(calls, e.boot(t, "a"))
	}
	e.noCalls(t)
	for i, c := range calls {
		c.done <- nil
		if g := recv(t, out, "a sandbox"); g.err != nil || g.b == nil {
			t.Fatalf("sandbox %d: %v %v", i, g.b, g.err)
		}
	}
	// A boot of the pool's in flight serves a run that asks meanwhile.
	e.p.RunEnds()
	e.p.Want("a", 1)
	e.quietPassed()
	e.p.mu.Lock()
	e.p.holdUntil = time.Time{}
	e.p.mu.Unlock()
	e.p.pump()
	pooled := e.boot(t, "a")
	e.p.RunBegins()
	go func() {
		b, err := e.p.BootFor(context.Background(), "a")
		out <- got{b, err}
	}()
	pooled.done <- nil
	if g := recv(t, out, "the pool's sandbox"); g.err != nil || g.b == nil {
		t.Fatalf("sandbox: %v %v", g.b, g.err)
	}
	e.noCalls(t)
	go func() {
		b, err := e.p.BootFor(context.Background(), "a")
		out <- got{b, err}
	}()
	e.boot(t, "a").done <- errors.New("no room")
	if g := recv(t, out, "the failed boot"); g.err == nil {
		t.Fatal("a failed boot was not reported to the run waiting for it")
	}
	e.p.RunEnds()
}
