package archive

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
)

// stageSuffix marks staging directories. A crash can leave one behind as
// ".<final>.stage-<random>" next to final; [IsStaging] lets a startup sweep
// find them.
const stageSuffix = ".stage-"

// Stage builds a directory crash-safely: it creates a temporary sibling of
// final (so the rename stays on one filesystem), calls fill with it, flushes
// everything written to disk, and only then renames it to final. Readers
// therefore see either no final or a complete and durable one.
//
// final must not exist (errdefs.ErrConflict otherwise). The temporary
// directory starts with mode 0755, the usual mode of an image root; fill may
// change it. If fill fails or ctx is done, the temporary directory is
// removed and final is not created. fill should itself watch ctx for long
// work.
func Stage(ctx context.Context, final string, fill func(tmp string) error) (err error) {
	final = filepath.Clean(final)
	if _, err := os.Lstat(final); err == nil {
		return errdefs.Conflict("%s already exists; remove it or choose another destination", final)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	parent, base := filepath.Split(final)
	if parent == "" {
		parent = "."
	}
	tmp, err := os.MkdirTemp(parent, "."+base+stageSuffix)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if rerr := os.RemoveAll(tmp); rerr != nil {
				err = errors.Join(err, fmt.Errorf("remove staging directory: %w", rerr))
			}
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := fill(tmp); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := syncfs(tmp); err != nil {
		return err
	}
	// RENAME_NOREPLACE: a final created meanwhile is never overwritten.
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return errdefs.Conflict("%s already exists; remove it or choose another destination", final)
		}
		return &os.LinkError{Op: "rename", Old: tmp, New: final, Err: err}
	}
	// Make the rename itself durable.
	return fsyncDir(parent)
}

// IsStaging reports whether name (a base name) is a staging directory that
// [Stage] creates, so that a sweep after a crash can remove leftovers.
func IsStaging(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, stageSuffix)
}

// syncfs flushes the whole filesystem holding dir. One syncfs is far cheaper
// than an fsync per file for a layer of thousands of files.
func syncfs(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return &os.PathError{Op: "syncfs", Path: dir, Err: err}
	}
	return nil
}

func fsyncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return &os.PathError{Op: "fsync", Path: dir, Err: err}
	}
	return nil
}
