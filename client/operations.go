package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
)

// Spawn starts one command in a fresh sandbox. The answer carries the
// operation id (UUID) and the request with every default filled in.
func (c *Client) Spawn(ctx context.Context, req apitypes.InstanceSpawnRequest) (*apitypes.InstanceSpawnResponse, error) {
	var out apitypes.InstanceSpawnResponse
	return &out, c.do(ctx, request{method: http.MethodPost, path: "/instances", json: req}, &out)
}

// OperationListOptions filters ListOperations.
type OperationListOptions struct {
	Page
	Status []string // any of these statuses (PENDING, ..., CANCELLED)
	Kind   string   // "instance" or "image_import"
}

// ListOperations lists operations, newest first.
func (c *Client) ListOperations(ctx context.Context, o OperationListOptions) ([]apitypes.OperationSummary, error) {
	q := o.query()
	for _, s := range o.Status {
		q.Add("status", s)
	}
	if o.Kind != "" {
		q.Set("kind", o.Kind)
	}
	var out []apitypes.OperationSummary
	return out, c.do(ctx, request{method: http.MethodGet, path: "/operations", query: q}, &out)
}

// Operation returns an operation's current state.
func (c *Client) Operation(ctx context.Context, id string) (*apitypes.OperationResponse, error) {
	return c.getOperation(ctx, id, nil)
}

func (c *Client) getOperation(ctx context.Context, id string, q url.Values) (*apitypes.OperationResponse, error) {
	var out apitypes.OperationResponse
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/operations/" + url.PathEscape(id), query: q}, &out)
}

// Cancel cancels an operation; a finished one is a conflict ([IsConflict]).
func (c *Client) Cancel(ctx context.Context, id string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: "/operations/" + url.PathEscape(id)}, nil)
}

// EventsOptions selects the events StreamEvents reads.
type EventsOptions struct {
	After  int64 // only events with a larger id; -1 for the whole log
	Follow bool  // keep the stream open until the completion event
	Spid   *int  // only this process' events (completion is always sent)
}

// StreamEvents reads one event stream of operation id over a single
// connection, calling fn for each event. It returns nil after the
// completion event or when the server ends the stream, and the error of fn
// if fn fails. A failure reported inside the stream is a *[StreamError].
// FollowEvents adds reconnection on top.
func (c *Client) StreamEvents(ctx context.Context, id string, o EventsOptions, fn func(apitypes.OperationEvent) error) error {
	q := url.Values{"since": {strconv.FormatInt(o.After, 10)}}
	if o.Follow {
		q.Set("follow", "1")
	}
	if o.Spid != nil {
		q.Set("spid", strconv.Itoa(*o.Spid))
	}
	h := http.Header{"Accept": {"text/event-stream"}}
	if o.After >= 0 {
		h.Set("Last-Event-Id", strconv.FormatInt(o.After, 10))
	}
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/operations/" + url.PathEscape(id) + "/events", query: q, header: h})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readEvents(resp.Body, fn)
}

// callbackError carries the error of a caller's function through the stream
// reader, so it is returned as-is and never retried.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// errEndedEarly means a stream closed before the completion event.
var errEndedEarly = errors.New("event stream ended before the completion event")

// FollowEvents calls fn for each event of operation id with an id larger
// than after (-1: all), in order, until the completion event, which is
// always the last. A dropped stream is resumed with Last-Event-Id, so no
// event is delivered twice or skipped; it gives up after repeated failures
// that bring no new event.
func (c *Client) FollowEvents(ctx context.Context, id string, after int64, fn func(apitypes.OperationEvent) error) error {
	return c.follow(ctx, id, after, nil, fn)
}

func (c *Client) follow(ctx context.Context, id string, after int64, spid *int, fn func(apitypes.OperationEvent) error) error {
	const maxFailures = 8
	failures := 0
	for {
		done := false
		err := c.StreamEvents(ctx, id, EventsOptions{After: after, Follow: true, Spid: spid}, func(ev apitypes.OperationEvent) error {
			after, failures = ev.ID, 0
			if err := fn(ev); err != nil {
				return &callbackError{err}
			}
			done = ev.Type == apitypes.EventCompletion
			return nil
		})
		var cbe *callbackError
		switch {
		case errors.As(err, &cbe):
			return cbe.err
		case done:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			err = errEndedEarly
		case StatusCode(err) != 0 && !retryable(StatusCode(err)) && StatusCode(err) < 500 && StatusCode(err) != http.StatusGone:
			return err // 4xx: reconnecting will not help
		}
		if failures++; failures >= maxFailures {
			return fmt.Errorf("following events of operation %s: %w (gave up after %d attempts)", id, err, failures)
		}
		if err := c.pause(ctx, backoff[min(failures-1, len(backoff)-1)]); err != nil {
			return err
		}
	}
}

