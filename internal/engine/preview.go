package engine

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/initproc"
	"github.com/arborsh/arbor/internal/runtime"
)

// Port previews: the daemon proxies a URL to a TCP port inside a running
// instance. It reaches the port through a relay it execs into the sandbox
// (initproc.RelayMode) whose stdin and stdout carry a yamux session, one
// stream per connection: the sandbox needs no network device, and nothing
// outside it can reach the port. One relay serves every preview of a run;
// it starts with the first connection and ends with the run, or when the
// last preview is removed.

// Preview bounds.
const (
	DefaultPreviewTTL = time.Hour
	MaxPreviewTTL     = 24 * time.Hour
	// MaxPreviewConns bounds the connections open at once through one
	// preview (each is a stream of the run's relay).
	MaxPreviewConns = 64
)

// previewKeyFile holds the daemon's secret for signed preview links.
const previewKeyFile = "preview.key"

// Preview is an exposed port of a running instance and, when it was just
// created or extended, a signed link to it.
type Preview struct {
	Operation string
	Port      int
	ExpiresAt time.Time // the latest link's expiry: the exposure ends then
	// Token is the signed link's token (only from Expose): it admits to
	// this port of this operation until Expires, and not after the port is
	// unexposed or the instance ends.
	Token string
	// Path is where the daemon serves the preview (only from Expose).
	Path string
}

// previewHub holds the exposed ports of running instances; its zero value
// is ready (the secret is read or made on first use).
type previewHub struct {
	mu     sync.Mutex
	secret []byte
	ops    map[string]*opPreviews // operation uuid → its previews
}

type opPreviews struct {
	account string
	ports   map[int]*exposure
	relay   *relayProc    // the run's relay, once started
	start   chan struct{} // closed when a relay start in progress, or a hold, ends
}

// relayProc is a relay running in a sandbox and the engine's session to it.
type relayProc struct {
	sess *yamux.Session
	gone chan struct{} // closed once the relay has exited; then why says how
	why  string
}

// ended says why the relay ended, if it has (waiting briefly: a session
// breaks a moment before the runtime reports the exit).
func (r *relayProc) ended() string {
	select {
	case <-r.gone:
		return r.why
	case <-time.After(time.Second):
		return "it is still running"
	}
}

type exposure struct {
	nonce   [16]byte // new per exposure: links of an earlier one stay dead
	expires time.Time
	conns   atomic.Int32
}

// PreviewPath is the URL path of port on op with token (see Expose).
func PreviewPath(op string, port int, token string) string {
	return fmt.Sprintf("/preview/%s/%d/%s/", op, port, token)
}

