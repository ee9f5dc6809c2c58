package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/arborsh/arbor/internal/daemon"
	"github.com/spf13/cobra"
)

func newServe(g *globals) *cobra.Command {
	var cfg daemon.Config
	var verbose bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the arbor daemon",
		Long: `Run the arbor daemon with its embedded store (SQLite) under --home.

It binds loopback by default and writes <home>/url and <home>/token (0600),
which local tools (the arbor CLI, the Python SDK) read, so they need no flags.`,
		Example: `  sudo arbor serve
  sudo arbor serve --home /srv/arbor --listen 127.0.0.1:8080 --runtime runc
  sudo arbor serve --allow-runtime runc   # gVisor by default; runs may ask for runc`,
		RunE: func(cmd *cobra.Command, args []string) error {
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			cfg.Logger = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
			if cfg.Home == "" {
				cfg.Home = g.home
			}
			if cfg.Home == "" {
				cfg.Home = envOr("ARBOR_HOME", daemon.DefaultHome)
			}
			cfg.Ready = func(url string) {
				fmt.Fprintf(g.stdout, "arbor listening on %s\ntoken file: %s\n", url, filepath.Join(cfg.Home, "token"))
			}
			return daemon.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Home, "home", "", "state directory (default $ARBOR_HOME or "+daemon.DefaultHome+")")
	f.StringVar(&cfg.Listen, "listen", daemon.DefaultListen, "address to listen on (keep it loopback unless you put TLS in front)")
	f.StringVar(&cfg.Token, "token", "", "use this secret as the local token instead of a generated one")
	f.StringVar(&cfg.Engine.Runtime, "runtime", "runsc", "default sandbox runtime: runsc (gVisor), runc or crun (a default other than runsc is allowed for every account)")
	f.StringSliceVar(&cfg.Engine.AllowedRuntimes, "allow-runtime", nil, "also allow runs to ask for these runtimes (runc, crun: shared kernel, hardened; see README \"Runtime security\"); runsc is always allowed")
	f.IntVar(&cfg.Engine.Slots, "slots", 0, "concurrent runs (default 4 per CPU, at least 8)")
	f.IntVar(&cfg.Engine.MaxTimeout, "max-timeout", 3600, "longest run timeout clients may ask for, in seconds")
	f.Int64Var(&cfg.Engine.MaxStorageBytes, "max-storage-bytes", 0, "per-account storage quota in bytes (0: unlimited)")
	f.IntVar(&cfg.Engine.MaxConcurrentOps, "max-concurrent", 64, "per-account operations in flight")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	return cmd
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
