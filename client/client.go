// Package client is the Go client of arbor's HTTP API v1 (ConTree-compatible,
// plus arbor's extensions). arbor's CLI and MCP server talk to the daemon
// only through it.
//
// Every method takes a context first. Failures the server reports are
// [*Error] values (test them with [IsNotFound], [IsConflict], ...); a daemon
// that cannot be reached yields an error wrapping [ErrUnreachable]. Requests
// answered 425, 429 or 503 are retried, honouring Retry-After, a bounded
// number of times ([WithRetries]).
//
// [Discover] finds the local daemon and its token without any configuration.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Client talks to one arbor server. It is safe for concurrent use.
type Client struct {
	base    string // scheme://host[/prefix], without /v1 and trailing slash
	token   string
	hc      *http.Client
	ua      string
	retries int
	maxWait time.Duration
}

// Option configures a Client.
type Option func(*Client) error

// WithHTTPClient makes the client send requests through hc. Its redirect
// policy is replaced (find-by-tag reads its 302 itself); its Timeout should
// be zero, or it also cuts long event streams and downloads: use contexts.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return errors.New("client: WithHTTPClient(nil)")
		}
		cp := *hc
		c.hc = &cp
		return nil
	}
}

// WithUserAgent prefixes the User-Agent with an application identity.
func WithUserAgent(app string) Option {
	return func(c *Client) error {
		c.ua = strings.TrimSpace(app) + " " + c.ua
		return nil
	}
}

// WithRetries sets how often a request answered 425, 429 or 503 is retried
// (default 5) and the longest wait between two attempts, which also bounds
// the pause before an event stream reconnects (default 10 s); n = 0
// disables retries.
func WithRetries(n int, maxWait time.Duration) Option {
	return func(c *Client) error {
		if n < 0 || maxWait < 0 {
			return errors.New("client: WithRetries needs n >= 0 and maxWait >= 0")
		}
		c.retries, c.maxWait = n, maxWait
		return nil
	}
}

// New returns a client for the server at baseURL (which may carry a path
// prefix; a trailing /v1 is accepted) authenticating with token.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q must look like http://127.0.0.1:7777", baseURL)
	}
	u.RawQuery, u.Fragment = "", ""
	base := strings.TrimSuffix(strings.TrimRight(u.String(), "/"), "/v1")
	c := &Client{
		base:    base,
		token:   strings.TrimSpace(token),
		hc:      &http.Client{},
		ua:      "arbor-client-go Go/" + runtime.Version(),
		retries: 5,
		maxWait: 10 * time.Second,
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	c.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, nil
}

// BaseURL returns the server URL the client talks to (without /v1).
func (c *Client) BaseURL() string { return c.base }

// request describes one API call.
type request struct {
	method string
	path   string // after /v1, already escaped
	query  url.Values
	json   any       // JSON body, if non-nil
	raw    io.Reader // raw body (uploads), if non-nil
	header http.Header
	// redirect accepts a 3xx answer instead of treating it as an error.
	redirect bool
}

// errNotReplayable stops retries of a request whose body was consumed.
var errNotReplayable = errors.New("request body cannot be sent again")

// bodyFunc returns a function giving a fresh body for each attempt.
func (r *request) bodyFunc() (func(attempt int) (io.Reader, int64, error), error) {
	switch {
	case r.json != nil:
		b, err := json.Marshal(r.json)
		if err != nil {
			return nil, fmt.Errorf("client: encode request: %w", err)
		}
		return func(int) (io.Reader, int64, error) { return bytes.NewReader(b), int64(len(b)), nil }, nil
	case r.raw != nil:
		size := int64(-1)
		seeker, _ := r.raw.(io.Seeker)
		var start int64
		if seeker != nil {
			var err error
			if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
				seeker = nil
			} else if end, err := seeker.Seek(0, io.SeekEnd); err == nil {
				size = end - start
				if _, err := seeker.Seek(start, io.SeekStart); err != nil {
					return nil, err
				}
			}
		}
		return func(attempt int) (io.Reader, int64, error) {
			if attempt > 0 {
				if seeker == nil {
					return nil, 0, errNotReplayable
				}
				if _, err := seeker.Seek(start, io.SeekStart); err != nil {
					return nil, 0, errNotReplayable
				}
			}
			// NopCloser: the transport closes request bodies, and a closed
			// file could not be rewound for the next attempt.
			return io.NopCloser(r.raw), size, nil
		}, nil
	}
	return func(int) (io.Reader, int64, error) { return nil, 0, nil }, nil
}

