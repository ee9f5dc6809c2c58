package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/store"
)

// opState is where an operation is in its lifecycle:
//
//	PENDING ──► ASSIGNED ──► EXECUTING ──► SUCCESS | FAILED | CANCELLED
//	   │           │                          ▲
//	   └───────────┴──────────────────────────┘
//
// Every kind passes through PENDING and ends in one terminal state; ASSIGNED
// (a run holding its slot) is optional, and any in-flight state may end at
// once (a run cancelled while queued, an import that fails to start). Only
// forward moves are legal, and a terminal state is final.
type opState uint8

const (
	opPending opState = iota
	opAssigned
	opExecuting
	opSuccess
	opFailed
	opCancelled
)

var opStateNames = [...]string{
	opPending:   oplog.StatusPending,
	opAssigned:  oplog.StatusAssigned,
	opExecuting: oplog.StatusExecuting,
	opSuccess:   oplog.StatusSuccess,
	opFailed:    oplog.StatusFailed,
	opCancelled: oplog.StatusCancelled,
}

// String returns the state's wire name (PENDING...).
func (s opState) String() string {
	if int(s) < len(opStateNames) {
		return opStateNames[s]
	}
	return fmt.Sprintf("opState(%d)", s)
}

func (s opState) terminal() bool { return s >= opSuccess }

// parseOpState maps a stored status to its state.
func parseOpState(s string) (opState, error) {
	for i, n := range opStateNames {
		if n == s {
			return opState(i), nil
		}
	}
	return 0, fmt.Errorf("unknown operation status %q", s)
}

// legal reports whether an operation may move from s to next.
func (s opState) legal(next opState) bool {
	return !s.terminal() && next > s
}

// transitionError is an illegal move between states.
type transitionError struct {
	op       string
	from, to opState
}

func (e *transitionError) Error() string {
	return fmt.Sprintf("operation %s cannot move from %s to %s", e.op, e.from, e.to)
}

func (e *transitionError) Unwrap() error { return errdefs.ErrFailedPrecondition }

// errOpFinished is returned by a finish after the first one has succeeded.
var errOpFinished = errdefs.FailedPrecondition("operation already finished")

// Cancellation causes of an operation's context (context.Cause).
var (
	errCancelled = errors.New("cancelled by request")
	errShutdown  = errors.New("daemon shutting down")
)

// outcome is how an operation ended: what finish records.
type outcome struct {
	state    opState // terminal
	err      string  // why it did not succeed
	result   string  // result image uuid
	tag      string  // moved to the result image
	metadata string  // the final metadata JSON; "" keeps the request echo
	cpu      float64
	rss      int64
}

func failed(msg string) outcome { return outcome{state: opFailed, err: msg} }

// op is one operation's lifecycle, shared by every kind (runs, imports):
//
//   - start (Engine.startOp) admits it: the insert counts the account's
//     operations in flight in the same statement (store.InsertOperationLimited),
//     opens its event log and runs its work with a context cancelled with a
//     cause (errCancelled, errShutdown, or a kind's own such as quotaExceeded);
//   - to moves it between in-flight states (refusing illegal moves, without a
//     write);
//   - finish ends it exactly once: the images it makes visible, its tag, its
//     terminal row (result included) and its completion event are one
//     transaction (store.FinishOperation), so they land together or not at
//     all. A finish after a successful one is refused without a write.
//
// An operation whose work commits an image finishes inside that commit when
// it has set resultOf (see Engine.recordImages); its final finish is then
// refused as a repeat.
type op struct {
	id, account, kind string
	begun             time.Time // for the completion's duration
	metadata          string    // request echo, written back unless the outcome replaces it

	st     store.Metadata
	events *eventHub
	log    *slog.Logger
	obs    Observer
	now    func() time.Time // stamps FinishedAt (the engine's clock)
	cancel context.CancelCauseFunc
	// recorded is told about the images a finish is about to make visible,
	// before its transaction commits (the engine adds them to its image
	// graph, so a client that saw the SUCCESS finds them and their whole
	// chain), and forget about them again if the transaction fails.
	recorded, forget func([]store.Image)

	// mu is held across a finish, so finishes are serialised. Lock order:
	// mu → the event log's lock → the store's writer; recorded takes
	// Engine.mu under mu alone. A commit finishes in its record step, under
	// no lock of the engine's or the layers' (a lease pins the new layer).
	mu      sync.Mutex
	state   opState
	runtime string // the run's sandbox runtime, for metrics
	// resultOf, when set, is the outcome the operation ends with if its work
	// commits an image (the top one given): the commit and the finish are
	// then one transaction.
	resultOf func(image string) outcome
	// lease, set on a worker of a cluster (cluster.go), is the claim the
	// operation runs under: its start and its finish are fenced by it.
	lease *store.Lease
	queue store.Queue
	// closing is closed when the engine closes: an outcome is then no
	// longer written again while the store is unavailable (the next
	// start's recovery fails what is left in flight).
	closing <-chan struct{}
}

