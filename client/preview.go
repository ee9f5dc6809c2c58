package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/arborsh/arbor/client/apitypes"
)

// Expose exposes a TCP port inside running instance id through the daemon
// (an arbor extension) and returns a signed link to it; ttlSeconds 0 means
// an hour.
func (c *Client) Expose(ctx context.Context, id string, port, ttlSeconds int) (*apitypes.Preview, error) {
	var out apitypes.Preview
	err := c.do(ctx, request{method: http.MethodPost, path: "/operations/" + url.PathEscape(id) + "/previews",
		json: apitypes.PreviewRequest{Port: port, TTLSeconds: ttlSeconds}}, &out)
	return &out, err
}

// Previews lists the exposed ports of instance id.
func (c *Client) Previews(ctx context.Context, id string) ([]apitypes.Preview, error) {
	var out apitypes.PreviewList
	err := c.do(ctx, request{method: http.MethodGet, path: "/operations/" + url.PathEscape(id) + "/previews"}, &out)
	return out.Previews, err
}

// Unexpose ends the preview of port on instance id: its links stop working.
func (c *Client) Unexpose(ctx context.Context, id string, port int) error {
	return c.do(ctx, request{method: http.MethodDelete, path: "/operations/" + url.PathEscape(id) + "/previews/" + strconv.Itoa(port)}, nil)
}