// send performs req, retrying 425/429/503 answers, and returns a response
// with a 2xx status (or 3xx if req.redirect) whose body the caller closes.
// Any other status becomes an *Error.
func (c *Client) send(ctx context.Context, req request) (*http.Response, error) {
	u := c.base + "/v1" + req.path
	if len(req.query) > 0 {
		u += "?" + req.query.Encode()
	}
	body, err := req.bodyFunc()
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		rd, size, err := body(attempt)
		if err != nil {
			return nil, err
		}
		hr, err := http.NewRequestWithContext(ctx, req.method, u, rd)
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		if rd != nil {
			hr.ContentLength = size // -1: chunked
			if size == 0 {
				hr.Body = http.NoBody
			}
		}
		for k, vs := range req.header {
			hr.Header[k] = vs
		}
		if req.json != nil {
			hr.Header.Set("Content-Type", "application/json")
		} else if req.raw != nil {
			hr.Header.Set("Content-Type", "application/octet-stream")
		}
		if c.token != "" {
			hr.Header.Set("Authorization", "Bearer "+c.token)
		}
		hr.Header.Set("User-Agent", c.ua)
		resp, err := c.hc.Do(hr)
		if err != nil {
			return nil, c.transportError(ctx, err)
		}
		if resp.StatusCode/100 == 2 || (req.redirect && resp.StatusCode/100 == 3) {
			return resp, nil
		}
		apiErr := readError(resp)
		if !retryable(resp.StatusCode) || attempt >= c.retries {
			return nil, apiErr
		}
		if err := c.pause(ctx, retryAfter(resp.Header.Get("Retry-After"), attempt)); err != nil {
			return nil, err
		}
		if _, _, err := body(attempt + 1); errors.Is(err, errNotReplayable) {
			return nil, apiErr
		}
	}
}

// do performs req and decodes a JSON answer into out (unless out is nil).
func (c *Client) do(ctx context.Context, req request, out any) error {
	resp, err := c.send(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: decode %s %s answer: %w", req.method, req.path, err)
	}
	return nil
}

// retryable reports whether the server promised the request was not
// processed, so it can be replayed (ConTree's 425/429 contract; 503 is a
// daemon starting or stopping).
func retryable(status int) bool {
	return status == http.StatusTooEarly || status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
}

// backoff is the wait between attempts when the server gives no Retry-After.
var backoff = []time.Duration{200 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second}

// retryAfter parses a Retry-After value (delta-seconds or an HTTP date).
func retryAfter(v string, attempt int) time.Duration {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 {
		return time.Duration(n * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return backoff[min(attempt, len(backoff)-1)]
}

// pause waits d, at most the client's maxWait, or until ctx ends.
func (c *Client) pause(ctx context.Context, d time.Duration) error {
	if c.maxWait > 0 {
		d = min(d, c.maxWait)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ErrUnreachable is wrapped by errors that mean no arbor daemon answered.
var ErrUnreachable = errors.New("arbor daemon not reachable")

// transportError explains a request that got no HTTP answer.
func (c *Client) transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var dnsErr *net.DNSError
	var opErr *net.OpError
	if errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &dnsErr) || (errors.As(err, &opErr) && opErr.Op == "dial") {
		return fmt.Errorf("%w at %s: %v: is the daemon running? start it with `arbor serve`", ErrUnreachable, c.base, err)
	}
	return fmt.Errorf("client: request to %s failed: %w", c.base, err)
}

// Error is an error answer from the server.
type Error struct {
	Status    int    // HTTP status
	Message   string // the server's "error" text
	RequestID string // X-Request-ID of the answer, for the daemon log
}

func (e *Error) Error() string {
	return fmt.Sprintf("arbor: %s (HTTP %d %s)", e.Message, e.Status, http.StatusText(e.Status))
}

// readError turns a non-success response into an *Error and closes it.
// JSON bodies give their "error" field; other bodies are taken as text.
func readError(resp *http.Response) *Error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &Error{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-ID")}
	var body struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(b, &body) == nil && len(body.Error) > 0 {
		var s string
		if json.Unmarshal(body.Error, &s) == nil {
			e.Message = s
		} else {
			e.Message = string(body.Error)
		}
	} else {
		e.Message = strings.TrimSpace(string(b))
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// StatusCode returns the HTTP status of an *Error in err's chain, or 0.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// IsBadRequest reports whether err is a 400 answer (invalid input).
func IsBadRequest(err error) bool { return StatusCode(err) == http.StatusBadRequest }

// IsUnauthorized reports whether err is a 401 answer (missing or bad token).
func IsUnauthorized(err error) bool { return StatusCode(err) == http.StatusUnauthorized }

// IsForbidden reports whether err is a 403 answer.
func IsForbidden(err error) bool { return StatusCode(err) == http.StatusForbidden }

// IsNotFound reports whether err is a 404 answer.
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

// IsConflict reports whether err is a 409 answer (e.g. cancelling a finished operation).
func IsConflict(err error) bool { return StatusCode(err) == http.StatusConflict }

// IsTooLarge reports whether err is a 413 answer.
func IsTooLarge(err error) bool { return StatusCode(err) == http.StatusRequestEntityTooLarge }

// IsTooEarly reports whether err is a 425 answer that outlived the retries.
func IsTooEarly(err error) bool { return StatusCode(err) == http.StatusTooEarly }

// IsRateLimited reports whether err is a 429 answer (a per-account limit).
func IsRateLimited(err error) bool { return StatusCode(err) == http.StatusTooManyRequests }

// IsUnavailable reports whether err is a 503 answer or an unreachable daemon.
func IsUnavailable(err error) bool {
	return StatusCode(err) == http.StatusServiceUnavailable || errors.Is(err, ErrUnreachable)
}
