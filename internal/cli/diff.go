package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/spf13/cobra"
)

func newDiff(g *globals) *cobra.Command {
	var (
		pathFlag string
		stat     bool
		exitCode bool
	)
	cmd := &cobra.Command{
		Use:   "diff A [B]",
		Short: "Show the file changes between two images",
		Long: `Show what changed from image A to image B (with B omitted: what A changed on
top of its parent), without starting a sandbox: a summary like
git diff --stat (A added, M modified, D deleted, with sizes), then unified
diffs of the small modified text files. --stat prints the summary only;
--path limits the comparison to a subtree.

` + imageRefHelp + `

Exit status 0, or with --exit-code 1 when the images differ. --json prints
from, to, path and changes (path, kind, type, old_size, new_size, diff).`,
		Example: `  arbor diff busybox attempt-1
  arbor diff 3f2a9c1e                    # what that run changed
  arbor diff --stat --path /src env attempt-2`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: g.completeImages,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			a, err := resolveImage(ctx, c, args[0])
			if err != nil {
				return err
			}
			o := client.DiffOptions{Path: pathFlag}
			if len(args) == 2 {
				b, err := resolveImage(ctx, c, args[1])
				if err != nil {
					return err
				}
				o.To = b.UUID
			} else if a.ParentUUID == nil {
				return fmt.Errorf("image %s is a base image with no parent to compare with: pass a second image, `arbor diff %s OTHER`", a.UUID, args[0])
			}
			d, err := c.Diff(ctx, a.UUID, o)
			if err != nil {
				return err
			}
			if g.json {
				if d.Changes == nil {
					d.Changes = []apitypes.DiffChange{}
				}
				err = g.printJSON(d)
			} else {
				err = writeDiff(g.stdout, d, stat)
			}
			if err != nil {
				return err
			}
			if exitCode && len(d.Changes) > 0 {
				return exitError{1}
			}
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&pathFlag, "path", "", "compare only this subtree")
	fl.BoolVar(&stat, "stat", false, "print the summary only")
	fl.BoolVar(&exitCode, "exit-code", false, "exit with status 1 when the images differ")
	return cmd
}

func writeDiff(w io.Writer, d *apitypes.ImageDiff, statOnly bool) error {
	if len(d.Changes) == 0 {
		_, err := fmt.Fprintf(w, "no changes from %s to %s under %s\n", shortID(d.From), shortID(d.To), d.Path)
		return err
	}
	width := 0
	for _, ch := range d.Changes {
		width = max(width, len(ch.Path))
	}
	width = min(width, 60)
	counts := map[string]int{}
	for _, ch := range d.Changes {
		counts[ch.Kind]++
		mark := map[string]string{apitypes.ChangeAdded: "A", apitypes.ChangeModified: "M", apitypes.ChangeDeleted: "D"}[ch.Kind]
		if mark == "" {
			mark = "?"
		}
		var size string
		switch ch.Kind {
		case apitypes.ChangeAdded:
			size = humanBytes(ch.NewSize)
		case apitypes.ChangeDeleted:
			size = humanBytes(ch.OldSize)
		default:
			size = humanBytes(ch.OldSize) + " -> " + humanBytes(ch.NewSize)
		}
		name := ch.Path
		if ch.Type == "dir" {
			name += "/"
			size = "dir"
		} else if ch.Type == "symlink" {
			size = "symlink"
		}
		fmt.Fprintf(w, " %s %-*s | %s\n", mark, width, name, size)
	}
	var parts []string
	for _, k := range []string{apitypes.ChangeAdded, apitypes.ChangeModified, apitypes.ChangeDeleted} {
		if counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
		}
	}
	noun := "changes"
	if len(d.Changes) == 1 {
		noun = "change"
	}
	fmt.Fprintf(w, " %d %s: %s\n", len(d.Changes), noun, strings.Join(parts, ", "))
	if statOnly {
		return nil
	}
	for _, ch := range d.Changes {
		if ch.Diff == "" {
			continue
		}
		fmt.Fprintf(w, "\ndiff a%s b%s\n", ch.Path, ch.Path)
		if _, err := io.WriteString(w, ch.Diff); err != nil {
			return err
		}
		if !strings.HasSuffix(ch.Diff, "\n") {
			fmt.Fprintln(w)
		}
	}
	return nil
}
