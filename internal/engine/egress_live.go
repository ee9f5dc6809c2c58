package engine

import (
	"context"
	"time"

	"github.com/arborsh/arbor/internal/egress"
	"github.com/arborsh/arbor/internal/oplog"
)

// egressLiveEvery is how often a running run's policy is asked what it
// blocked: denials are reported as they happen, coalesced to at most one
// egress_denied event per interval.
const egressLiveEvery = time.Second

// watchEgress emits, while op runs, live egress_denied events with what
// g blocked since the previous one (a read is in-process and two netlink
// calls, ~0.2 ms). The returned stop ends the watch and waits for it, so
// no live event follows the run's final report.
func (e *Engine) watchEgress(ctx context.Context, op string, g *egress.Guard) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(egressLiveEvery)
		defer t.Stop()
		var seen liveDenials
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			r, err := g.Report(ctx)
			if err != nil {
				e.log.Debug("egress live report", "operation", op, "err", err)
				continue
			}
			if d, ok := seen.since(r); ok {
				e.events.emit(ctx, op, 0, oplog.EventEgressDenied, d)
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

// liveDenials is what live events have reported so far.
type liveDenials struct {
	names   map[string]bool
	dests   map[egress.Dropped]bool
	queries int
	packets int64
}

// since returns what r (totals so far) adds to what was reported, as a
// live event's data, and whether it adds anything.
func (l *liveDenials) since(r egress.Report) (oplog.EventDataEgressDenied, bool) {
	if l.names == nil {
		l.names, l.dests = map[string]bool{}, map[egress.Dropped]bool{}
	}
	d := oplog.EventDataEgressDenied{Live: true, RefusedQueries: r.RefusedQueries - l.queries, DroppedPackets: r.DroppedPackets - l.packets}
	if d.RefusedQueries <= 0 && d.DroppedPackets <= 0 {
		return d, false
	}
	l.queries, l.packets = r.RefusedQueries, r.DroppedPackets
	for _, n := range r.RefusedNames {
		if !l.names[n] {
			l.names[n] = true
			d.RefusedNames = append(d.RefusedNames, n)
		}
	}
	for _, x := range r.Dropped {
		if !l.dests[x] {
			l.dests[x] = true
			d.Dropped = append(d.Dropped, oplog.EgressDestination{Addr: x.Addr, Proto: x.Proto, Port: x.Port})
		}
	}
	return d, true
}
