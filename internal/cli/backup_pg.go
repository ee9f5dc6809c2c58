package cli

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
)

// servedStores returns the --db and --blobs settings a daemon started by
// `arbor serve` would resolve from the same environment and config file
// (configFile: --config, "" for $ARBOR_CONFIG or the default file), and
// where the db setting came from. A config file that does not resolve is
// left to arbor serve to report: ok is false then.
func servedStores(g *globals, configFile string) (db, blobs string, from source, ok bool) {
	fs := newServe(g).LocalFlags()
	path, err := configPath(configFile, os.Getenv)
	if err != nil {
		return "", "", source{}, false
	}
	src, err := resolveSettings(fs, os.Getenv, path)
	if err != nil {
		return "", "", source{}, false
	}
	return fs.Lookup("db").Value.String(), fs.Lookup("blobs").Value.String(), src["db"], true
}

// postgresBackupError is what arbor backup and restore answer when the
// daemon's metadata is in PostgreSQL: they copy a SQLite file, and
// PostgreSQL has its own tools, which also work online.
func postgresBackupError(cmd, db, blobs, home string, from source) error {
	shown := db
	if u, err := url.Parse(db); err == nil {
		shown = u.Redacted() // never print the password
	}
	layers := "The layers are not in the database: they stay in " + filepath.Join(home, "layers") + "; copy them with any file-level tool."
	if blobs != "" {
		layers = "The layers are not in the database: they are in " + blobs + "; turn on versioning for that bucket (or copy the prefix, e.g. aws s3 sync) so that a restored database finds every layer its images name."
	}
	return fmt.Errorf("arbor %s copies the SQLite metadata database, but this daemon keeps its metadata in PostgreSQL (db = %s, from %s). "+
		"Back PostgreSQL up with its own tools, online and consistent: pg_dump --format=custom --file=arbor-$(date +%%F).dump '%s' "+
		"(or your provider's snapshots); restore with pg_restore --dbname=URL into an empty database, then start arbor serve with --db pointing at it. %s",
		cmd, shown, from, shown, layers)
}
