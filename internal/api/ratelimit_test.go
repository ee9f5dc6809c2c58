package api_test

import (
	"net/http"
	"testing"

	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// TestRateLimitPerToken: past its burst a token gets 429 with a
// Retry-After of when its next request is allowed, and a message naming
// the limit and how to raise it; another token is not held back.
func TestRateLimitPerToken(t *testing.T) {
	d := wrap(testdaemon.New(t, testdaemon.Options{API: api.Options{RateLimit: 0.25, RateBurst: 3}}))
	for range 3 {
		r := d.send(t, http.MethodGet, "/v1/images", "")
		wantStatus(t, r, http.StatusOK)
	}
	r := d.send(t, http.MethodGet, "/v1/images", "")
	wantError(t, r, http.StatusTooManyRequests, "rate limit: this token may make 0.25 requests per second (bursts of 3)")
	wantError(t, r, http.StatusTooManyRequests, "--rate-limit")
	if got := r.Header.Get("Retry-After"); got != "4" {
		t.Errorf("Retry-After = %q, want 4 (one request every 4 s)", got)
	}
	_, other, err := d.e.CreateToken(ctxT(t), engine.DefaultAccount, "other", 0)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, do(t, http.MethodGet, d.srv.URL+"/v1/images", other, nil), http.StatusOK)
	// Unauthenticated routes are not limited.
	wantStatus(t, do(t, http.MethodGet, d.srv.URL+"/v1/openapi.json", "", nil), http.StatusOK)
}
