// Package cli implements the arbor command line. Every command except serve
// talks to the daemon through the Go client (package client) only.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code through cobra.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// globals are the flags every command shares.
type globals struct {
	url, token, home string
	json             bool
	stdin            io.Reader
	stdout, stderr   io.Writer
}

// Main runs the CLI with args and returns the process exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintln(stderr, "arbor:", err)
		return 1
	}
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "arbor",
		Short: "Sandboxes that branch like git",
		Long: `arbor runs commands in isolated sandboxes on immutable filesystem images.
Every non-disposable run snapshots the filesystem into a new image; fork from
any image, run branches in parallel, keep the winner, roll back by switching a
reference, and read any image's files without starting anything.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.url, "url", "", "daemon URL (default: $ARBOR_URL, then the local daemon's url file)")
	root.PersistentFlags().StringVar(&g.token, "token", "", "bearer token (default: $ARBOR_TOKEN, then the local token file)")
	root.PersistentFlags().StringVar(&g.home, "home", "", "daemon home for discovery (default: $ARBOR_HOME or /var/lib/arbor)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print machine-readable JSON")
	root.AddCommand(newServe(g))
	root.AddCommand(clientCommands(g)...)
	root.AddCommand(newMCP(g), newBench(g))
	root.AddCommand(newBackup(g), newRestore(g), newInstallService(g))
	return root
}
