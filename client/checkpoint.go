package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/arborsh/arbor/client/apitypes"
)

// Checkpoint saves running instance id, memory and all, as a new image
// whose memory checkpoint is kept for Restore (an arbor extension). The
// instance goes on.
func (c *Client) Checkpoint(ctx context.Context, id string) (*apitypes.CheckpointResponse, error) {
	var out apitypes.CheckpointResponse
	err := c.do(ctx, request{method: http.MethodPost, path: "/operations/" + url.PathEscape(id) + "/checkpoint"}, &out)
	return &out, err
}

// Restore starts req.Count (0 means 1) running instances from the memory
// checkpoint kept with image (an arbor extension) and returns their
// operation ids.
func (c *Client) Restore(ctx context.Context, image string, req apitypes.RestoreRequest) (*apitypes.RestoreResponse, error) {
	var out apitypes.RestoreResponse
	err := c.do(ctx, request{method: http.MethodPost, path: "/images/" + url.PathEscape(image) + "/restore", json: req}, &out)
	return &out, err
}
