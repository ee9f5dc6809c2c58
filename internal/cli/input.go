package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

func newInput(g *globals) *cobra.Command {
	var (
		stdin, closeIn bool
		signal         string
	)
	cmd := &cobra.Command{
		Use:   "input OP [LINE]",
		Short: "Write to a running instance's stdin, or signal it",
		Long: `Write LINE (with a newline added) to the standard input of a running
instance's main process: one started with arbor run --keep-stdin, or a copy
from arbor fork or arbor checkpoint restore. ` + opRefHelp + `

-i sends this process' standard input (read to EOF) as it is instead.
--close closes the instance's stdin afterwards: a REPL or a loop reading
commands then ends. --signal sends a signal to the main process afterwards,
e.g. CONT to resume an instance that arbor fork --pause-parent left stopped.
What it prints: arbor logs -f OP. --json prints {"operation", "bytes",
"closed", "signal"}: what was sent.`,
		Example: `  arbor input 7c1d 'print(x)'
  arbor input --close 7c1d
  arbor input --signal CONT 7c1d
  printf 'a\nb\n' | arbor input -i 7c1d`,
		Args: cobra.RangeArgs(1, 2),
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			var data []byte
			switch {
			case stdin && len(args) == 2:
				return errors.New("give LINE or -i, not both")
			case stdin:
				b, err := io.ReadAll(g.stdin)
				if err != nil {
					return fmt.Errorf("read stdin: %w", err)
				}
				data = b
			case len(args) == 2:
				data = []byte(args[1] + "\n")
			case !closeIn && signal == "":
				return errors.New("nothing to send: give LINE, -i, --close or --signal")
			}
			id, err := resolveOp(ctx, c, args[0])
			if err != nil {
				return err
			}
			if len(data) > 0 || closeIn {
				r := apitypes.NewStreamRepr(data, false)
				if err := c.WriteStdin(ctx, id, 1, apitypes.ClosableStreamRepr{Value: r.Value, Encoding: r.Encoding, Close: &closeIn}); err != nil {
					return err
				}
			}
			if signal != "" {
				if err := c.KillSubprocess(ctx, id, 1, signal); err != nil {
					return err
				}
			}
			if g.json {
				return g.printJSON(struct {
					Operation string `json:"operation"`
					Bytes     int    `json:"bytes"`
					Closed    bool   `json:"closed"`
					Signal    string `json:"signal,omitempty"`
				}{id, len(data), closeIn, signal})
			}
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.BoolVarP(&stdin, "stdin", "i", false, "send this process' standard input (read to EOF) as it is")
	fl.BoolVar(&closeIn, "close", false, "close the instance's stdin afterwards")
	fl.StringVar(&signal, "signal", "", "send this signal to the main process afterwards (CONT, INT, TERM, ...)")
	return cmd
}
