package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/spf13/cobra"
)

func newImages(g *globals) *cobra.Command {
	var (
		prefix, since string
		all, quiet    bool
		limit         int
	)
	cmd := &cobra.Command{
		Use:     "images",
		Aliases: []string{"image"},
		Short:   "List images",
		Long: `List images, newest first. By default only tagged images are listed; --all
includes the untagged ones every run produces. --prefix keeps tags starting
with P (an exact match first); --since keeps images created within a
duration (15m, 2h, 3d, 1w) or after an RFC 3339 time.

--json prints the array of images (uuid, tag, created_at, operation_uuid,
parent_uuid, depth, layer_bytes, checkpoint_bytes); -q prints UUIDs only.
CHECKPOINT is the memory checkpoint kept with an image (arbor checkpoint).`,
		Example: `  arbor images
  arbor images --all --since 1h
  arbor images --prefix attempt- -q | xargs arbor rmi`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			if limit < 1 || limit > 1000 {
				return fmt.Errorf("--limit %d: use 1 to 1000", limit)
			}
			ims, err := c.ListImages(ctx, client.ImageListOptions{Page: client.Page{Limit: limit, Since: since}, Tagged: !all, TagPrefix: prefix})
			if err != nil {
				return err
			}
			if ims == nil {
				ims = []apitypes.Image{}
			}
			switch {
			case g.json:
				return g.printJSON(ims)
			case quiet:
				for _, im := range ims {
					fmt.Fprintln(g.stdout, im.UUID)
				}
				return nil
			}
			if len(ims) == 0 {
				hint := "import one with `arbor import --busybox` or `arbor import REF`"
				if !all {
					hint = "no tagged images; `arbor images --all` lists untagged ones too, or " + hint
				}
				g.errorf("%s", hint)
				return nil
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "IMAGE\tTAG\tCREATED\tPARENT\tDEPTH\tLAYER\tCHECKPOINT")
			for _, im := range ims {
				parent := "-"
				if im.ParentUUID != nil {
					parent = shortID(*im.ParentUUID)
				}
				tag := deref(im.Tag)
				if tag == "" {
					tag = "-"
				}
				ckpt := "-"
				if im.CheckpointBytes > 0 {
					ckpt = humanBytes(im.CheckpointBytes)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", shortID(im.UUID), tag, age(im.CreatedAt), parent, im.Depth, humanBytes(im.LayerBytes), ckpt)
			}
			return tw.Flush()
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&prefix, "prefix", "", "only tags starting with this")
	fl.StringVar(&since, "since", "", "only images created within this duration (15m, 2h, 3d, 1w) or after an RFC 3339 time")
	fl.BoolVarP(&all, "all", "a", false, "include untagged images")
	fl.IntVar(&limit, "limit", 100, "list at most this many (1-1000)")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print full image UUIDs only")
	return cmd
}

func newTag(g *globals) *cobra.Command {
	var rm bool
	cmd := &cobra.Command{
		Use:   "tag IMAGE TAG | tag --rm IMAGE [TAG]",
		Short: "Name an image, or remove its name",
		Long: `Tag IMAGE as TAG. An image has at most one tag, so this replaces its current
one. Tags are unique per account and movable: if another image has TAG, the
tag moves. With --rm, remove IMAGE's tag (if TAG is given, only
when IMAGE carries that tag). ` + imageRefHelp + `

--json prints the image afterwards.`,
		Example: `  arbor tag 3f2a9c1e known-good
  arbor tag --rm known-good
  arbor tag --rm 3f2a9c1e known-good`,
		Args: func(cmd *cobra.Command, args []string) error {
			if rm {
				return cobra.RangeArgs(1, 2)(cmd, args)
			}
			if len(args) != 2 {
				return errors.New("tag needs IMAGE and TAG: `arbor tag IMAGE TAG` (or `arbor tag --rm IMAGE` to remove a tag)")
			}
			return nil
		},
		ValidArgsFunction: g.completeImages,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			if !rm {
				if err := apitypes.ValidTag(args[1]); err != nil {
					return err
				}
			}
			im, err := resolveImage(ctx, c, args[0])
			if err != nil {
				return err
			}
			var out *apitypes.Image
			if rm {
				t := ""
				if len(args) == 2 {
					t = args[1]
				}
				if im.Tag == nil {
					return fmt.Errorf("image %s has no tag to remove", im.UUID)
				}
				out, err = c.RemoveTag(ctx, im.UUID, t)
			} else {
				out, err = c.SetTag(ctx, im.UUID, args[1])
			}
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(out)
			}
			if rm {
				fmt.Fprintf(g.stdout, "untagged %s (was %s)\n", out.UUID, deref(im.Tag))
			} else {
				fmt.Fprintf(g.stdout, "tagged %s as %s\n", out.UUID, deref(out.Tag))
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&rm, "rm", false, "remove the tag instead of setting one")
	return cmd
}

func newRmi(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rmi IMAGE...",
		Short: "Delete images",
		Long: `Delete images. Their layers stay as long as other images are built on them;
lineage keeps showing deleted ancestors. ` + imageRefHelp + `

Exit status 1 if any image could not be deleted. --json prints an array of
{"ref" (the argument as given), "image" (its UUID), "tag", "deleted",
"error"}.`,
		Example: `  arbor rmi attempt-2 3f2a9c1e
  arbor images --prefix attempt- -q | xargs arbor rmi`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: g.completeImages,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			type row struct {
				Ref     string  `json:"ref"`
				Image   string  `json:"image,omitempty"`
				Tag     *string `json:"tag,omitempty"`
				Deleted bool    `json:"deleted"`
				Error   string  `json:"error,omitempty"`
			}
			var rows []row
			failed := false
			for _, ref := range args {
				r := row{Ref: ref}
				im, err := resolveImage(ctx, c, ref)
				if err == nil {
					r.Image, r.Tag = im.UUID, im.Tag
					err = c.DeleteImage(ctx, im.UUID)
				}
				if err != nil {
					if ctx.Err() != nil {
						return err
					}
					failed = true
					r.Error = g.explain(err, c).Error()
					if !g.json {
						g.errorf("rmi %s: %s", ref, r.Error)
					}
				} else {
					r.Deleted = true
					if !g.json {
						fmt.Fprintf(g.stdout, "deleted %s\n", im.UUID)
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