type opKey struct{}

// opFrom returns the operation whose work ctx belongs to, or nil.
func opFrom(ctx context.Context) *op {
	o, _ := ctx.Value(opKey{}).(*op)
	return o
}

// opID returns the id of the operation ctx belongs to, or "": the
// "operation" attribute of log records on an operation's path.
func opID(ctx context.Context) string {
	if o := opFrom(ctx); o != nil {
		return o.id
	}
	return ""
}

// current returns the operation's state.
func (o *op) current() opState {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.state
}

// to moves the operation to the in-flight state next. An illegal move (back,
// or out of a terminal state) is refused without a write.
func (o *op) to(ctx context.Context, next opState) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lease != nil && next == opAssigned && o.state == opAssigned {
		return nil // the claim assigned it
	}
	if next.terminal() || !o.state.legal(next) {
		return &transitionError{op: o.id, from: o.state, to: next}
	}
	if o.lease != nil && next == opExecuting {
		if err := o.queue.Start(ctx, *o.lease); err != nil {
			return err
		}
	} else if err := o.st.MoveOperation(ctx, o.id, o.state.String(), next.String()); err != nil {
		return err
	}
	o.state = next
	if next == opExecuting {
		o.observer().OperationExecuting(o.kind, time.Since(o.begun))
	}
	return nil
}

// observer returns the operation's observer (none for an op built
// without one).
func (o *op) observer() Observer {
	if o.obs == nil {
		return nopObserver{}
	}
	return o.obs
}

// setRuntime notes the sandbox runtime the operation runs on.
func (o *op) setRuntime(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.runtime = name
}

// setResult makes the operation finish with f's outcome inside the
// transaction that commits its result image.
func (o *op) setResult(f func(image string) outcome) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.resultOf = f
}

func (o *op) result() func(string) outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.resultOf
}

