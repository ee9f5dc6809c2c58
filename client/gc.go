package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/arborsh/arbor/client/apitypes"
)

// GC runs a garbage collection under the daemon's retention policies now
// (arbor extension), or with dryRun reports what it would remove. account
// "" is the caller's own; a token of the "default" account collects every
// account unless it names one.
func (c *Client) GC(ctx context.Context, dryRun bool, account string) (*apitypes.GCResponse, error) {
	q := url.Values{}
	if dryRun {
		q.Set("dry_run", "1")
	}
	if account != "" {
		q.Set("account", account)
	}
	var out apitypes.GCResponse
	return &out, c.do(ctx, request{method: http.MethodPost, path: "/gc", query: q}, &out)
}

// DiskUsage reports the caller's account's disk, images and runs (arbor
// extension); with all, a token of the "default" account gets every account.
func (c *Client) DiskUsage(ctx context.Context, all bool) (*apitypes.DiskUsageResponse, error) {
	var q url.Values
	if all {
		q = url.Values{"all": {"1"}}
	}
	var out apitypes.DiskUsageResponse
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/df", query: q}, &out)
}
