package cli

import (
	"context"
	"fmt"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/spf13/cobra"
)

func newFork(g *globals) *cobra.Command {
	var req apitypes.ForkRequest
	cmd := &cobra.Command{
		Use:   "fork [-n N] OP",
		Short: "Fork a running instance, memory and all, into N running copies",
		Long: `Fork a running instance into N new running instances that continue from
its memory, open files and filesystem at this moment, then diverge; the
instance itself goes on. The filesystem at the fork point is saved as an
image, and each copy's snapshot descends from it. ` + opRefHelp + `

Needs the runsc runtime and an instance that keeps its stdin open (started
with arbor run --keep-stdin, or spawned with stdin close=false: a REPL or a
server). Processes started with exec in the instance are not carried into
the copies. --pause-parent leaves the instance stopped at the fork point
until it gets a CONT signal (arbor input --signal CONT OP). Prints the
copies' operation ids, one a line; --json prints {"image", "operations", "checkpoint_bytes"}.`,
		Example: `  arbor fork 7c1d
  arbor fork -n 4 --json 7c1d0a2b`,
		Args: cobra.ExactArgs(1),
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			id, err := resolveOp(ctx, c, args[0])
			if err != nil {
				return err
			}
			res, err := c.Fork(ctx, id, req)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			fmt.Fprintf(g.stderr, "fork point: image %s, memory checkpoint %d bytes (held again by each copy)\n", res.Image, res.CheckpointBytes)
			for _, op := range res.Operations {
				fmt.Fprintln(g.stdout, op)
			}
			return nil
		}),
	}
	cmd.Flags().IntVarP(&req.Count, "count", "n", 1, "how many copies to start (1 to 16)")
	cmd.Flags().BoolVar(&req.PauseParent, "pause-parent", false, "leave the instance stopped at the fork point until a CONT signal to its process 1 (DELETE /v1/operations/OP/subprocesses/1?signal=CONT)")
	return cmd
}
