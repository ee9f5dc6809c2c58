package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/spf13/cobra"
)

const opRefHelp = `OP is an operation UUID or a unique prefix of one (see arbor ps).`

// opRow is one operation in ps and wait output.
type opRow struct {
	apitypes.OperationSummary
	Command  string `json:"command,omitempty"`
	ExitCode *int   `json:"exit_code"`
}

func newPs(g *globals) *cobra.Command {
	var (
		all      bool
		quiet    bool
		statuses []string
		kind     string
		limit    int
	)
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List operations (runs and imports)",
		Long: `List operations, newest first: by default those still pending or running;
--all includes finished ones, --status picks statuses (PENDING, ASSIGNED,
EXECUTING, SUCCESS, FAILED, CANCELLED; repeat or separate with commas).

A run waiting for a slot or for memory shows its place in the queue,
"PENDING (queued #1)" for the next to execute; runs start in that order.

--json prints an array of operation summaries (uuid, kind, status, error,
created_at, duration, image_uuid, result_image_uuid, queue_position, ...)
with command and exit_code.`,
		Example: `  arbor ps
  arbor ps --all --limit 20
  arbor ps --status failed,cancelled --json`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			if limit < 1 || limit > 1000 {
				return fmt.Errorf("--limit %d: use 1 to 1000", limit)
			}
			o := client.OperationListOptions{Page: client.Page{Limit: limit}, Kind: kind}
			for _, s := range statuses {
				for part := range strings.SplitSeq(s, ",") {
					if part = strings.ToUpper(strings.TrimSpace(part)); part != "" {
						o.Status = append(o.Status, part)
					}
				}
			}
			if len(o.Status) == 0 && !all {
				o.Status = []string{apitypes.StatusPending, apitypes.StatusAssigned, apitypes.StatusExecuting}
			}
			ops, err := c.ListOperations(ctx, o)
			if err != nil {
				return err
			}
			rows := make([]*opRow, len(ops))
			for i, op := range ops {
				rows[i] = &opRow{OperationSummary: op}
			}
			if !quiet || g.json {
				describeOps(ctx, c, rows)
			}
			switch {
			case g.json:
				return g.printJSON(rows)
			case quiet:
				for _, r := range rows {
					fmt.Fprintln(g.stdout, r.UUID)
				}
				return nil
			}
			if len(rows) == 0 {
				if !all && len(statuses) == 0 {
					g.errorf("nothing running (`arbor ps --all` lists finished operations too)")
				}
				return nil
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "OPERATION\tKIND\tSTATUS\tEXIT\tCREATED\tDURATION\tIMAGE\tRESULT\tCOMMAND")
			for _, r := range rows {
				exit := "-"
				if r.ExitCode != nil && *r.ExitCode >= 0 && apitypes.IsTerminal(r.Status) {
					exit = fmt.Sprint(*r.ExitCode)
				}
				im, res := "-", "-"
				if r.ImageUUID != nil {
					im = shortID(*r.ImageUUID)
				}
				if r.ResultImageUUID != nil {
					res = shortID(*r.ResultImageUUID)
				}
				status := r.Status
				if r.QueuePosition > 0 {
					status = fmt.Sprintf("%s (queued #%d)", status, r.QueuePosition)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortID(r.UUID), r.Kind, status, exit, age(r.CreatedAt),
					seconds(r.Duration), im, res, oneLine(r.Command, 50))
			}
			return tw.Flush()
		}),
	}
	fl := cmd.Flags()
	fl.BoolVarP(&all, "all", "a", false, "include finished operations")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print full operation UUIDs only")
	fl.StringArrayVar(&statuses, "status", nil, "only these statuses (repeatable, or comma-separated)")
	fl.StringVar(&kind, "kind", "", "only this kind: instance or image_import")
	fl.IntVar(&limit, "limit", 100, "list at most this many (1-1000)")
	return cmd
}

// describeOps fills in the command and exit code of each row.
func describeOps(ctx context.Context, c *client.Client, rows []*opRow) {
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, r := range rows {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if res, err := c.Operation(ctx, r.UUID); err == nil {
				r.Command, r.ExitCode = describeOp(res)
			}
		})
	}
	wg.Wait()
}

