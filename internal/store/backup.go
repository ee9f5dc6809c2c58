package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Backup writes a consistent copy of the database at path to dst while a
// daemon may be using it. It runs VACUUM INTO on a connection of its own:
// one read transaction, so the copy is the database as of one commit; in
// WAL mode it blocks no writer, and unlike the page-copying backup API
// stepped in pieces it never restarts when a writer commits meanwhile.
// The copy is compacted and has no WAL, so it is one self-contained file.
// dst is written under a temporary name, synced and renamed, so a crash
// never leaves a partial backup under its name; an existing dst is refused.
func Backup(ctx context.Context, path, dst string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("backup: no database: %w (is --home the daemon's home?)", err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("backup: %s exists: choose a new file name", dst)
	}
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	_ = os.Remove(tmp)
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup %s: %w", path, err)
	}
	if err := syncFile(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncFile(filepath.Dir(dst))
}

// Restore puts the backup file in place of the database at path. The
// daemon must be stopped. The current database (with its WAL) is kept
// beside it as path.before-restore-<time>, which it returns. The backup is
// checked first (SQLite integrity check, arbor's schema), so a wrong or
// damaged file changes nothing.
func Restore(ctx context.Context, backup, path string) (kept string, err error) {
	if err := checkBackup(ctx, backup); err != nil {
		return "", err
	}
	tmp := path + ".restore.tmp"
	if err := copyFile(backup, tmp); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if _, err := os.Stat(path); err == nil {
		kept = path + ".before-restore-" + time.Now().UTC().Format("20060102T150405Z")
		for _, sfx := range []string{"", "-wal", "-shm"} {
			if err := os.Rename(path+sfx, kept+sfx); err != nil && !errors.Is(err, os.ErrNotExist) {
				os.Remove(tmp)
				return "", fmt.Errorf("restore: keep the current database: %w", err)
			}
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return kept, err
	}
	return kept, syncFile(filepath.Dir(path))
}

// checkBackup opens a backup read-only and checks it is a sound arbor
// database.
func checkBackup(ctx context.Context, file string) error {
	if _, err := os.Stat(file); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+file+"?mode=ro")
	if err != nil {
		return err
	}
	defer db.Close()
	var ok string
	if err := db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		return fmt.Errorf("restore: %s is not a sound SQLite database (integrity check: %q, %v): nothing was changed", file, ok, err)
	}
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('images', 'operations', 'tokens')").Scan(&n); err != nil || n != 3 {
		return fmt.Errorf("restore: %s is not an arbor metadata backup (no images, operations and tokens tables): nothing was changed", file)
	}
	if version > len(migrations) {
		return fmt.Errorf("restore: %s has schema version %d, newer than this arbor's %d: restore it with the arbor that made it", file, version, len(migrations))
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		return err
	}
	return syncFile(dst)
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
