package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/spf13/cobra"
)

func newGC(g *globals) *cobra.Command {
	var dry bool
	var account string
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Apply the retention policies now: delete expired images and logs, free their disk",
		Long: `Apply the daemon's retention policies now (it also does so every --gc-interval):
untagged images older than the account's image TTL that no tagged, younger or
in-use image descends from are deleted, finished operations older than the
operation TTL go with their logs, and layers nothing needs any more are
removed. A tagged image, its ancestors and any image a queued or running
operation uses are never collected.

--dry-run lists what would go and how many bytes would come back, changing
nothing. A token of the "default" account collects every account (or the one
--account names); other tokens collect their own.`,
		Example: `  arbor gc --dry-run
  arbor gc
  arbor gc --account alice --json`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			r, err := c.GC(ctx, dry, account)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(r)
			}
			verb, freed := "deleted", "freed"
			if r.DryRun {
				verb, freed = "would delete", "would free"
			}
			if len(r.Images) > 0 {
				t := newTable(g.stdout)
				fmt.Fprintln(t, "IMAGE\tACCOUNT\tCREATED")
				for _, im := range r.Images {
					created := im.CreatedAt
					if ts, err := time.Parse(time.RFC3339Nano, im.CreatedAt); err == nil {
						created = ts.Local().Format("2006-01-02 15:04")
					}
					fmt.Fprintf(t, "%s\t%s\t%s\n", im.UUID, im.Account, created)
				}
				t.Flush()
			}
			fmt.Fprintf(g.stdout, "%s %d image(s), %d operation log(s) (%d events) and %d upload(s); %s %s: %s in %d layer(s), %s in %d export blob(s), %s of uploads\n",
				verb, len(r.Images), r.Operations, r.Events, r.Uploads, freed, humanBytes(r.Bytes), humanBytes(r.LayerBytes), r.Layers, humanBytes(r.ExportBytes), r.ExportBlobs,
				humanBytes(r.UploadBytes))
			if r.Checkpoints > 0 {
				fmt.Fprintf(g.stdout, "and %d memory checkpoint(s), %s: with those images, or older than --checkpoint-ttl\n", r.Checkpoints, humanBytes(r.CheckpointBytes))
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "only report what would go and the bytes that would come back")
	cmd.Flags().StringVar(&account, "account", "", "default account only: collect this account alone")
	return cmd
}

func newDF(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "df",
		Short: "Show disk, images and runs per account",
		Long: `Show what the account holds: its images (tagged among them), the layers their
chains need and the disk those use, each layer once. A layer several accounts
use (a base image each imported) is shared: SHARED is that part, and
ATTRIBUTED splits it evenly among them, so the accounts' ATTRIBUTED add up to
the store's total. CHECKPOINTS are the memory checkpoints kept with images
(arbor checkpoint), outside the layers. QUOTA is what --max-storage-bytes
counts (checkpoints, uploads and registry exports too). PENDING and RUNNING are operations waiting for a slot
and holding one. --all (default account only) shows every account.`,
		Example: `  arbor df
  sudo arbor df --all --json`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			r, err := c.DiskUsage(ctx, all)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(r)
			}
			t := newTable(g.stdout)
			fmt.Fprintln(t, "ACCOUNT\tIMAGES\tTAGGED\tLAYERS\tDISK\tSHARED\tATTRIBUTED\tCHECKPOINTS\tQUOTA\tPENDING\tRUNNING\tIMAGE TTL\tLOG TTL\tUPLOAD TTL")
			for _, a := range r.Accounts {
				fmt.Fprintf(t, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", a.Account, a.Images, a.TaggedImages, a.Layers,
					humanBytes(a.DiskBytes), humanBytes(a.SharedBytes), humanBytes(a.AttributedBytes), humanBytes(a.CheckpointBytes), humanBytes(a.QuotaBytes),
					a.Pending, a.Running, ttl(a.ImageTTLSeconds), ttl(a.OperationTTLSeconds), ttl(a.UploadTTLSeconds))
			}
			t.Flush()
			quota := "unlimited"
			if r.MaxStorageBytes > 0 {
				quota = humanBytes(r.MaxStorageBytes)
			}
			fmt.Fprintf(g.stdout, "store: %d layer(s), %s; quota per account: %s; operations in flight per account: %d at most\n",
				r.Layers, humanBytes(r.Bytes), quota, r.MaxConcurrent)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&all, "all", false, "every account (tokens of the default account only)")
	return cmd
}

// ttl renders a retention TTL in seconds.
func ttl(s int64) string {
	if s <= 0 {
		return "never"
	}
	return (time.Duration(s) * time.Second).String()
}