// Wait blocks until operation id has finished and returns its final state.
// It asks the daemon to answer once the operation ends (a long poll, one
// request); should it still run after that, or the server not wait, Wait
// follows the daemon's own events (spid 0), which end with completion.
func (c *Client) Wait(ctx context.Context, id string) (*apitypes.OperationResponse, error) {
	op, err := c.WaitFor(ctx, id, longPoll)
	switch {
	case err == nil && apitypes.IsTerminal(op.Status):
		return op, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case StatusCode(err) == http.StatusUnauthorized || StatusCode(err) == http.StatusForbidden || StatusCode(err) == http.StatusNotFound:
		return nil, err // following will not help; anything else (a server that refuses wait) may
	}
	daemon := 0
	if err := c.follow(ctx, id, -1, &daemon, func(apitypes.OperationEvent) error { return nil }); err != nil {
		return nil, err
	}
	return c.Operation(ctx, id)
}

// longPoll is how long Wait asks the daemon to hold its answer (the
// daemon's bound, under common proxies' idle timeouts).
const longPoll = 50 * time.Second

// WaitFor returns operation id once it has finished or d has passed,
// whichever is first, in one request (the daemon holds the answer; d is cut
// to its bound, 50 s). The operation may still be running: check Status.
func (c *Client) WaitFor(ctx context.Context, id string, d time.Duration) (*apitypes.OperationResponse, error) {
	return c.getOperation(ctx, id, url.Values{"wait": {d.String()}})
}

// Run spawns req and waits for it to finish. It asks the daemon to answer
// the spawn only once the operation has finished (POST /v1/instances?wait=,
// an arbor extension), so a step is one request; it waits further (Wait)
// for what runs longer than that, or when the server answers at once. If
// ctx ends first, the operation is cancelled (best effort) and ctx's error
// returned.
func (c *Client) Run(ctx context.Context, req apitypes.InstanceSpawnRequest) (*apitypes.OperationResponse, error) {
	id, op, err := c.spawnWaiting(ctx, req)
	if err == nil && (op == nil || !apitypes.IsTerminal(op.Status)) {
		op, err = c.Wait(ctx, id)
	}
	if err != nil && ctx.Err() != nil && id != "" {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = c.Cancel(cctx, id)
	}
	return op, err
}

// spawnWaiting spawns req, asking the daemon to hold the answer's body
// until the operation ends. It returns the operation's id (from the
// answer's Location, which comes at once, so a ctx that ends meanwhile can
// still cancel it) and the operation if the daemon answered with it. A
// server that refuses the wait (400: nothing was spawned) is asked again
// without it.
func (c *Client) spawnWaiting(ctx context.Context, req apitypes.InstanceSpawnRequest) (string, *apitypes.OperationResponse, error) {
	resp, err := c.send(ctx, request{method: http.MethodPost, path: "/instances", query: url.Values{"wait": {longPoll.String()}}, json: req})
	if StatusCode(err) == http.StatusBadRequest {
		sp, err := c.Spawn(ctx, req)
		if err != nil {
			return "", nil, err
		}
		return sp.UUID, nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	id := ""
	if loc := resp.Header.Get("Location"); loc != "" {
		id = path.Base(loc)
	}
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		if ctx.Err() != nil {
			return id, nil, ctx.Err()
		}
		return id, nil, fmt.Errorf("client: decode POST /instances answer: %w", err)
	}
	var probe struct {
		UUID   string `json:"uuid"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil || probe.UUID == "" {
		return id, nil, fmt.Errorf("client: POST /instances answered without an operation id: %.200s", raw)
	}
	if probe.Status == "" {
		return probe.UUID, nil, nil // the spawn's own answer: the server did not wait
	}
	var op apitypes.OperationResponse
	if err := json.Unmarshal(raw, &op); err != nil {
		return probe.UUID, nil, nil // Wait reads it again
	}
	return probe.UUID, &op, nil
}

// Exec starts a subprocess in running operation id and returns its spid.
func (c *Client) Exec(ctx context.Context, id string, spec apitypes.ExecSpec) (int, error) {
	var out apitypes.SubprocessResponse
	err := c.do(ctx, request{method: http.MethodPost, path: "/operations/" + url.PathEscape(id) + "/subprocesses", json: spec}, &out)
	return out.Spid, err
}

func subprocessPath(id string, spid int) string {
	return "/operations/" + url.PathEscape(id) + "/subprocesses/" + strconv.Itoa(spid)
}

// Subprocess returns the state and output of process spid of operation id
// (1 is the main process). While it runs, exit code and signal are -1.
func (c *Client) Subprocess(ctx context.Context, id string, spid int) (*apitypes.InstanceResult, error) {
	var out apitypes.InstanceResult
	return &out, c.do(ctx, request{method: http.MethodGet, path: subprocessPath(id, spid)}, &out)
}

// KillSubprocess sends signal (a name such as "TERM"; "" is TERM) to
// process spid of operation id.
func (c *Client) KillSubprocess(ctx context.Context, id string, spid int, signal string) error {
	q := url.Values{}
	if signal != "" {
		q.Set("signal", strings.ToUpper(signal))
	}
	return c.do(ctx, request{method: http.MethodDelete, path: subprocessPath(id, spid), query: q}, nil)
}

// WriteStdin writes to process spid's stdin; in.Close closes it afterwards.
func (c *Client) WriteStdin(ctx context.Context, id string, spid int, in apitypes.ClosableStreamRepr) error {
	return c.do(ctx, request{method: http.MethodPost, path: subprocessPath(id, spid) + "/stdin", json: in}, nil)
}
