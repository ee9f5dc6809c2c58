package mcp

import (
	"context"

	"github.com/arborsh/arbor/client/apitypes"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// SaveInstanceIn is the input of save_instance.
type SaveInstanceIn struct {
	OperationID string `json:"operation_id" jsonschema:"a running instance (started by run keep_stdin=true runtime=runsc)"`
}

// SaveInstanceOut is the output of save_instance.
type SaveInstanceOut struct {
	Image           string `json:"image" jsonschema:"the instance's files at this moment, with its memory kept alongside: pass it to restore_instance"`
	CheckpointBytes int64  `json:"checkpoint_bytes" jsonschema:"disk the kept memory uses (counts in the storage quota; freed when the image is deleted)"`
}

// RestoreInstanceIn is the input of restore_instance.
type RestoreInstanceIn struct {
	Image string `json:"image" jsonschema:"an image made by save_instance: UUID, prefix or tag"`
	Count int    `json:"count,omitempty" jsonschema:"instances to start, 1 to 16"`
}

// RestoreInstanceOut is the output of restore_instance.
type RestoreInstanceOut struct {
	Operations []string `json:"operations" jsonschema:"running instances that continue from the saved moment"`
}

func (s *server) addCheckpointTools(ms *mcpsdk.Server) {
	addTool(ms, &mcpsdk.Tool{
		Name:        "save_instance",
		Annotations: additive,
		Description: "Save a RUNNING instance (a REPL, a server; started by run keep_stdin=true runtime=runsc), memory and all, as an image to come back to later: " +
			"restore_instance starts running copies of it at any time, also after the instance has ended. The instance goes on. " +
			"Unlike checkpoint (a name for an image's files), this keeps processes and memory too; the kept memory uses disk until the image is deleted.",
	}, nil, onInstance(s, func(in SaveInstanceIn) string { return in.OperationID }, s.saveInstance))
	addTool(ms, &mcpsdk.Tool{
		Name:        "restore_instance",
		Annotations: additive,
		Description: "Start count running instances from an image made by save_instance: each continues the saved process (variables, loaded data, loopback servers) on a fresh copy of the image's files, then diverges. " +
			"STARTS count SANDBOXES. Processes started with exec in the saved instance are not carried over.",
	}, map[string]any{"count": 1}, s.restoreInstance)
}

func (s *server) saveInstance(ctx context.Context, op string, _ SaveInstanceIn) (SaveInstanceOut, error) {
	res, err := s.b.Checkpoint(ctx, op)
	if err != nil {
		return SaveInstanceOut{}, err
	}
	return SaveInstanceOut{Image: res.Image, CheckpointBytes: res.CheckpointBytes}, nil
}

func (s *server) restoreInstance(ctx context.Context, _ *mcpsdk.CallToolRequest, in RestoreInstanceIn) (*mcpsdk.CallToolResult, RestoreInstanceOut, error) {
	im, err := s.resolve(ctx, in.Image)
	if err != nil {
		return nil, RestoreInstanceOut{}, err
	}
	res, err := s.b.Restore(ctx, im.UUID, apitypes.RestoreRequest{Count: in.Count})
	if err != nil {
		return nil, RestoreInstanceOut{}, explain(err)
	}
	return nil, RestoreInstanceOut{Operations: res.Operations}, nil
}
