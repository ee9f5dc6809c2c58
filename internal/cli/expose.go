package cli

import (
	"context"
	"fmt"
	"math"
	"strconv"

	"github.com/arborsh/arbor/client"
	"github.com/spf13/cobra"
)

func newExpose(g *globals) *cobra.Command {
	var (
		ttl        string
		stop, list bool
	)
	cmd := &cobra.Command{
		Use:   "expose OP PORT",
		Short: "Open a TCP port of a running instance at a signed URL (HTTP and WebSocket)",
		Long: `Expose a TCP port inside a running instance: the daemon proxies HTTP and
WebSocket requests from a signed, expiring URL to 127.0.0.1:PORT in the
sandbox, through a relay inside it, so the sandbox needs no network and
nothing else can reach the port. Prints the URL, which works without a
token (open it in a browser) until --ttl ends, the port is unexposed
(--stop) or the instance ends. ` + opRefHelp + `

--ttl is seconds (3600) or a duration (90s, 10m, 1h), 1 s to 24 h.
--list prints the exposed ports of OP; --json prints the preview object
(--list: an array of them; --stop: {"operation", "port", "stopped"}).`,
		Example: `  arbor expose 7c1d 8080
  arbor expose --ttl 10m 7c1d 8080
  arbor expose --list 7c1d
  arbor expose --stop 7c1d 8080`,
		Args: func(cmd *cobra.Command, args []string) error {
			if list {
				return cobra.ExactArgs(1)(cmd, args)
			}
			return cobra.ExactArgs(2)(cmd, args)
		},
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			secs, err := exposeTTL(ttl)
			if err != nil {
				return err
			}
			id, err := resolveOp(ctx, c, args[0])
			if err != nil {
				return err
			}
			if list {
				ps, err := c.Previews(ctx, id)
				if err != nil {
					return err
				}
				if g.json {
					return g.printJSON(ps)
				}
				for _, p := range ps {
					fmt.Fprintf(g.stdout, "%d\texpires %s\n", p.Port, p.ExpiresAt)
				}
				return nil
			}
			port, err := strconv.Atoi(args[1])
			if err != nil {
				return fmt.Errorf("port %q: give a number from 1 to 65535", args[1])
			}
			if stop {
				if err := c.Unexpose(ctx, id, port); err != nil {
					return err
				}
				if g.json {
					return g.printJSON(struct {
						Operation string `json:"operation"`
						Port      int    `json:"port"`
						Stopped   bool   `json:"stopped"`
					}{id, port, true})
				}
				return nil
			}
			p, err := c.Expose(ctx, id, port, secs)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(p)
			}
			fmt.Fprintf(g.stderr, "port %d of %s, until %s\n", port, id, p.ExpiresAt)
			fmt.Fprintln(g.stdout, p.URL)
			return nil
		}),
	}
	cmd.Flags().StringVar(&ttl, "ttl", "1h", "how long the URL works: seconds or 90s, 10m, 1h (1s to 24h)")
	cmd.Flags().BoolVar(&stop, "stop", false, "stop exposing the port: every URL to it stops working")
	cmd.Flags().BoolVar(&list, "list", false, "list the exposed ports of OP")
	return cmd
}

// exposeTTL parses expose --ttl into whole seconds, 1 to 24 h: seconds or
// a duration, as --timeout and token --ttl take.
func exposeTTL(s string) (int, error) {
	v, err := parseSeconds("--ttl", s)
	if err != nil {
		return 0, err
	}
	n := int(math.Round(v))
	if n < 1 || n > 86400 {
		return 0, fmt.Errorf("--ttl %s: use 1s to 24h (1 to 86400 seconds)", s)
	}
	return n, nil
}
