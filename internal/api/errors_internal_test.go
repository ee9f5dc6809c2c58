package api

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/arborsh/arbor/internal/errdefs"
)

// TestErrorStatuses: each error class answers its status, and only what a
// client may replay soon carries Retry-After. A used-up storage quota is
// a 403 without it: the ConTree clients replay 429s, whole uploads
// included, and waiting frees no storage.
func TestErrorStatuses(t *testing.T) {
	s := &server{log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		err        error
		status     int
		retryAfter bool
	}{
		{errdefs.Forbidden("account storage quota reached"), http.StatusForbidden, false},
		{errdefs.ResourceExhausted("account has 64 operations in flight"), http.StatusTooManyRequests, true},
		{errdefs.InsufficientStorage("disk full"), http.StatusInsufficientStorage, false},
		{errdefs.TooEarly("not started"), http.StatusTooEarly, true},
		{errdefs.Unavailable("stopping"), http.StatusServiceUnavailable, true},
		{errdefs.NotFound("no such image"), http.StatusNotFound, false},
	} {
		w := httptest.NewRecorder()
		s.writeError(w, httptest.NewRequest(http.MethodPost, "/v1/files", nil), tc.err)
		if w.Code != tc.status || (w.Header().Get("Retry-After") != "") != tc.retryAfter {
			t.Errorf("%v: status %d, Retry-After %q; want %d, Retry-After %v", tc.err, w.Code, w.Header().Get("Retry-After"), tc.status, tc.retryAfter)
		}
	}
}
