package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/arborsh/arbor/client/apitypes"
)

// Fork branches running instance id, memory and all, into req.Count
// running copies (0 means 1; an arbor extension): it returns the fork
// point's image and the copies' operation ids. See apitypes.ForkRequest.
func (c *Client) Fork(ctx context.Context, id string, req apitypes.ForkRequest) (*apitypes.ForkResponse, error) {
	var out apitypes.ForkResponse
	err := c.do(ctx, request{method: http.MethodPost, path: "/operations/" + url.PathEscape(id) + "/fork", json: req}, &out)
	return &out, err
}
