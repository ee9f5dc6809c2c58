package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/spf13/cobra"
)

// statusOutput is what `arbor status --json` prints: the daemon's answer
// to GET /v1/status and the account's usage from GET /v1/whoami.
type statusOutput struct {
	Daemon         string                  `json:"daemon"`
	Healthy        bool                    `json:"healthy"` // the daemon answered both requests
	DefaultRuntime string                  `json:"default_runtime"`
	Runtimes       []string                `json:"runtimes"`
	WarmPool       apitypes.WarmPoolStatus `json:"warm_pool"`
	// WarmPoolState names the pool's state in one word: on or off.
	WarmPoolState string           `json:"warm_pool_state"`
	Account       string           `json:"account"`
	Usage         statusUsage      `json:"usage"`
	Limits        map[string]int64 `json:"limits,omitempty"`
}

type statusUsage struct {
	Operations  map[string]int64 `json:"operations"` // by status
	InFlight    int64            `json:"in_flight"`  // PENDING, ASSIGNED and EXECUTING
	CPUSeconds  int64            `json:"cpu_seconds"`
	StoredBytes int64            `json:"stored_bytes"`
}

func newStatus(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's health, warm pool and usage at a glance",
		Long: `Show whether the daemon answers, its sandbox runtimes, the warm sandbox pool
(on or off and why, idle and booting sandboxes, hits and misses) and the
account's usage: operations by status, those in flight, CPU time and bytes
stored. A daemon that does not answer is an error (exit 1).

--json prints one object (warm_pool_state is "on" or "off"). For the
daemon's counters over time, scrape /metrics (README: Operating arbor).`,
		Example: `  arbor status
  arbor status --json | jq .warm_pool_state`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			w, err := c.WhoAmI(ctx)
			if err != nil {
				return err
			}
			out := statusOutput{Daemon: c.BaseURL(), Healthy: true, DefaultRuntime: st.DefaultRuntime, Runtimes: st.Runtimes,
				WarmPool: st.WarmPool, WarmPoolState: "off", Account: w.Account, Limits: w.Limits,
				Usage: statusUsage{Operations: map[string]int64{}}}
			if st.WarmPool.Enabled {
				out.WarmPoolState = "on"
			}
			for k, v := range w.OperationsStat {
				switch k {
				case "cpu_seconds":
					out.Usage.CPUSeconds = v
				case "stored_bytes":
					out.Usage.StoredBytes = v
				default:
					out.Usage.Operations[k] = v
				}
			}
			for _, s := range []string{apitypes.StatusPending, apitypes.StatusAssigned, apitypes.StatusExecuting} {
				out.Usage.InFlight += out.Usage.Operations[s]
			}
			if g.json {
				return g.printJSON(out)
			}
			printStatus(g, out)
			return nil
		}),
	}
}

func printStatus(g *globals, s statusOutput) {
	rts := make([]string, 0, len(s.Runtimes))
	for _, r := range s.Runtimes {
		if r == s.DefaultRuntime {
			r += " (default)"
		}
		rts = append(rts, r)
	}
	fmt.Fprintf(g.stdout, "daemon:   %s: up\n", s.Daemon)
	fmt.Fprintf(g.stdout, "runtimes: %s\n", strings.Join(rts, ", "))
	fmt.Fprintf(g.stdout, "warm:     %s\n", warmLine(s.WarmPool))
	fmt.Fprintf(g.stdout, "account:  %s: %d in flight, %s stored, %d CPU seconds\n",
		s.Account, s.Usage.InFlight, humanBytes(s.Usage.StoredBytes), s.Usage.CPUSeconds)
	keys := make([]string, 0, len(s.Usage.Operations))
	for k := range s.Usage.Operations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, s.Usage.Operations[k]))
	}
	fmt.Fprintf(g.stdout, "ops:      %s\n", strings.Join(parts, " "))
}
