package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/store"
)

// eventHub assigns event ids, persists events and wakes followers. Every
// event is in the store before any follower sees it, so a replay after a
// restart shows exactly what live followers saw.
type eventHub struct {
	st   store.Metadata
	log  *slog.Logger
	mu   sync.Mutex
	logs map[string]*opLog
	// notify, if set, is told after every event stored (cluster.go wakes
	// other nodes' followers with it).
	notify func(op string)
}

type opLog struct {
	mu   sync.Mutex // serialises appends so ids are stored in order
	next int64
	ch   chan struct{} // closed and replaced on every append
}

func newEventHub(st store.Metadata, log *slog.Logger) *eventHub {
	return &eventHub{st: st, log: log, logs: map[string]*opLog{}}
}

// open starts a live log for op whose next event id is next.
func (h *eventHub) open(op string, next int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs[op] = &opLog{next: next, ch: make(chan struct{})}
}

// close ends op's live log, waking every follower for a final read.
func (h *eventHub) close(op string) {
	h.mu.Lock()
	l := h.logs[op]
	delete(h.logs, op)
	h.mu.Unlock()
	if l != nil {
		l.mu.Lock()
		close(l.ch)
		l.mu.Unlock()
	}
}

// complete stores op's completion event through write, which is given the
// event's id (-1 when op has no live log: the next one stored) and writes
// it in the transaction that finishes op. The log's lock is held across
// write, so the completion's id is the next one and no append can take it;
// no transaction waits for that lock while it holds the store's writer.
func (h *eventHub) complete(op string, write func(id int64) error) error {
	l := h.opLog(op)
	if l == nil {
		err := write(-1)
		if err == nil {
			h.told(op)
		}
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := write(l.next); err != nil {
		return err
	}
	l.next++
	close(l.ch)
	l.ch = make(chan struct{})
	h.told(op)
	return nil
}

// told passes an event of op stored to notify.
func (h *eventHub) told(op string) {
	if h.notify != nil {
		h.notify(op)
	}
}

func (h *eventHub) opLog(op string) *opLog {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.logs[op]
}

// emit appends an event for op; a failure to store it is logged with the
// operation's id (the operation goes on: its outcome matters more than one
// event of its log).
func (h *eventHub) emit(ctx context.Context, op string, spid int, typ string, data any) {
	if err := h.append(ctx, op, spid, typ, data); err != nil {
		h.log.Warn("append event", "operation", op, "type", typ, "spid", spid, "err", err)
	}
}

// append stores one event for op and wakes followers.
func (h *eventHub) append(ctx context.Context, op string, spid int, typ string, data any) error {
	return h.appendWith(ctx, op, spid, typ, data, nil)
}

// appendWith stores the event inside a transaction together with fn's work.
func (h *eventHub) appendWith(ctx context.Context, op string, spid int, typ string, data any, fn func(tx store.Tx) error) error {
	l := h.opLog(op)
	if l == nil {
		return nil // operation not live (already finished)
	}
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("event %s: %w", typ, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := store.Event{ID: l.next, TS: time.Now(), Spid: spid, Type: typ, Data: string(b)}
	// Events outlive the request that caused them: a cancelled run still logs.
	ctx = context.WithoutCancel(ctx)
	if fn == nil {
		err = h.st.AppendEvent(ctx, op, ev)
	} else {
		err = h.st.Update(ctx, func(tx store.Tx) error {
			if err := fn(tx); err != nil {
				return err
			}
			return tx.AppendEvent(ctx, op, ev)
		})
	}
	if err != nil {
		return fmt.Errorf("store event %d (%s) of operation %s: %w", ev.ID, typ, op, err)
	}
	l.next++
	close(l.ch)
	l.ch = make(chan struct{})
	h.told(op)
	return nil
}

// wakeup returns a channel closed at op's next event, or nil if op is not live.
func (h *eventHub) wakeup(op string) <-chan struct{} {
	l := h.opLog(op)
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ch
}

// watchLog returns what wakes a reader of op's log once it grows, taken
// before reading so that no append is missed: this node's live log, else
// (in a cluster) another node's notification; both nil for an operation
// live nowhere yet. release (never nil) ends the watch: call it once the
// channels are no longer waited on.
func (e *Engine) watchLog(op string) (wake, remote <-chan struct{}, release func()) {
	if wake = e.events.wakeup(op); wake == nil && e.cl != nil {
		remote, release = e.cl.watch(op) // its log grows on another node
		return wake, remote, release
	}
	return wake, remote, func() {}
}

// awaitNotLive waits for a change of an operation not live on this node:
// remote (watchLog's) or the cluster's poll for one running elsewhere,
// else briefly, as it is PENDING before its log opened.
func (e *Engine) awaitNotLive(ctx context.Context, remote <-chan struct{}, o FollowOptions) error {
	if remote != nil {
		return e.cl.await(ctx, remote, o)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(50 * time.Millisecond):
		return nil
	}
}

// Event is one event of an operation's log. Data is the JSON of the
// payload of its Type (oplog.EventData*).
type Event struct {
	ID   int64
	TS   time.Time
	Spid int
	Type string
	Data json.RawMessage
}

func toEvent(ev store.Event) Event {
	return Event{ID: ev.ID, TS: ev.TS, Spid: ev.Spid, Type: ev.Type, Data: json.RawMessage(ev.Data)}
}

// FollowOptions controls FollowEvents.
type FollowOptions struct {
	After     int64 // deliver events with id > After; -1 for all
	Follow    bool  // wait for new events until completion
	Spid      *int  // only this process's events (completion is always delivered)
	Keepalive time.Duration
	// OnKeepalive is called after Keepalive of silence while following.
	OnKeepalive func() error
}

// FollowEvents calls fn for op's events in order. Without Follow it replays
// the stored log and returns; with Follow it returns after the completion event
// or when ctx ends.
func (e *Engine) FollowEvents(ctx context.Context, account, op string, o FollowOptions, fn func(Event) error) error {
	if _, err := e.st.Operation(ctx, account, op); err != nil {
		return err
	}
	after := o.After
	release := func() {}
	defer func() { release() }()
	for {
		release()
		var wake, remote <-chan struct{}
		wake, remote, release = e.watchLog(op)
		evs, err := e.st.Events(ctx, op, after, 1000)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			after = ev.ID
			if o.Spid != nil && ev.Spid != *o.Spid && ev.Type != oplog.EventCompletion {
				continue
			}
			if err := fn(toEvent(ev)); err != nil {
				return err
			}
			if ev.Type == oplog.EventCompletion {
				return nil
			}
		}
		if len(evs) == 1000 {
			continue
		}
		if !o.Follow {
			return nil
		}
		if wake == nil {
			// Not live: either finished (the loop above has already read
			// everything, including completion) or not started yet.
			st, err := e.st.Operation(ctx, account, op)
			if err != nil {
				return err
			}
			if oplog.IsTerminal(st.Status) {
				more, err := e.st.Events(ctx, op, after, 1)
				if err != nil || len(more) == 0 {
					return err
				}
				continue
			}
			if err := e.awaitNotLive(ctx, remote, o); err != nil {
				return err
			}
			continue
		}
		var tick <-chan time.Time
		var timer *time.Timer
		if o.Keepalive > 0 && o.OnKeepalive != nil {
			timer = time.NewTimer(o.Keepalive)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-wake:
		case <-tick:
			err = o.OnKeepalive()
		}
		if timer != nil {
			timer.Stop()
		}
		if err != nil {
			return err
		}
	}
}