func (e *Engine) previewSecret() ([]byte, error) {
	h := &e.previews
	if h.secret != nil {
		return h.secret, nil
	}
	p := filepath.Join(e.cfg.Home, previewKeyFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		b = make([]byte, 32)
		_, _ = rand.Read(b)
		if err = os.WriteFile(p, b, 0o600); err != nil {
			return nil, fmt.Errorf("preview key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("preview key: %w", err)
	}
	if len(b) < 32 {
		return nil, errdefs.FailedPrecondition("preview key %s is shorter than 32 bytes: delete it and the daemon makes a new one", p)
	}
	h.secret = b
	return b, nil
}

// sign returns the MAC of a link to op's port expiring at exp.
func sign(secret []byte, op string, port int, x *exposure, exp int64) string {
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "arbor-preview\x00%s\x00%d\x00%d\x00", op, port, exp)
	m.Write(x.nonce[:])
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}

// Expose exposes port of running instance op for ttl (0: an hour) and
// returns a signed link to it. Exposing an exposed port again returns a
// further link and keeps the earlier ones valid.
func (e *Engine) Expose(ctx context.Context, account, op string, port int, ttl time.Duration) (Preview, error) {
	if port < 1 || port > 65535 {
		return Preview{}, errdefs.InvalidArgument("port %d: give a TCP port from 1 to 65535", port)
	}
	if ttl == 0 {
		ttl = DefaultPreviewTTL
	}
	if ttl < time.Second || ttl > MaxPreviewTTL {
		return Preview{}, errdefs.InvalidArgument("ttl %v: give 1 s to %v", ttl, MaxPreviewTTL)
	}
	if e.initBin == "" {
		return Preview{}, errdefs.FailedPrecondition("port previews need arbor's static init binary, which this daemon lacks: build arbor with CGO_ENABLED=0 (scripts/setup.sh does) or install a static arbor-init beside it")
	}
	a, err := e.runningOp(ctx, account, op)
	if err != nil {
		return Preview{}, err
	}
	h := &e.previews
	h.mu.Lock()
	defer h.mu.Unlock()
	secret, err := e.previewSecret()
	if err != nil {
		return Preview{}, err
	}
	if e.activeOf(a.id) == nil {
		return Preview{}, errdefs.Conflict("operation %s has ended", a.id)
	}
	if h.ops == nil {
		h.ops = map[string]*opPreviews{}
	}
	o := h.ops[a.id]
	if o == nil {
		o = &opPreviews{account: a.account, ports: map[int]*exposure{}}
		h.ops[a.id] = o
	}
	x := o.ports[port]
	if x == nil {
		x = &exposure{}
		_, _ = rand.Read(x.nonce[:])
		o.ports[port] = x
	}
	exp := time.Now().Add(ttl).Truncate(time.Second).Add(time.Second)
	if exp.After(x.expires) {
		x.expires = exp
	}
	tok := strconv.FormatInt(exp.Unix(), 10) + "." + sign(secret, a.id, port, x, exp.Unix())
	return Preview{Operation: a.id, Port: port, ExpiresAt: x.expires, Token: tok, Path: PreviewPath(a.id, port, tok)}, nil
}

// Unexpose ends the preview of port on op: its links stop working and its
// open connections are cut once the last preview of the run is gone.
func (e *Engine) Unexpose(ctx context.Context, account, op string, port int) error {
	o, err := e.Operation(ctx, account, op)
	if err != nil {
		return err
	}
	h := &e.previews
	h.mu.Lock()
	defer h.mu.Unlock()
	ps := h.ops[o.UUID]
	if ps == nil || ps.ports[port] == nil {
		return errdefs.NotFound("operation %s has no preview of port %d", o.UUID, port)
	}
	delete(ps.ports, port)
	if len(ps.ports) == 0 {
		e.dropPreviewsLocked(o.UUID)
	}
	return nil
}

// Previews lists the exposed ports of op (without links).
func (e *Engine) Previews(ctx context.Context, account, op string) ([]Preview, error) {
	o, err := e.Operation(ctx, account, op)
	if err != nil {
		return nil, err
	}
	h := &e.previews
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Preview
	if ps := h.ops[o.UUID]; ps != nil {
		now := time.Now()
		for port, x := range ps.ports {
			if x.expires.After(now) {
				out = append(out, Preview{Operation: o.UUID, Port: port, ExpiresAt: x.expires})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out, nil
}

// endPreviews drops op's previews and stops its relay: the run ended.
func (e *Engine) endPreviews(op string) {
	e.previews.mu.Lock()
	defer e.previews.mu.Unlock()
	e.dropPreviewsLocked(op)
}

func (e *Engine) dropPreviewsLocked(op string) {
	h := &e.previews
	if ps := h.ops[op]; ps != nil {
		if ps.relay != nil {
			ps.relay.sess.Close() // the relay reads EOF and exits
		}
		delete(h.ops, op)
	}
}

// exposed returns the live exposure of port on op, if any.
func (e *Engine) exposedLocked(op string, port int) (*opPreviews, *exposure) {
	ps := e.previews.ops[op]
	if ps == nil {
		return nil, nil
	}
	x := ps.ports[port]
	if x == nil || !x.expires.After(time.Now()) {
		return nil, nil
	}
	return ps, x
}

// AuthorizePreview checks a request for port of op: with a signed link's
// token, or else (token "") as account, which must own op. It fails with
// errdefs.ErrForbidden for a forged, expired or revoked link, a foreign
// account, or a port not exposed (or a run that ended).
func (e *Engine) AuthorizePreview(op string, port int, token, account string) error {
	h := &e.previews
	h.mu.Lock()
	defer h.mu.Unlock()
	ps, x := e.exposedLocked(op, port)
	if x == nil {
		return errdefs.Forbidden("no preview of port %d of operation %s: it was never exposed, has expired, was removed, or the instance ended (expose it again)", port, op)
	}
	if token == "" {
		if account != ps.account {
			return errdefs.Forbidden("operation %s belongs to another account", op)
		}
		return nil
	}
	secret, err := e.previewSecret()
	if err != nil {
		return err
	}
	expS, mac, ok := strings.Cut(token, ".")
	exp, err := strconv.ParseInt(expS, 10, 64)
	if !ok || err != nil || !hmac.Equal([]byte(mac), []byte(sign(secret, op, port, x, exp))) {
		return errdefs.Forbidden("this preview link is not valid for port %d of operation %s", port, op)
	}
	if time.Now().Unix() >= exp {
		return errdefs.Forbidden("this preview link expired at %s: expose the port again for a new one", time.Unix(exp, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// DialPreview connects to port inside running instance op, through its
// relay, for the proxy (which has authorized the request). A port nothing
// listens on fails with errdefs.ErrUnavailable naming it.
func (e *Engine) DialPreview(ctx context.Context, op string, port int) (net.Conn, error) {
	h := &e.previews
	h.mu.Lock()
	ps, x := e.exposedLocked(op, port)
	if x == nil {
		h.mu.Unlock()
		return nil, errdefs.Forbidden("port %d of operation %s is not exposed", port, op)
	}
	if n := x.conns.Add(1); n > MaxPreviewConns {
		x.conns.Add(-1)
		h.mu.Unlock()
		return nil, errdefs.ResourceExhausted("the preview of port %d already has %d connections open (limit %d)", port, n-1, MaxPreviewConns)
	}
	h.mu.Unlock()
	c, err := e.dialRelay(ctx, op, ps, port)
	if err != nil {
		x.conns.Add(-1)
		return nil, err
	}
	return &previewConn{Conn: c, release: func() { x.conns.Add(-1) }}, nil
}

type previewConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *previewConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// CloseWrite half-closes, as the proxy does at the end of a request body
// on an upgraded connection.
func (c *previewConn) CloseWrite() error { return c.Conn.Close() }

func (e *Engine) dialRelay(ctx context.Context, op string, ps *opPreviews, port int) (net.Conn, error) {
	r, err := e.relay(ctx, op, ps)
	if err != nil {
		return nil, err
	}
	st, err := r.sess.OpenStream()
	if err != nil {
		return nil, errdefs.Unavailable("preview of operation %s: the relay in the sandbox is gone (%s): %v", op, r.ended(), err)
	}
	var hdr [2]byte
	binary.BigEndian.PutUint16(hdr[:], uint16(port))
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	} else {
		_ = st.SetDeadline(time.Now().Add(30 * time.Second))
	}
	var status [2]byte
	if _, err = st.Write(hdr[:]); err == nil {
		_, err = io.ReadFull(st, status[:1])
	}
	if err != nil {
		st.Close()
		return nil, errdefs.Unavailable("preview of operation %s: the relay did not answer (%s): %v", op, r.ended(), err)
	}
	if status[0] != initproc.RelayConnected {
		msg := "it did not say why"
		if _, err := io.ReadFull(st, status[1:]); err == nil {
			b := make([]byte, status[1])
			if _, err := io.ReadFull(st, b); err == nil {
				msg = strings.ToValidUTF8(string(b), "?")
			}
		}
		st.Close()
		return nil, errdefs.Unavailable("nothing listens on port %d inside the sandbox of operation %s (%s): start a server on 127.0.0.1:%d or 0.0.0.0:%d there", port, op, msg, port, port)
	}
	_ = st.SetDeadline(time.Time{})
	return st, nil
}

// relay returns the run's relay, starting one if none runs.
func (e *Engine) relay(ctx context.Context, op string, ps *opPreviews) (*relayProc, error) {
	h := &e.previews
	for {
		h.mu.Lock()
		if h.ops[op] != ps {
			h.mu.Unlock()
			return nil, errdefs.Forbidden("the previews of operation %s were removed", op)
		}
		if r := ps.relay; r != nil && !r.sess.IsClosed() {
			h.mu.Unlock()
			return r, nil
		}
		if wait := ps.start; wait != nil {
			h.mu.Unlock()
			if err := waitOrDone(ctx, wait); err != nil {
				return nil, err
			}
			continue
		}
		done := make(chan struct{})
		ps.start = done
		h.mu.Unlock()
		r, err := e.startRelay(ctx, op)
		h.mu.Lock()
		ps.start = nil
		close(done)
		if err == nil {
			if h.ops[op] != ps { // removed meanwhile
				r.sess.Close()
				r, err = nil, errdefs.Forbidden("the previews of operation %s were removed", op)
			} else {
				ps.relay = r
			}
		}
		h.mu.Unlock()
		return r, err
	}
}

// holdRelay stops op's relay, if one runs, and keeps another from
// starting until the returned function is called: Fork's checkpoint
// cannot save a process mapped from a host file, as the relay is (it runs
// from the daemon's binary, handed over as a descriptor). Connections
// through op's previews are cut; later ones start a new relay.
func (e *Engine) holdRelay(ctx context.Context, op string) func() {
	h := &e.previews
	for {
		h.mu.Lock()
		if h.ops == nil {
			h.ops = map[string]*opPreviews{}
		}
		ps := h.ops[op]
		if ps == nil { // none yet: an expose during the hold waits too
			a := e.activeOf(op)
			if a == nil { // ended: nothing to hold
				h.mu.Unlock()
				return func() {}
			}
			ps = &opPreviews{account: a.account, ports: map[int]*exposure{}}
			h.ops[op] = ps
		}
		if wait := ps.start; wait != nil {
			h.mu.Unlock()
			if waitOrDone(ctx, wait) != nil {
				return func() {}
			}
			continue
		}
		done := make(chan struct{})
		ps.start = done
		r := ps.relay
		ps.relay = nil
		h.mu.Unlock()
		if r != nil {
			r.sess.Close()
			_ = waitOrDone(ctx, r.gone)
		}
		return func() {
			h.mu.Lock()
			ps.start = nil
			close(done)
			h.mu.Unlock()
		}
	}
}

// waitOrDone waits until ch is closed or ctx ends.
func waitOrDone(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startRelay execs the relay into op's sandbox and opens its session.
func (e *Engine) startRelay(ctx context.Context, op string) (*relayProc, error) {
	// An instance that has ended (its previews are being dropped: the
	// result can be out before the clean-up) answers as a dead link does.
	a := e.activeOf(op)
	if a == nil {
		return nil, errdefs.Forbidden("operation %s has ended: its previews ended with it (expose a port of a running instance)", op)
	}
	a.mu.Lock()
	sb := a.sandbox
	a.mu.Unlock()
	if sb == nil {
		return nil, errdefs.Forbidden("operation %s: the instance's main process has exited, and its previews with it", op)
	}
	if err := sb.rt.WaitRunning(ctx, sb.cid); err != nil {
		return nil, errdefs.Conflict("operation %s: %v", op, err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	started := make(chan error, 1)
	r := &relayProc{gone: make(chan struct{})}
	stderr := &tailWriter{max: 4 << 10}
	go func() {
		defer close(r.gone)
		res, err := sb.rt.Exec(e.ctx, sb.cid, runtime.ExecSpec{
			Args: []string{"arbor-relay"}, InitBinary: e.initBin, InitMode: []string{initproc.RelayMode},
			Stdin: inR, Stdout: outW, Stderr: stderr,
			OnStart: func(int) { started <- nil },
		})
		inR.Close()
		outW.Close()
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("exit %d: %s", res.ExitCode, stderr.String())
		}
		r.why = "it exited"
		if err != nil {
			r.why = err.Error()
			e.log.Debug("preview relay ended", "operation", op, "err", err)
		}
		// The relay is gone (or never started): end the session, so the
		// next connection starts another while the run lasts.
		inW.Close()
		outR.Close()
		started <- err
	}()
	if err := <-started; err != nil {
		return nil, errdefs.Unavailable("operation %s: the preview relay did not start: %v", op, err)
	}
	if r.sess, err = yamux.Client(pipeConn{outR, inW}, initproc.RelayConfig()); err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	return r, nil
}

// pipeConn is the engine's end of the relay's stdio.
type pipeConn struct {
	r *os.File
	w *os.File
}

func (p pipeConn) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p pipeConn) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p pipeConn) Close() error {
	p.w.Close()
	return p.r.Close()
}

// tailWriter keeps the first max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if room := t.max - len(t.b); room > 0 {
		t.b = append(t.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
