package cli

import (
	"context"
	"fmt"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/spf13/cobra"
)

// newCheckpoint is arbor checkpoint OP, with arbor checkpoint restore IMAGE
// under it (arbor restore is the metadata restore from a backup).
func newCheckpoint(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "checkpoint OP",
		Short: "Save a running instance, memory and all, as an image to restore later",
		Long: `Save running instance OP (its processes, memory, open files and files on
disk at this moment) as a new image that keeps the memory checkpoint
alongside; the instance goes on. ` + "`arbor checkpoint restore IMAGE`" + ` starts running copies
of it later, any number of times, also after OP has ended. ` + opRefHelp + `

Needs the runsc runtime and an instance that keeps its stdin open (spawned
with stdin close=false). The checkpoint is about the memory the instance uses;
it counts in the account's storage quota and goes when the image is deleted
(arbor rmi) or, if the daemon runs with --checkpoint-ttl, once that old. Prints
the image's UUID; --json prints {"image", "checkpoint_bytes"}.`,
		Example: `  arbor checkpoint 7c1d
  arbor checkpoint restore -n 2 $(arbor checkpoint 7c1d)`,
		Args: cobra.ExactArgs(1),
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			id, err := resolveOp(ctx, c, args[0])
			if err != nil {
				return err
			}
			res, err := c.Checkpoint(ctx, id)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			fmt.Fprintf(g.stderr, "memory checkpoint: %s kept with the image\n", humanBytes(res.CheckpointBytes))
			fmt.Fprintln(g.stdout, res.Image)
			return nil
		}),
	}
	cmd.AddCommand(newCheckpointRestore(g))
	return cmd
}

func newCheckpointRestore(g *globals) *cobra.Command {
	var req apitypes.RestoreRequest
	cmd := &cobra.Command{
		Use:   "restore [-n N] IMAGE",
		Short: "Start running instances from an image's memory checkpoint",
		Long: `Start N running instances from the memory checkpoint kept with IMAGE (made by
arbor checkpoint): each continues the checkpointed instance's main process
from that moment, on a fresh copy of IMAGE's files, then goes its own way. ` + imageRefHelp + `

Fails with the reason if IMAGE has no checkpoint or the daemon's runsc build
or platform differs from the one that made it. Processes the instance
started with exec are not carried over. Prints the new operation ids, one a
line; --json prints {"operations"}.`,
		Example: `  arbor checkpoint restore 3f2a9c1e
  arbor checkpoint restore -n 4 --json tag:warm-repl`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: g.completeImages,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			im, err := resolveImage(ctx, c, args[0])
			if err != nil {
				return err
			}
			res, err := c.Restore(ctx, im.UUID, req)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			for _, op := range res.Operations {
				fmt.Fprintln(g.stdout, op)
			}
			return nil
		}),
	}
	cmd.Flags().IntVarP(&req.Count, "count", "n", 1, "how many instances to start (1 to 16)")
	return cmd
}
