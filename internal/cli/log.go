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

// logNode is one image of log's output: the lineage entry plus what the
// producing operation ran.
type logNode struct {
	apitypes.LineageImage
	Command  string `json:"command"`
	ExitCode *int   `json:"exit_code"`
}

// describeOp renders what an operation did: the command of a run, the
// source of an import.
func describeOp(res *apitypes.OperationResponse) (cmd string, exit *int) {
	switch res.Kind {
	case apitypes.KindInstance:
		var m apitypes.InstanceMetadata
		if json.Unmarshal(res.Metadata, &m) != nil {
			return "", nil
		}
		if m.Result != nil {
			exit = &m.Result.State.ExitCode
		}
		if m.Shell {
			return m.Command, exit
		}
		return shellQuote(append([]string{m.Command}, m.Args...)), exit
	case apitypes.KindImageImport:
		var m apitypes.ImageImportMetadata
		if json.Unmarshal(res.Metadata, &m) != nil {
			return "import", nil
		}
		return "import " + m.Registry.URL, nil
	}
	return res.Kind, nil
}

// describeAll fetches the operation of every node, a few at a time.
func describeAll(ctx context.Context, c *client.Client, nodes []*logNode) {
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n.OperationUUID == nil {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if res, err := c.Operation(ctx, *n.OperationUUID); err == nil {
				n.Command, n.ExitCode = describeOp(res)
			}
		})
	}
	wg.Wait()
}

func newLog(g *globals) *cobra.Command {
	var maxCount int
	cmd := &cobra.Command{
		Use:   "log IMAGE",
		Short: "Show an image's lineage as a tree",
		Long: `Show where an image comes from, drawn like git log --graph: its direct
children on top, the image itself (marked HEAD), then its ancestors down to
the base image. Each line shows the short UUID, the tag, the command that
produced the image with its exit code, and its age. Deleted ancestors (kept
while descendants need their layers) are marked.

` + imageRefHelp + ` -n limits how many ancestors are shown. --json prints
{"image", "ancestors", "children"}, each node an image with its deleted flag,
operation summary, command and exit_code.`,
		Example: `  arbor log attempt-1
  arbor log -n 5 3f2a9c1e`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: g.completeImages,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			im, err := resolveImage(ctx, c, args[0])
			if err != nil {
				return err
			}
			l, err := c.Lineage(ctx, im.UUID)
			if err != nil {
				return err
			}
			ancestors := l.Ancestors
			more := 0
			if maxCount > 0 && len(ancestors) > maxCount {
				more = len(ancestors) - maxCount
				ancestors = ancestors[:maxCount]
			}
			wrap := func(ls []apitypes.LineageImage) []*logNode {
				out := make([]*logNode, len(ls))
				for i := range ls {
					out[i] = &logNode{LineageImage: ls[i]}
				}
				return out
			}
			head := &logNode{LineageImage: l.Image}
			kids, ancs := wrap(l.Children), wrap(ancestors)
			all := append(append([]*logNode{head}, kids...), ancs...)
			describeAll(ctx, c, all)
			if g.json {
				return g.printJSON(struct {
					Image     *logNode   `json:"image"`
					Ancestors []*logNode `json:"ancestors"`
					Children  []*logNode `json:"children"`
				}{head, ancs, kids})
			}
			for i, k := range kids {
				if i == 0 {
					fmt.Fprintf(g.stdout, "* %s\n", nodeLine(k, ""))
					continue
				}
				fmt.Fprintf(g.stdout, "| * %s\n|/\n", nodeLine(k, ""))
			}
			fmt.Fprintf(g.stdout, "* %s\n", nodeLine(head, "HEAD"))
			for _, a := range ancs {
				fmt.Fprintf(g.stdout, "* %s\n", nodeLine(a, ""))
			}
			if more > 0 {
				fmt.Fprintf(g.stdout, ": ... %d more ancestors (raise -n)\n", more)
			}
			return nil
		}),
	}
	cmd.Flags().IntVarP(&maxCount, "max-count", "n", 0, "show at most this many ancestors (0: all)")
	return cmd
}

func nodeLine(n *logNode, mark string) string {
	var b strings.Builder
	b.WriteString(shortID(n.UUID))
	var refs []string
	if mark != "" {
		refs = append(refs, mark)
	}
	if n.Tag != nil {
		refs = append(refs, "tag: "+*n.Tag)
	}
	if n.Deleted {
		refs = append(refs, "deleted")
	}
	if len(refs) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(refs, ", "))
	}
	switch {
	case n.Command != "":
		fmt.Fprintf(&b, " %s", oneLine(n.Command, 60))
	case n.OperationUUID == nil:
		b.WriteString(" [base image]")
	}
	if n.ExitCode != nil {
		fmt.Fprintf(&b, " [exit %d]", *n.ExitCode)
	}
	fmt.Fprintf(&b, " %s", age(n.CreatedAt))
	return b.String()
}
