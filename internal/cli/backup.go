package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/daemon"
	"github.com/spf13/cobra"
)

// serveHome is the home backup and restore work on: --home, then
// $ARBOR_HOME, then the default.
func (g *globals) serveHome() string {
	if g.home != "" {
		return g.home
	}
	return envOr("ARBOR_HOME", daemon.DefaultHome)
}

// backupResult is the --json output of backup and restore.
type backupResult struct {
	Database string `json:"database"`
	Backup   string `json:"backup"`
	Previous string `json:"previous,omitempty"` // restore: where the replaced database is kept
}

func newBackup(g *globals) *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Back up the daemon's metadata to FILE, online",
		Long: `Write a consistent copy of the metadata database (<home>/arbor.db: accounts,
tokens, images and tags, operations and their event logs, uploaded-file
records) to FILE, while the daemon runs. Runs and commits go on meanwhile: the
copy is the database as of one commit (SQLite VACUUM INTO).

The layers (<home>/layers) and uploaded file contents (<home>/blobs) are not in it: they are
immutable, content-named directories and files that stay in the home (copy
them with any file-level tool). Restore with arbor restore.

With the metadata in PostgreSQL (arbor serve --db, ARBOR_DB or db in the
config file) it refuses and names pg_dump, and what to do with the layers.

--json prints {"database", "backup"}: the database copied and the file
written.`,
		Example: `  sudo arbor backup /srv/backup/arbor-$(date +%F).db`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pg, blobs, from, ok := servedStores(g, configFile); ok && pg != "" {
				return postgresBackupError("backup", pg, blobs, g.serveHome(), from)
			}
			db := filepath.Join(g.serveHome(), "arbor.db")
			if err := daemon.Backup(cmd.Context(), g.serveHome(), args[0]); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(backupResult{Database: db, Backup: args[0]})
			}
			fmt.Fprintf(g.stdout, "backed up %s to %s\n", db, args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "arbor serve's config file, to tell a PostgreSQL --db (default $ARBOR_CONFIG, else "+DefaultConfigFile+" if it exists)")
	return cmd
}

func newRestore(g *globals) *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Restore the metadata from a backup (daemon stopped)",
		Long: `Put the backup FILE (made by arbor backup) in place of <home>/arbor.db. The
daemon must be stopped; the current database is kept beside it as
arbor.db.before-restore-<time>. The backup is checked first, so a damaged or
foreign file changes nothing.

The metadata goes back to the backup's time; the layers in <home>/layers stay.
At its next start the daemon fails the operations the backup saw in flight
("daemon restarted") and collects the layers of images made after the backup.
Images deleted after the backup come back only if their layers were still
needed by another image; restore onto the home the backup came from.

This is not arbor checkpoint restore IMAGE, which starts instances from an
image's memory checkpoint. --json prints {"database", "backup", "previous"}:
the database replaced, the backup put in its place, and where the database
it replaced is kept (absent if there was none).`,
		Example: `  sudo systemctl stop arbor
  sudo arbor restore /srv/backup/arbor-2026-12-01.db
  sudo systemctl start arbor`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			home := g.serveHome()
			if pg, blobs, from, ok := servedStores(g, configFile); ok && pg != "" {
				return postgresBackupError("restore", pg, blobs, home, from)
			}
			// Before the daemon check: `arbor restore tag:x` is most likely a
			// checkpoint restore, which needs the daemon running.
			if err := backupFile(args[0]); err != nil {
				return err
			}
			if url, ok := daemonAnswers(cmd.Context(), home); ok {
				return fmt.Errorf("the daemon of %s is running at %s: stop it first (sudo systemctl stop arbor), then restore", home, url)
			}
			kept, err := daemon.Restore(cmd.Context(), home, args[0])
			if err != nil {
				return err
			}
			db := filepath.Join(home, "arbor.db")
			if g.json {
				return g.printJSON(backupResult{Database: db, Backup: args[0], Previous: kept})
			}
			fmt.Fprintf(g.stdout, "restored %s from %s\n", db, args[0])
			if kept != "" {
				fmt.Fprintf(g.stdout, "the previous database is kept as %s\n", kept)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "arbor serve's config file, to tell a PostgreSQL --db (default $ARBOR_CONFIG, else "+DefaultConfigFile+" if it exists)")
	return cmd
}

// backupFile checks that arg names a file arbor restore can read, and when
// it names none, points to the command meant for images.
func backupFile(arg string) error {
	fi, err := os.Stat(arg)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: no such file. arbor restore puts back a metadata backup FILE made by arbor backup; "+
			"to start instances from an image's memory checkpoint, use arbor checkpoint restore IMAGE (e.g. arbor checkpoint restore %s)", arg, arg)
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a file: give the backup file made by arbor backup", arg)
	}
	return nil
}

// daemonAnswers reports whether a daemon answers at the url home names.
func daemonAnswers(ctx context.Context, home string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(home, "url"))
	if err != nil {
		return "", false
	}
	url := strings.TrimSpace(string(b))
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/openapi.json", nil)
	if err != nil {
		return "", false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", false
	}
	resp.Body.Close()
	return url, true
}
