// Command arbor is the arbor daemon and its command-line client.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/arborsh/arbor/internal/cli"
	"github.com/arborsh/arbor/internal/initproc"
)

func main() {
	// Inside a warm sandbox this binary is the init (when built static).
	if len(os.Args) > 1 && os.Args[1] == initproc.Arg {
		os.Exit(initproc.Main(os.Args[1:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