// finish records out, with images made visible in the same transaction,
// exactly once. The first finish that commits wins; later ones return
// errOpFinished and write nothing. A failed finish leaves the operation in
// flight, so the caller can record another outcome.
func (o *op) finish(ctx context.Context, out outcome, images ...store.Image) error {
	if !out.state.terminal() {
		return fmt.Errorf("operation %s: finish with %s: %w", o.id, out.state, errdefs.ErrFailedPrecondition)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state.terminal() {
		return fmt.Errorf("operation %s (%s): %w", o.id, o.state, errOpFinished)
	}
	now := time.Now()
	c := oplog.EventDataCompletion{Status: out.state.String(), DurationMs: now.Sub(o.begun).Milliseconds()}
	if out.result != "" {
		c.ResultImageUUID = &out.result
	}
	if out.err != "" {
		c.Error = &out.err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	meta := out.metadata
	if meta == "" {
		meta = o.metadata
	}
	row := store.Operation{UUID: o.id, Account: o.account, Status: out.state.String(), Error: out.err, FinishedAt: o.finishedAt(now),
		ResultImageUUID: out.result, Metadata: meta, CPUSeconds: out.cpu, MaxRSSBytes: out.rss}
	if out.result != "" {
		row.ResultTag = out.tag
	}
	if len(images) > 0 && o.recorded != nil {
		o.recorded(images) // until the commit they only keep their ancestors from collection
	}
	err = o.events.complete(o.id, func(id int64) error {
		rec := store.Outcome{Operation: row, Images: images,
			Completion: store.Event{ID: id, TS: now, Type: oplog.EventCompletion, Data: string(data)}}
		var err error
		if o.lease != nil {
			err = o.queue.Complete(ctx, *o.lease, rec) // fenced: a lost lease publishes nothing
		} else {
			err = o.st.FinishOperation(ctx, rec)
		}
		if err == nil {
			// Before followers are woken, so a client that saw the
			// completion finds it counted.
			o.observer().OperationFinished(o.kind, out.state.String(), o.runtime, now.Sub(o.begun))
			for _, im := range images {
				o.observer().Committed(im.LayerBytes)
			}
		}
		return err
	})
	if err != nil {
		if len(images) > 0 && o.forget != nil {
			o.forget(images)
		}
		return fmt.Errorf("operation %s: record %s: %w", o.id, out.state, err)
	}
	o.state = out.state
	return nil
}

// finishedAt is when the operation finishes on the engine's clock (now,
// the real time, without one).
func (o *op) finishedAt(now time.Time) time.Time {
	if o.now == nil {
		return now
	}
	return o.now()
}

// end finishes the operation with out when its work returns, unless it has
// finished already (inside a commit). If out cannot be recorded, the
// operation still ends, FAILED with the reason; if even that fails (the
// store is gone), it stays in flight until the next start's recovery fails it.
func (o *op) end(out outcome) {
	ctx := context.Background()
	err := o.finishRetrying(ctx, out)
	switch {
	case err == nil:
		return
	case errors.Is(err, errOpFinished):
		if out.state != o.current() {
			o.log.Debug("operation finished before its work ended", "operation", o.id, "status", o.current(), "later", out.state)
		}
		return
	case o.lease != nil && errors.Is(err, errdefs.ErrFailedPrecondition):
		o.log.Warn("lease lost: the operation's outcome is not published", "operation", o.id, "status", out.state, "err", err)
		return
	}
	o.log.Error("record operation outcome", "operation", o.id, "kind", o.kind, "status", out.state, "err", err)
	msg := fmt.Sprintf("recording the outcome (%s) failed: %v", out.state, err)
	if out.err != "" {
		msg = out.err + "; " + msg
	}
	if err := o.finish(ctx, failed(msg)); err != nil && !errors.Is(err, errOpFinished) {
		o.log.Error("operation left unfinished until restart", "operation", o.id, "err", err)
	}
}

// recordRetryFor bounds how long an outcome is written again while the
// metadata store is unavailable (a PostgreSQL restart or failover): long
// enough for a managed database's failover, short enough that a shutdown
// is not held up for long.
var recordRetryFor = 3 * time.Minute

// finishRetrying is finish, tried again with backoff while the store
// answers errdefs.ErrUnavailable, so a run that ends while the database
// restarts gets its outcome written once it is back instead of staying in
// flight until the next start.
func (o *op) finishRetrying(ctx context.Context, out outcome) error {
	deadline := time.Now().Add(recordRetryFor)
	wait := 100 * time.Millisecond
	for {
		err := o.finish(ctx, out)
		if err == nil || !errors.Is(err, errdefs.ErrUnavailable) || time.Now().After(deadline) {
			return err
		}
		if wait == 100*time.Millisecond {
			o.log.Warn("operation outcome not recorded yet: the metadata store is unavailable; retrying", "operation", o.id, "status", out.state, "retry_for", recordRetryFor, "err", err)
		}
		select {
		case <-o.closing: // a nil channel (an op made in a test) never is
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// causeOutcome is the outcome a cancellation cause of ctx dictates, if any:
// a cancelled operation is CANCELLED whatever error its teardown produced.
// what names the kind ("run", "import") in messages.
func causeOutcome(ctx context.Context, what string) (outcome, bool) {
	switch context.Cause(ctx) {
	case errCancelled:
		return outcome{state: opCancelled, err: "cancelled by request"}, true
	case errShutdown:
		return failed("daemon shut down during the " + what + "; run it again"), true
	}
	return outcome{}, false
}

// startOp admits the operation row (PENDING) and runs work in the
// background with a context cancellable with a cause. The outcome work
// returns finishes the operation unless it finished already.
func (e *Engine) startOp(ctx context.Context, row store.Operation, work func(ctx context.Context, o *op) outcome) error {
	select {
	case <-e.closed:
		return errdefs.Unavailable("daemon is shutting down")
	default:
	}
	if err := e.admitting(); err != nil {
		return err
	}
	if row.Status != oplog.StatusPending {
		return fmt.Errorf("operation %s starts as %s: %w", row.UUID, row.Status, errdefs.ErrFailedPrecondition)
	}
	if e.cl != nil {
		// Run here: no worker claims it, and only this node's restart fails it.
		if err := e.cl.store.InsertLocal(ctx, row, e.cfg.MaxConcurrentOps, e.cl.cfg.Node); err != nil {
			return err
		}
	} else if err := e.st.InsertOperationLimited(ctx, row, e.cfg.MaxConcurrentOps); err != nil {
		return err
	}
	e.launch(e.newOp(row), 0, work)
	return nil
}

// launch runs an admitted operation's work in the background, its event
// log's next ID being next.
func (e *Engine) launch(o *op, next int64, work func(ctx context.Context, o *op) outcome) {
	opCtx, cancel := context.WithCancelCause(context.WithValue(context.Background(), opKey{}, o))
	o.cancel = cancel
	o.begun = time.Now()
	e.mu.Lock()
	e.active[o.id] = &activeOp{op: o, running: make(chan struct{}), procs: map[int]*proc{}, nextSpid: 2}
	e.mu.Unlock()
	e.events.open(o.id, next)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer func() {
			e.mu.Lock()
			delete(e.active, o.id)
			e.drainedLocked()
			e.mu.Unlock()
			e.endPreviews(o.id)
			e.events.close(o.id)
			cancel(nil)
			if e.cl != nil {
				e.cl.released(o.id)
			}
		}()
		o.end(work(opCtx, o))
	}()
}

// newOp returns the lifecycle of a stored operation row.
func (e *Engine) newOp(row store.Operation) *op {
	state, err := parseOpState(row.Status)
	if err != nil {
		// A row this arbor did not write: treat it as in flight.
		e.log.Warn("operation with an unknown status", "operation", row.UUID, "status", row.Status)
	}
	return &op{id: row.UUID, account: row.Account, kind: row.Kind, begun: row.CreatedAt,
		metadata: row.Metadata, st: e.st, events: e.events, log: e.log, obs: e.cfg.Observer, cancel: func(error) {}, now: e.now,
		recorded: e.addImages, forget: e.forgetImages, state: state, closing: e.closed}
}

// recordImages makes image rows visible: with the outcome of the operation
// ctx belongs to, when that operation wants to finish with its result
// image (the last row), else on their own. Either way in one transaction.
func (e *Engine) recordImages(ctx context.Context, rows ...store.Image) error {
	if o := opFrom(ctx); o != nil {
		if f := o.result(); f != nil {
			err := o.finish(ctx, f(rows[len(rows)-1].UUID), rows...)
			if err != nil {
				// The operation fails with this error; the images stay invisible.
				e.log.Warn("commit an operation's result", "operation", o.id, "image", rows[len(rows)-1].UUID, "err", err)
			}
			return err
		}
	}
	if err := e.st.InsertImages(ctx, rows...); err != nil {
		return err
	}
	for _, im := range rows {
		e.cfg.Observer.Committed(im.LayerBytes)
	}
	e.addImages(rows)
	return nil
}

// addImages adds recorded image rows to the image graph.
func (e *Engine) addImages(rows []store.Image) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range rows {
		e.images[r.UUID] = newImageNode(r)
	}
}

// forgetImages takes image rows that were never committed out of the graph.
func (e *Engine) forgetImages(rows []store.Image) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range rows {
		delete(e.images, r.UUID)
	}
}

// finishInterrupted fails an operation found unfinished at start-up.
func (e *Engine) finishInterrupted(ctx context.Context, row store.Operation) error {
	msg := "daemon restarted while the operation was " + strings.ToLower(row.Status) + "; nothing was saved: run it again"
	return e.newOp(row).finish(ctx, failed(msg))
}
