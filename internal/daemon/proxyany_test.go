package daemon

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestProxyAnyBodyBound: a body proxyAny keeps for a retry is forwarded
// whole up to maxForwardBody, and one over it is refused with 413, never
// forwarded cut.
func TestProxyAnyBodyBound(t *testing.T) {
	var got []int
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, len(b))
	}))
	defer worker.Close()
	c := &clusterHTTP{transport: &http.Transport{}, log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		size, wantCode int
		forwarded      bool
	}{
		{maxForwardBody, http.StatusOK, true},
		{maxForwardBody + 1, http.StatusRequestEntityTooLarge, false},
	} {
		got = nil
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/images/x/restore", strings.NewReader(strings.Repeat("a", tc.size)))
		c.proxyAny(rec, r, []string{worker.URL})
		if rec.Code != tc.wantCode {
			t.Errorf("body of %d bytes: %d, want %d", tc.size, rec.Code, tc.wantCode)
		}
		if tc.forwarded && (len(got) != 1 || got[0] != tc.size) {
			t.Errorf("body of %d bytes: the worker got %v, want it whole", tc.size, got)
		}
		if !tc.forwarded && len(got) != 0 {
			t.Errorf("body of %d bytes: forwarded %v, want nothing", tc.size, got)
		}
	}
}
