package api

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/arborsh/arbor/internal/errdefs"
)

// rateLimits holds one token bucket per token (by token UUID), so one
// busy client cannot starve the others of the daemon.
type rateLimits struct {
	limit rate.Limit
	burst int

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

// maxIdleLimiters bounds the map: past it, limiters that are full again
// (their token has been quiet) are dropped, which forgets nothing.
const maxIdleLimiters = 4096

func newRateLimits(perSecond float64, burst int) *rateLimits {
	if perSecond <= 0 {
		return nil
	}
	if burst <= 0 {
		burst = max(1, int(math.Ceil(2*perSecond)))
	}
	return &rateLimits{limit: rate.Limit(perSecond), burst: burst, limiters: map[string]*rate.Limiter{}}
}

// reserve takes one request from key's bucket, or says how long until one
// is there (the request is then not counted).
func (l *rateLimits) reserve(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.limiters[key]
	if lim == nil {
		if len(l.limiters) >= maxIdleLimiters {
			for k, o := range l.limiters {
				if o.TokensAt(now) >= float64(l.burst) {
					delete(l.limiters, k)
				}
			}
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.limiters[key] = lim
	}
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// rateLimit answers 429 with Retry-After when the request's token is over
// its rate. It runs after authenticate.
func (s *server) rateLimit(next http.Handler) http.Handler {
	if s.limits == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := s.limits.reserve(tokenOf(r).UUID, time.Now()); d > 0 {
			secs := int(math.Ceil(d.Seconds()))
			s.writeError(w, r, &retryAfterError{after: secs, err: errdefs.ResourceExhausted(
				"rate limit: this token may make %s requests per second (bursts of %d); retry after %ds, or ask the operator to raise arbor serve --rate-limit/--rate-burst",
				strconv.FormatFloat(float64(s.limits.limit), 'f', -1, 64), s.limits.burst, secs)})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// retryAfterError tells writeError the Retry-After to send (seconds).
type retryAfterError struct {
	after int
	err   error
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }
