package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/spf13/cobra"
)

// branchResult is one row of branch's output (and of its --json array).
type branchResult struct {
	Index     int     `json:"index"`
	Command   string  `json:"command"`
	Operation string  `json:"operation"`
	Status    string  `json:"status"`
	ExitCode  int     `json:"exit_code"`
	TimedOut  bool    `json:"timed_out"`
	Duration  float64 `json:"duration"`
	Image     *string `json:"image"`
	Tag       *string `json:"tag,omitempty"`
	// TagNotSet is why --keep did not tag this branch's result.
	TagNotSet string  `json:"tag_not_set,omitempty"`
	Pass      bool    `json:"pass"`
	Error     *string `json:"error,omitempty"`
	signal    int     // that killed the command, if one did
}

func newBranch(g *globals) *cobra.Command {
	var (
		sf         spawnFlags
		keep       bool
		keepPrefix string
	)
	cmd := &cobra.Command{
		Use:   "branch IMAGE [--] 'COMMAND A' 'COMMAND B' ...",
		Short: "Run several shell commands in parallel from the same image",
		Long: `Branch: start every command at once, each in its own sandbox on the same
image, wait for all, and print a table of command, exit code, duration,
result image and PASS (exit 0) or FAIL. Each command is a /bin/sh -c line and
each run saves its result image, unless --disposable (as arbor run).

--keep tags the result image of every passing branch, NAME-N where N is the
branch's position (1 for the first command): NAME is --keep-prefix, by default
the image's tag (or its short UUID) followed by "-branch". A branch that
changed nothing results in IMAGE itself, which keeps its own tag: such a
branch is not tagged, and stderr says so (an image holds one tag).

` + imageRefHelp + `

Exit status: 0 if every branch passed, else 1 (130 if interrupted, which
cancels the branches still running). --json prints an array of objects:
index, command, operation, status, exit_code, timed_out, duration, image,
tag, tag_not_set (why --keep did not tag it), pass, error.`,
		Example: `  arbor branch env -- 'apply-fix retry && pytest' 'apply-fix pool && pytest' 'apply-fix async && pytest'
  arbor branch busybox --keep --keep-prefix attempt -- 'echo a > /a' 'false'   # tags attempt-1, exits 1
  arbor branch --disposable env -- 'make test' 'make lint'
  arbor branch --json env --timeout 10m -- 'make test' 'make test-race'`,
		Args: cobra.MinimumNArgs(2),
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			if keep && sf.disposable {
				return errors.New("--keep with --disposable: disposable branches save no image to tag; drop one of them")
			}
			base, err := sf.spawnRequest()
			if err != nil {
				return err
			}
			im, err := resolveImage(ctx, c, args[0])
			if err != nil {
				return err
			}
			cmds := args[1:]
			prefix := keepPrefix
			if prefix == "" {
				prefix = shortID(im.UUID)
				if im.Tag != nil {
					prefix = *im.Tag
				}
				prefix += "-branch"
			}
			if keep {
				if err := apitypes.ValidTag(fmt.Sprintf("%s-%d", prefix, len(cmds))); err != nil {
					return fmt.Errorf("--keep-prefix: %w", err)
				}
			}
			base.Image = im.UUID
			if err := sf.addFiles(ctx, c, &base); err != nil {
				return err
			}
			ops := make([]string, len(cmds))
			for i, line := range cmds {
				req := base
				req.Command, req.Shell = line, ptr(true)
				if keep {
					req.ResultTag = ptr(fmt.Sprintf("%s-%d", prefix, i+1))
				}
				sp, err := c.Spawn(ctx, req)
				if err != nil {
					if started := ops[:i]; len(started) > 0 {
						g.cancelAndWait(ctx, c, started...)
					}
					return fmt.Errorf("start branch %d (%s): %w", i+1, line, err)
				}
				ops[i] = sp.UUID
			}
			results := make([]branchResult, len(cmds))
			var wg sync.WaitGroup
			errs := make([]error, len(cmds))
			for i := range cmds {
				wg.Go(func() {
					res, err := c.Wait(ctx, ops[i])
					if err != nil {
						errs[i] = err
						return
					}
					results[i] = branchRow(i, cmds[i], res)
				})
			}
			wg.Wait()
			if ctx.Err() != nil {
				g.cancelAndWait(ctx, c, ops...)
				return exitError{130}
			}
			for i, err := range errs {
				if err != nil {
					return fmt.Errorf("wait for branch %d (operation %s): %w", i+1, ops[i], err)
				}
			}
			allPass := true
			for i := range results {
				r := &results[i]
				allPass = allPass && r.Pass
				if !keep {
					continue
				}
				o := outcome{status: r.Status, exitCode: r.ExitCode, signal: r.signal, timedOut: r.TimedOut, image: r.Image}
				if r.Tag, r.TagNotSet, err = resultTag(ctx, c, r.Operation, &o, im, fmt.Sprintf("%s-%d", prefix, r.Index)); err != nil {
					return fmt.Errorf("branch %d: %w", r.Index, err)
				}
			}
			if g.json {
				if err := g.printJSON(results); err != nil {
					return err
				}
			} else {
				g.branchTable(results, keep)
			}
			for _, r := range results {
				if r.Pass && r.TagNotSet != "" { // a failing branch's reason is its FAIL
					g.errorf("branch %d not tagged %s-%d: %s", r.Index, prefix, r.Index, r.TagNotSet)
				}
			}
			if !allPass {
				return exitError{1}
			}
			return nil
		}),
	}
	sf.register(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&keep, "keep", false, "tag the result image of every passing branch")
	fl.StringVar(&keepPrefix, "keep-prefix", "", "tag prefix for --keep: tags are PREFIX-N (default <image tag or short uuid>-branch)")
	cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return g.completeImages(cmd, args, toComplete)
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return cmd
}

// branchRow summarises one finished branch.
func branchRow(i int, line string, res *apitypes.OperationResponse) branchResult {
	r := branchResult{Index: i + 1, Command: line, Operation: res.UUID, Status: res.Status, ExitCode: -1,
		Duration: res.Duration, Image: res.ResultImageUUID, Error: res.Error}
	var m apitypes.InstanceMetadata
	if json.Unmarshal(res.Metadata, &m) == nil && m.Result != nil {
		r.ExitCode, r.TimedOut, r.signal = m.Result.State.ExitCode, m.Result.State.TimedOut, m.Result.State.Signal
	}
	r.Pass = res.Status == apitypes.StatusSuccess && r.ExitCode == 0 && !r.TimedOut
	return r
}

func (g *globals) branchTable(rs []branchResult, keep bool) {
	tw := newTable(g.stdout)
	head := "#\tCOMMAND\tEXIT\tDURATION\tIMAGE\tRESULT"
	if keep {
		head += "\tTAG"
	}
	fmt.Fprintln(tw, head)
	pass := 0
	for _, r := range rs {
		exit := fmt.Sprint(r.ExitCode)
		switch {
		case r.TimedOut:
			exit = "timeout"
		case r.Status != apitypes.StatusSuccess:
			exit = r.Status
		}
		result := "FAIL"
		if r.Pass {
			result = "PASS"
			pass++
		}
		im := "-"
		if r.Image != nil {
			im = shortID(*r.Image)
		}
		row := fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%s", r.Index, oneLine(r.Command, 48), exit, seconds(r.Duration), im, result)
		if keep {
			row += "\t" + deref(r.Tag)
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
	fmt.Fprintf(g.stdout, "%d of %d passed\n", pass, len(rs))
	for _, r := range rs {
		if r.Error != nil {
			g.errorf("branch %d: %s", r.Index, *r.Error)
		}
	}
}
