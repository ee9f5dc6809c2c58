package daemon

import (
	"context"
	"path/filepath"

	"github.com/arborsh/arbor/internal/store"
)

// Backup writes a consistent copy of home's metadata database to dst
// while the daemon may be running (store.Backup: SQLite VACUUM INTO).
// Layers and uploaded files are not in it: they stay in home.
func Backup(ctx context.Context, home, dst string) error {
	return store.Backup(ctx, filepath.Join(home, "arbor.db"), dst)
}

// Restore puts a backup in place of home's metadata database; the daemon
// must be stopped. It returns where the replaced database was kept.
func Restore(ctx context.Context, home, backup string) (kept string, err error) {
	return store.Restore(ctx, backup, filepath.Join(home, "arbor.db"))
}
