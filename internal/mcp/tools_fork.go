package mcp

import (
	"context"

	"github.com/arborsh/arbor/client/apitypes"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// ForkIn is the input of fork_instance.
type ForkIn struct {
	OperationID string `json:"operation_id" jsonschema:"a running instance (started by run keep_stdin=true runtime=runsc)"`
	Count       int    `json:"count,omitempty" jsonschema:"copies to start, 1 to 16"`
	PauseParent bool   `json:"pause_parent,omitempty" jsonschema:"leave the original stopped at the fork point (resume it with send_input signal=CONT)"`
}

// ForkOut is the output of fork_instance.
type ForkOut struct {
	Image           string   `json:"image" jsonschema:"the filesystem at the fork point, as an image"`
	Operations      []string `json:"operations" jsonschema:"the copies: running instances that continue from the fork point"`
	CheckpointBytes int64    `json:"checkpoint_bytes" jsonschema:"memory each copy holds of its own"`
}

func (s *server) addForkTools(ms *mcpsdk.Server) {
	addTool(ms, &mcpsdk.Tool{
		Name:        "fork_instance",
		Annotations: additive,
		Description: "Fork a RUNNING instance (a REPL, a server; started by run keep_stdin=true runtime=runsc) into count copies, memory and all: " +
			"each copy continues from this moment (variables, loaded data, open files, loopback servers), then diverges; the original goes on. STARTS count SANDBOXES. " +
			"The filesystem at the fork point is saved as an image. Processes started with exec are not carried into the copies.",
	}, map[string]any{"count": 1}, onInstance(s, func(in ForkIn) string { return in.OperationID }, s.fork))
}

func (s *server) fork(ctx context.Context, op string, in ForkIn) (ForkOut, error) {
	res, err := s.b.Fork(ctx, op, apitypes.ForkRequest{Count: in.Count, PauseParent: in.PauseParent})
	if err != nil {
		return ForkOut{}, err
	}
	return ForkOut{Image: res.Image, Operations: res.Operations, CheckpointBytes: res.CheckpointBytes}, nil
}