func newWait(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wait OP...",
		Short: "Wait for operations to finish",
		Long: `Wait until every operation has finished and print how each ended. ` + opRefHelp + `

Exit status: for one run, its command's exit status (124 timed out, 130
cancelled, 1 failed); for several, 0 if all succeeded with exit code 0,
else 1. --json prints an array of {"operation", "kind" (instance or
image_import), "status", "exit_code", "timed_out", "image", "duration",
"error"}.`,
		Example: `  arbor wait 7c1d
  arbor wait --json 7c1d0a2b 9e8f7a6b`,
		Args: cobra.MinimumNArgs(1),
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			ids := make([]string, len(args))
			for i, a := range args {
				id, err := resolveOp(ctx, c, a)
				if err != nil {
					return err
				}
				ids[i] = id
			}
			type row struct {
				Operation string  `json:"operation"`
				Kind      string  `json:"kind"`
				Status    string  `json:"status"`
				ExitCode  *int    `json:"exit_code"`
				TimedOut  bool    `json:"timed_out"`
				Image     *string `json:"image"`
				Duration  float64 `json:"duration"`
				Error     *string `json:"error,omitempty"`
				code      int
			}
			rows := make([]row, len(ids))
			errs := make([]error, len(ids))
			var wg sync.WaitGroup
			for i, id := range ids {
				wg.Go(func() {
					res, err := c.Wait(ctx, id)
					if err != nil {
						errs[i] = err
						return
					}
					r := row{Operation: id, Kind: res.Kind, Status: res.Status, Image: res.ResultImageUUID, Duration: res.Duration, Error: res.Error}
					o := outcome{status: res.Status}
					var m apitypes.InstanceMetadata
					if res.Kind == apitypes.KindInstance && json.Unmarshal(res.Metadata, &m) == nil && m.Result != nil {
						st := m.Result.State
						r.ExitCode, r.TimedOut = &st.ExitCode, st.TimedOut
						o.exitCode, o.signal, o.timedOut = st.ExitCode, st.Signal, st.TimedOut
					}
					r.code = o.code()
					rows[i] = r
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					if ctx.Err() != nil {
						return err
					}
					return fmt.Errorf("wait for %s: %w", ids[i], g.explain(err, c))
				}
			}
			if g.json {
				if err := g.printJSON(rows); err != nil {
					return err
				}
			} else {
				tw := newTable(g.stdout)
				fmt.Fprintln(tw, "OPERATION\tSTATUS\tEXIT\tDURATION\tRESULT")
				for _, r := range rows {
					exit, res := "-", "-"
					if r.ExitCode != nil && *r.ExitCode >= 0 {
						exit = fmt.Sprint(*r.ExitCode)
					}
					if r.TimedOut {
						exit = "timeout"
					}
					if r.Image != nil {
						res = *r.Image
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Operation, r.Status, exit, seconds(r.Duration), res)
				}
				tw.Flush()
				for _, r := range rows {
					if r.Error != nil {
						g.errorf("%s: %s", shortID(r.Operation), *r.Error)
					}
				}
			}
			if len(rows) == 1 {
				if rows[0].code != 0 {
					return exitError{rows[0].code}
				}
				return nil
			}
			for _, r := range rows {
				if r.code != 0 {
					return exitError{1}
				}
			}
			return nil
		}),
	}
	return cmd
}

func newCancel(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cancel OP...",
		Short: "Cancel operations",
		Long: `Cancel pending or running operations: a run is killed and saves nothing.
` + opRefHelp + `

Exit status 1 if any could not be cancelled (for example because it had
already finished). --json prints an array of {"operation", "cancelled",
"error"}.`,
		Example: `  arbor cancel 7c1d
  arbor ps -q | xargs arbor cancel`,
		Args: cobra.MinimumNArgs(1),
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			type row struct {
				Operation string `json:"operation"`
				Cancelled bool   `json:"cancelled"`
				Error     string `json:"error,omitempty"`
			}
			var rows []row
			failed := false
			for _, a := range args {
				r := row{Operation: a}
				id, err := resolveOp(ctx, c, a)
				if err == nil {
					r.Operation = id
					err = c.Cancel(ctx, id)
				}
				switch {
				case err == nil:
					r.Cancelled = true
					if !g.json {
						fmt.Fprintf(g.stdout, "cancelled %s\n", id)
					}
				case ctx.Err() != nil:
					return err
				default:
					failed = true
					r.Error = g.explain(err, c).Error()
					if client.IsConflict(err) {
						r.Error = "nothing to cancel: " + r.Error
					}
					if !g.json {
						g.errorf("cancel %s: %s", a, r.Error)
					}
				}
				rows = append(rows, r)
			}
			if g.json {
				if err := g.printJSON(rows); err != nil {
					return err
				}
			}
			if failed {
				return exitError{1}
			}
			return nil
		}),
	}
	return cmd
}

func newLogs(g *globals) *cobra.Command {
	var followFlag bool
	cmd := &cobra.Command{
		Use:   "logs [-f] OP",
		Short: "Print the output of an operation",
		Long: `Print an operation's stdout and stderr from its event log (stdout to stdout,
stderr to stderr); import progress goes to stderr. With -f, keep following
a running operation until it finishes; without it, print what has been
logged so far. ` + opRefHelp + `

--json prints every event as one JSON object per line (id, ts, spid, type,
data), for scripts.`,
		Example: `  arbor logs 7c1d
  arbor logs -f 7c1d0a2b
  arbor logs --json 7c1d | jq -r 'select(.type=="exit") | .data.code'`,
		Args: cobra.ExactArgs(1),
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			id, err := resolveOp(ctx, c, args[0])
			if err != nil {
				return err
			}
			res, err := c.Operation(ctx, id)
			if err != nil {
				return err
			}
			if !followFlag && res.Status == apitypes.StatusPending {
				g.errorf("operation %s is PENDING: no output yet (follow it with `arbor logs -f %s`)", id, shortID(id))
				return nil
			}
			enc := json.NewEncoder(g.stdout)
			fn := func(ev apitypes.OperationEvent) error {
				if g.json {
					return enc.Encode(ev)
				}
				switch ev.Type {
				case apitypes.EventStdout, apitypes.EventStderr:
					b, err := ev.StreamBytes()
					if err != nil {
						return err
					}
					w := g.stdout
					if ev.Type == apitypes.EventStderr {
						w = g.stderr
					}
					_, err = w.Write(b)
					return err
				case apitypes.EventProgress:
					var d apitypes.EventDataProgress
					if json.Unmarshal(ev.Data, &d) == nil {
						g.errorf("%s", progressLine(d.Phase, d.Done, d.Total, d.Unit))
					}
				case apitypes.EventTruncated:
					var d apitypes.EventDataTruncated
					if json.Unmarshal(ev.Data, &d) == nil {
						g.errorf("%s truncated: %d bytes dropped", d.Stream, d.BytesDropped)
					}
				}
				return nil
			}
			if followFlag {
				return c.FollowEvents(ctx, id, -1, fn)
			}
			return c.StreamEvents(ctx, id, client.EventsOptions{After: -1}, fn)
		}),
	}
	cmd.Flags().BoolVarP(&followFlag, "follow", "f", false, "follow the operation until it finishes")
	return cmd
}
