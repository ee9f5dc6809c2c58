package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
)

var allStatuses = []string{apitypes.StatusPending, apitypes.StatusAssigned, apitypes.StatusExecuting,
	apitypes.StatusSuccess, apitypes.StatusFailed, apitypes.StatusCancelled}

// spawn answers POST /v1/instances: 201, Location of the operation, and the
// request echoed with every default filled in. With wait (an arbor
// extension, as for GET /v1/operations/{id}) the body is the operation
// once it has finished, or as it is when the wait ends.
func (s *server) spawn(w http.ResponseWriter, r *http.Request) error {
	wait, err := waitParam(r.URL.Query())
	if err != nil {
		return err
	}
	var req apitypes.InstanceSpawnRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	ctx, account := r.Context(), accountOf(r)
	op, meta, err := s.e.Spawn(ctx, account, spawnRequest(req))
	if err != nil {
		return err
	}
	echo, err := rewire[apitypes.InstanceMetadata](meta)
	if err != nil {
		return err
	}
	w.Header().Set("Location", apiPath(r, "/v1/operations/"+op))
	answer := apitypes.InstanceSpawnResponse{UUID: op, InstanceMetadata: echo}
	if wait == 0 {
		writeJSON(w, http.StatusCreated, answer)
		return nil
	}
	// One request for an agent's whole step (an arbor extension). The
	// headers go out at once, so the client holds the operation's Location
	// (to cancel it, or to follow it should the connection drop) while the
	// body waits for its end; the body is then the operation, as GET
	// /v1/operations/{id}?wait= answers it, or, should the wait fail (the
	// daemon stopping), the usual answer.
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = http.NewResponseController(w).Flush()
	var body any = answer
	if o, err := s.awaitOperation(ctx, account, op, wait); err == nil {
		body = operationView(o)
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(body) // fails only once the client is gone
	return nil
}

// listOperations answers GET /v1/operations with a bare JSON array.
// status may repeat or list several values separated by commas.
func (s *server) listOperations(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, offset, err := page(q)
	if err != nil {
		return err
	}
	since, until, err := timeRange(q, time.Now())
	if err != nil {
		return err
	}
	f := engine.OperationFilter{Account: accountOf(r), Since: since, Until: until, Limit: limit, Offset: offset}
	for _, v := range q["status"] {
		for st := range strings.SplitSeq(v, ",") {
			st = strings.ToUpper(strings.TrimSpace(st))
			if st == "" {
				continue
			}
			if !slices.Contains(allStatuses, st) {
				return errdefs.InvalidArgument("status %q is unknown: use one of %s", st, strings.Join(allStatuses, ", "))
			}
			f.Statuses = append(f.Statuses, st)
		}
	}
	switch kind := strings.ToLower(strings.TrimSpace(q.Get("kind"))); kind {
	case "":
	case apitypes.KindInstance, apitypes.KindImageImport:
		f.Kind = kind
	default:
		return errdefs.InvalidArgument("kind %q is unknown: use instance or image_import", q.Get("kind"))
	}
	ops, err := s.e.ListOperations(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]apitypes.OperationSummary, 0, len(ops))
	for _, o := range ops {
		out = append(out, summaryView(o))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getOperation answers GET /v1/operations/{id}. inflight=1 is accepted and
// changes nothing: every read is live. With wait (an arbor extension, a
// long poll) an unfinished operation is answered once it finishes, or as
// it is when the wait ends: one request instead of following its events
// and reading it after.
func (s *server) getOperation(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("operation", r.PathValue("id"))
	if err != nil {
		return err
	}
	wait, err := waitParam(r.URL.Query())
	if err != nil {
		return err
	}
	ctx, account := r.Context(), accountOf(r)
	o, err := s.e.Operation(ctx, account, id)
	if err != nil {
		return err
	}
	if wait > 0 && !apitypes.IsTerminal(o.Status) {
		if o, err = s.awaitOperation(ctx, account, id, wait); err != nil {
			return err // the client is gone, or the daemon is stopping (503)
		}
	}
	if !apitypes.IsTerminal(o.Status) {
		w.Header().Set("Retry-After", "1") // a polling hint, as ConTree sends
	}
	writeJSON(w, http.StatusOK, operationView(o))
	return nil
}

// awaitOperation returns account's operation id once it has finished, or
// as it is when wait has passed.
func (s *server) awaitOperation(ctx context.Context, account, id string, wait time.Duration) (engine.Operation, error) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	done, err := s.e.WaitOperation(wctx, account, id)
	cancel()
	switch {
	case err == nil:
		return done, nil
	case ctx.Err() != nil:
		return engine.Operation{}, ctx.Err()
	case wctx.Err() != nil: // not finished within the wait: as it is now
		return s.e.Operation(ctx, account, id)
	default:
		return engine.Operation{}, err
	}
}

// cancelOperation answers DELETE /v1/operations/{id}: 202, or 409 when the
// operation already finished.
func (s *server) cancelOperation(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("operation", r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := s.e.Cancel(r.Context(), accountOf(r), id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// events answers GET /v1/operations/{id}/events with a server-sent event
// stream: one frame per event (id, event type, the whole event as data),
// ending after the completion event.
//
// Resume points (since, Last-Event-Id) are exclusive and the larger wins;
// since=-1 means the whole log. Without follow=1 the stored log is replayed
// and the stream closes; with it, the stream stays open until completion,
// with keepalive comments in quiet periods. A replay that has nothing to
// send yet for an unfinished operation is 425 Too Early with Retry-After.
func (s *server) events(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("operation", r.PathValue("id"))
	if err != nil {
		return err
	}
	q := r.URL.Query()
	after := int64(-1)
	for _, v := range []struct{ name, value string }{{"since", q.Get("since")}, {"Last-Event-Id", r.Header.Get("Last-Event-Id")}} {
		if v.value = strings.TrimSpace(v.value); v.value == "" {
			continue
		}
		n, err := strconv.ParseInt(v.value, 10, 64)
		if err != nil || n < -1 {
			return errdefs.InvalidArgument("%s must be an event id (an integer, -1 for the whole log), not %q", v.name, v.value)
		}
		after = max(after, n)
	}
	follow, err := flag(q, "follow")
	if err != nil {
		return err
	}
	opts := engine.FollowOptions{After: after, Follow: follow}
	if q.Get("spid") != "" {
		n, err := intParam(q, "spid", 0, 0)
		if err != nil {
			return err
		}
		opts.Spid = &n
	}
	ctx, account := r.Context(), accountOf(r)
	if _, err := s.e.Operation(ctx, account, id); err != nil {
		return err
	}

	sse := &sseWriter{w: w, rc: http.NewResponseController(w)}
	if follow {
		// Headers now, so the client knows the stream is live while the
		// operation is still queued.
		if err := sse.start(); err != nil {
			return nil
		}
		opts.Keepalive, opts.OnKeepalive = s.opts.Keepalive, sse.keepalive
	}
	err = s.e.FollowEvents(ctx, account, id, opts, sse.event)
	if !sse.started {
		if err != nil {
			return err
		}
		o, err := s.e.Operation(ctx, account, id)
		if err != nil {
			return err
		}
		if !apitypes.IsTerminal(o.Status) {
			return errdefs.TooEarly("events are not ready yet: the operation is %s; retry, or pass follow=1 to wait for them", o.Status)
		}
		_ = sse.start() // finished, and nothing after the resume point
		return nil
	}
	if err != nil && ctx.Err() == nil && !sse.broken {
		s.log.WarnContext(ctx, "event stream failed", "operation", id, "err", err, "request_id", requestIDOf(ctx))
		sse.fail("event stream failed: " + err.Error() + "; reconnect with Last-Event-Id to resume")
	}
	return nil
}

// sseWriter writes server-sent event frames, flushing each one.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	buf     bytes.Buffer
	started bool
	broken  bool // a write failed: the client is gone
}

func (s *sseWriter) start() error {
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // tell proxies not to hold frames back
	s.w.WriteHeader(http.StatusOK)
	_ = s.rc.SetWriteDeadline(time.Time{})
	return s.flush()
}

func (s *sseWriter) flush() error {
	if s.buf.Len() > 0 {
		if _, err := s.w.Write(s.buf.Bytes()); err != nil {
			s.broken = true
			return err
		}
		s.buf.Reset()
	}
	if err := s.rc.Flush(); err != nil {
		s.broken = true
		return err
	}
	return nil
}

// event writes one frame: the data line is the whole event as one-line JSON.
func (s *sseWriter) event(ev engine.Event) error {
	if !s.started {
		if err := s.start(); err != nil {
			return err
		}
	}
	b, err := json.Marshal(wireEvent(ev))
	if err != nil {
		return err
	}
	fmt.Fprintf(&s.buf, "id: %d\nevent: %s\ndata: %s\n\n", ev.ID, sseField(ev.Type), b)
	return s.flush()
}

func (s *sseWriter) keepalive() error {
	s.buf.WriteString(": keepalive\n\n")
	return s.flush()
}

// fail reports a failure after the stream started, the way ConTree does:
// clients reconnect with Last-Event-Id.
func (s *sseWriter) fail(msg string) {
	fmt.Fprintf(&s.buf, "event: sse_error\ndata: %s\n\n", sseField(msg))
	_ = s.flush()
}

// sseField keeps a value on one line, as a frame field must be.
func sseField(v string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(v)
}
