package cli

import (
	"context"
	"fmt"

	"github.com/arborsh/arbor/client"
	"github.com/spf13/cobra"
)

func newGrep(g *globals) *cobra.Command {
	var (
		ignoreCase            bool
		ctxLines, before, aft int
		globs                 []string
		maxCount, maxTotal    int
	)
	cmd := &cobra.Command{
		Use:   "grep PATTERN IMAGE[:PATH]",
		Short: "Search the files of an image",
		Long: `Search the files of an image for a regular expression (Go syntax, like
grep -E), without starting a sandbox. PATH (default /) is a directory to
search recursively or a single file; --glob keeps files whose base name
matches (repeatable). Output is PATH:LINE:TEXT per match, with context lines
as PATH-LINE-TEXT.

` + imageRefHelp + `

Exit status 0 if something matched, 1 if nothing did (as grep). --json
prints the server's result: path, patterns, matches (path, line_number,
line_text, submatches, type "match" or "context") and truncated.`,
		Example: `  arbor grep root busybox:/etc
  arbor grep -i 'def test_' with-pytest:/src --glob '*.py' -C 2
  arbor grep --json TODO 3f2a9c1e:/src | jq '.matches | length'`,
		Args: cobra.ExactArgs(2),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 1 {
				return g.completeImages(cmd, args, toComplete)
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			im, p, err := imagePathArg(ctx, c, "grep", args[1], "/")
			if err != nil {
				return err
			}
			o := client.GrepOptions{Patterns: []string{args[0]}, Paths: []string{p}, Globs: globs,
				Before: before, After: aft, MaxCount: maxCount, MaxTotal: maxTotal}
			if ctxLines > 0 {
				o.Before, o.After = max(o.Before, ctxLines), max(o.After, ctxLines)
			}
			if ignoreCase {
				o.Case = "insensitive"
			}
			res, err := c.Grep(ctx, im.UUID, o)
			if err != nil {
				return notFound(err, im, p)
			}
			matched := false
			for _, m := range res.Matches {
				if m.Type != "context" {
					matched = true
				}
			}
			if g.json {
				if err := g.printJSON(res); err != nil {
					return err
				}
			} else {
				lastPath, lastLine := "", 0
				for _, m := range res.Matches {
					if (before > 0 || aft > 0 || ctxLines > 0) && lastPath != "" && (m.Path != lastPath || m.LineNumber > lastLine+1) {
						fmt.Fprintln(g.stdout, "--")
					}
					sep := ":"
					if m.Type == "context" {
						sep = "-"
					}
					text := m.LineText
					if len(text) > 0 && text[len(text)-1] == '\n' {
						text = text[:len(text)-1]
					}
					fmt.Fprintf(g.stdout, "%s%s%d%s%s\n", m.Path, sep, m.LineNumber, sep, text)
					lastPath, lastLine = m.Path, m.LineNumber
				}
				if res.Truncated {
					g.errorf("results truncated: narrow PATH or --glob, or raise --max-total")
				}
			}
			if !matched {
				return exitError{1}
			}
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.BoolVarP(&ignoreCase, "ignore-case", "i", false, "match case-insensitively")
	fl.IntVarP(&ctxLines, "context", "C", 0, "lines of context around each match")
	fl.IntVarP(&before, "before-context", "B", 0, "lines of context before each match")
	fl.IntVarP(&aft, "after-context", "A", 0, "lines of context after each match")
	fl.StringArrayVar(&globs, "glob", nil, "only files whose base name matches this glob; repeatable")
	fl.IntVarP(&maxCount, "max-count", "m", 0, "stop after this many matches per file")
	fl.IntVar(&maxTotal, "max-total", 0, "stop after this many matches overall (default: the server's cap)")
	return cmd
}
