package mcp

import (
	"context"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// onInstance makes the handler of a tool that acts on one instance
// (fork_instance, save_instance, expose_port): it resolves the operation
// id that id takes from the input (a UUID or a prefix), calls do with the
// operation's UUID, and explains an error of the daemon's to the agent.
func onInstance[In, Out any](s *server, id func(In) string, do func(ctx context.Context, op string, in In) (Out, error)) mcpsdk.ToolHandlerFor[In, Out] {
	return func(ctx context.Context, _ *mcpsdk.CallToolRequest, in In) (*mcpsdk.CallToolResult, Out, error) {
		var none Out
		op, err := s.operation(ctx, id(in))
		if err != nil {
			return nil, none, err
		}
		out, err := do(ctx, op.UUID, in)
		if err != nil {
			return nil, none, explain(err)
		}
		return nil, out, nil
	}
}
