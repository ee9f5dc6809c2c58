package engine

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/egress"
	"github.com/arborsh/arbor/internal/oplog"
)

// TestEgressLive: an instance that keeps running reports what its policy
// blocks as it happens, each live event with what is new since the last
// (a burst of denials coalesced into few events), and the run's totals in
// a final event before its exit.
func TestEgressLive(t *testing.T) {
	f := newEgressFixture(t)
	e, base := newEgressEngine(t, f, nil)
	ctx := context.Background()
	// Step one: other.test is refused (the name); step two: its address,
	// on many ports at once, is dropped.
	op, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: base, Shell: ptr(true), Stdin: &Stdin{Close: ptr(false)},
		Networking: &Networking{Enabled: ptr(true), Egress: &Egress{Allow: []string{"allowed.test"}}},
		Command:    egressProbe("other.test") + "echo one; read x; for p in $(seq 18080 18099); do nc -w 1 " + f.other + " $p </dev/null & done; wait; echo two; cat"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// liveEvent waits for a live egress_denied event after event id after.
	liveEvent := func(after int64) (oplog.EventDataEgressDenied, int64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var d oplog.EventDataEgressDenied
		var at int64
		found := errors.New("found")
		err := e.FollowEvents(ctx, acct, op, FollowOptions{After: after, Follow: true}, func(ev Event) error {
			if ev.Type == apitypes.EventExit {
				return errors.New("the run exited first")
			}
			if ev.Type != apitypes.EventEgressDenied {
				return nil
			}
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return err
			}
			if !d.Live {
				return errors.New("a final report while the run runs")
			}
			at = ev.ID
			return found
		})
		if !errors.Is(err, found) {
			t.Fatalf("no live egress_denied event after %d: %v", after, err)
		}
		return d, at
	}
	waitStdout(t, e, op, "one")
	d1, at := liveEvent(-1)
	if !slices.Equal(d1.RefusedNames, []string{"other.test"}) || d1.RefusedQueries == 0 {
		t.Errorf("first live event %+v, want other.test refused", d1)
	}
	say(t, e, op, "go", false)
	waitStdout(t, e, op, "one\ntwo")
	// The burst's drops, in as few events as the seconds they took.
	var burst []oplog.EventDataEgressDenied
	var dests []oplog.EgressDestination
	for len(dests) < 20 {
		d, next := liveEvent(at)
		at = next
		burst = append(burst, d)
		dests = append(dests, d.Dropped...)
		if len(d.RefusedNames) > 0 { // a late query for it may be counted, not named again
			t.Errorf("live event %+v repeats the refused name", d)
		}
	}
	if max := int(time.Since(start)/egressLiveEvery) + 1; len(burst) > max {
		t.Errorf("%d live events in %v: not coalesced", len(burst), time.Since(start))
	}
	for p := 18080; p < 18100; p++ {
		if !slices.Contains(dests, oplog.EgressDestination{Addr: f.other, Proto: "tcp", Port: p}) {
			t.Errorf("port %d missing from the live events' drops %v", p, dests)
		}
	}
	say(t, e, op, "", true)
	waitOp(t, e, op)
	var final *oplog.EventDataEgressDenied
	var types []string
	err = e.FollowEvents(ctx, acct, op, FollowOptions{After: -1}, func(ev Event) error {
		types = append(types, ev.Type)
		if ev.Type == apitypes.EventEgressDenied {
			final = new(oplog.EventDataEgressDenied)
			return json.Unmarshal(ev.Data, final)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if final == nil || final.Live || !slices.Equal(final.RefusedNames, []string{"other.test"}) || len(final.Dropped) != 20 ||
		final.RefusedQueries < d1.RefusedQueries {
		t.Errorf("final egress_denied %+v, want the totals", final)
	}
	if slices.Index(types, apitypes.EventExit) < slices.Index(types, apitypes.EventEgressDenied) {
		t.Errorf("events %v: the final report after the exit", types)
	}
}

// TestLiveDenialsSince: each live event carries only what is new.
func TestLiveDenialsSince(t *testing.T) {
	var l liveDenials
	if _, ok := l.since(egress.Report{}); ok {
		t.Error("an event for nothing blocked")
	}
	a := egress.Dropped{Addr: "198.51.100.1", Proto: "tcp", Port: 80}
	d, ok := l.since(egress.Report{RefusedNames: []string{"x.test"}, RefusedQueries: 2, DroppedPackets: 3, Dropped: []egress.Dropped{a}})
	if !ok || !d.Live || d.RefusedQueries != 2 || d.DroppedPackets != 3 || len(d.RefusedNames) != 1 || len(d.Dropped) != 1 {
		t.Errorf("first = %+v", d)
	}
	if _, ok := l.since(egress.Report{RefusedNames: []string{"x.test"}, RefusedQueries: 2, DroppedPackets: 3, Dropped: []egress.Dropped{a}}); ok {
		t.Error("an event with nothing new")
	}
	b := egress.Dropped{Addr: "198.51.100.2", Proto: "udp", Port: 53}
	d, ok = l.since(egress.Report{RefusedNames: []string{"x.test", "y.test"}, RefusedQueries: 5, DroppedPackets: 4, Dropped: []egress.Dropped{a, b}})
	if !ok || d.RefusedQueries != 3 || d.DroppedPackets != 1 || !slices.Equal(d.RefusedNames, []string{"y.test"}) ||
		!slices.Equal(d.Dropped, []oplog.EgressDestination{{Addr: b.Addr, Proto: b.Proto, Port: b.Port}}) {
		t.Errorf("second = %+v, want only what is new", d)
	}
}
