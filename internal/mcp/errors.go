package mcp

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/arborsh/arbor/client"
)

// Errors returned by tool handlers become tool results with isError set,
// so the agent reads them: each says what went wrong and what to do next.

// explain turns a backend error into a message for the agent, adding a
// remedy for the failures every tool can meet.
func explain(err error) error {
	if err == nil {
		return nil
	}
	var ce *client.Error
	switch {
	case errors.Is(err, client.ErrUnreachable):
		return fmt.Errorf("%v (the sandbox service is down: tell the user to start it with `arbor serve`, then retry)", err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("timed out waiting for the arbor daemon: retry, or use wait=false and poll with wait_operations")
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("cancelled")
	case client.IsUnauthorized(err):
		return fmt.Errorf("the arbor token was rejected (%s): the user must fix the token (ARBOR_TOKEN, <home>/token, or the bearer token of this MCP connection)", message(err))
	case client.IsForbidden(err):
		return fmt.Errorf("not allowed: %s", message(err))
	case client.IsRateLimited(err):
		return fmt.Errorf("%s: wait for running operations (wait_operations) or cancel some (cancel_operation), then retry", message(err))
	case client.IsUnavailable(err):
		return fmt.Errorf("%s: the daemon is starting or stopping; retry in a few seconds", message(err))
	case errors.As(err, &ce):
		return errors.New(message(err))
	}
	return err
}

// message returns the server's own text of a *client.Error, without the
// client's "arbor: ... (HTTP n)" decoration, or err's text.
func message(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Message
	}
	return err.Error()
}

// imageNotFound explains an unknown image reference and lists the names
// the agent could have meant.
func (s *server) imageNotFound(ctx context.Context, ref string) error {
	names := s.checkpointNames(ctx, 20)
	hint := "no checkpoints exist yet: use list_images, or import_image"
	if len(names) > 0 {
		hint = "checkpoint names: " + strings.Join(names, ", ") + " (list_images shows every image)"
	}
	return fmt.Errorf("image %q not found: pass an image UUID, \"tag:NAME\" or a checkpoint name; %s", ref, hint)
}

// checkpointNames returns up to n tags of the account's images, newest first.
func (s *server) checkpointNames(ctx context.Context, n int) []string {
	ims, err := s.b.ListImages(ctx, client.ImageListOptions{Page: client.Page{Limit: n}, Tagged: true})
	if err != nil {
		return nil
	}
	var names []string
	for _, im := range ims {
		if im.Tag != nil && *im.Tag != "" {
			names = append(names, *im.Tag)
		}
	}
	return names
}

// operationNotFound explains an unknown operation id.
func operationNotFound(id string) error {
	return fmt.Errorf("operation %q not found: list_operations shows recent operations and their ids", id)
}
