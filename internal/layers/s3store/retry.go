package s3store

import (
	"context"
	"errors"
	"time"

	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// DefaultRetryFor is how long a commit's requests are retried while S3 is
// unavailable, unless Config.RetryFor says otherwise: a server restart or
// a load balancer's hiccup passes within it, and a run's commit waits that
// long at most before it fails naming the bucket.
const DefaultRetryFor = 30 * time.Second

// retry runs call until it succeeds, fails for another reason than S3
// being unreachable or answering 5xx, or s.retryFor has passed; it waits
// with backoff in between. what names the request in the log.
func (s *Store) retry(ctx context.Context, what string, call func(attempt int) error) error {
	deadline := time.Now().Add(s.retryFor)
	wait := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := call(attempt)
		if err == nil || !unreachable(err) || time.Now().Add(wait).After(deadline) {
			return err
		}
		if attempt == 1 {
			s.log.Warn("layer storage unavailable; retrying", "blobs", s.url, "request", what, "retry_for", s.retryFor, "err", err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// unreachable reports whether err says S3 could not be reached or failed
// (as s3Error classes ErrUnavailable), not that it refused the request.
func unreachable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var re *smithyhttp.ResponseError
	return !errors.As(err, &re) || re.HTTPStatusCode() == 0 || re.HTTPStatusCode() >= 500
}
