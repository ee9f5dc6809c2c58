package layers

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
)

// Storage holds the contents of layers by id. Implementations must be safe
// for concurrent use; [Snapshotter] serialises Remove with its collections
// and leases, and puts only ids a lease pins, outside that lock.
type Storage interface {
	// Put moves the complete directory dir into storage as layer id; dir
	// is durable on the local disk unless the storage is [Remote]. dir is consumed on success. If id is already stored, Put fails
	// with an error of class errdefs.ErrConflict and leaves dir alone.
	Put(ctx context.Context, id, dir string) error
	// Get returns a local directory holding layer id's contents, which the
	// caller must not modify. A layer not stored is errdefs.ErrNotFound.
	Get(ctx context.Context, id string) (string, error)
	// Remove removes layer id; removing a layer not stored is no error.
	// It should be quick: a [Cleaner] may defer the slow part.
	Remove(ctx context.Context, id string) error
	// List returns the ids of the stored layers.
	List(ctx context.Context) ([]string, error)
}

// Cleaner is implemented by a [Storage] whose Remove only unlinks a layer
// and leaves the deletion of its contents for later. Cleanup does that
// deletion; it runs without the collection's lock.
type Cleaner interface {
	Cleanup(ctx context.Context) error
}

// Remote is implemented by a [Storage] whose Put makes a layer durable
// elsewhere (an object store) before it returns, and which keeps local
// copies only as a cache it does not trust after a crash of the machine
// (s3store records the boot it wrote them in). The [Snapshotter] does not
// sync a directory before putting it there: the local disk's flush is not
// what makes the layer durable.
type Remote interface {
	DurableElsewhere()
}

// Pinner is implemented by a [Storage] whose Get results can go away on
// their own, such as a bounded cache of a remote store. [Snapshotter] calls
// Pin when a lease first holds id and Unpin when the last lease holding it
// is released, both under its lock, so they must be quick and must not call
// back into it. A directory Get returned stays while its id is pinned.
type Pinner interface {
	Pin(id string)
	Unpin(id string)
}

// SharedRemover is implemented by a [Storage] that other nodes share, whose
// own rules (what the shared metadata references, what other nodes hold)
// may keep layers this node's collection found unneeded. [Snapshotter]
// then collects through RemoveUnneeded instead of Remove: it removes those
// of ids it may and returns them. It runs under the collection's lock.
type SharedRemover interface {
	RemoveUnneeded(ctx context.Context, ids []string) (removed []string, err error)
	// Removable returns those of ids RemoveUnneeded would remove now,
	// removing nothing (a dry run).
	Removable(ctx context.Context, ids []string) ([]string, error)
}

// Sizer is implemented by a [Storage] whose Get is expensive (it fetches):
// StoredBytes counts the stored layers and their bytes as kept, without
// fetching any.
type Sizer interface {
	StoredBytes(ctx context.Context) (layers int, bytes int64, err error)
}

// Dir is a [Storage] of plain directories: layer id is root/id. Removed
// layers are first renamed into a trash directory on the same filesystem
// (one quick rename under the collection's lock) and deleted by Cleanup.
type Dir struct {
	root, trash string
	removeAll   func(string) error // os.RemoveAll; a test blocks it
}

var (
	_ Storage = (*Dir)(nil)
	_ Cleaner = (*Dir)(nil)
)

// NewDir returns the directory storage under root, with removed layers
// passing through trash (both are created; trash must be on root's
// filesystem). Leftovers of an interrupted run — staging siblings named
// "*.tmp*" and the trash's contents — are deleted.
func NewDir(root, trash string) (*Dir, error) {
	d := &Dir{root: root, trash: trash, removeAll: os.RemoveAll}
	for _, p := range []string{root, trash} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, err
		}
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	for _, ent := range ents {
		if isStaging(ent.Name()) {
			_ = os.RemoveAll(filepath.Join(root, ent.Name()))
		}
	}
	return d, d.Cleanup(context.Background())
}

// isStaging reports whether name is a directory being written, not a layer.
func isStaging(name string) bool { return strings.Contains(name, ".tmp") }

// Path returns where layer id is (or would be) stored.
func (d *Dir) Path(id string) string { return filepath.Join(d.root, id) }

func checkID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") || isStaging(id) {
		return errdefs.InvalidArgument("invalid layer id %q", id)
	}
	return nil
}

// Put renames dir into place and syncs the store's directory.
func (d *Dir) Put(ctx context.Context, id, dir string) error {
	if err := checkID(id); err != nil {
		return err
	}
	// NOREPLACE: a plain rename would replace an empty directory.
	if err := unix.Renameat2(unix.AT_FDCWD, dir, unix.AT_FDCWD, d.Path(id), unix.RENAME_NOREPLACE); err != nil {
		if err == unix.EEXIST {
			return errdefs.Conflict("layer %s is already stored", id)
		}
		return fmt.Errorf("move layer into store: %w", &os.LinkError{Op: "rename", Old: dir, New: d.Path(id), Err: err})
	}
	return syncDir(d.root)
}

// Get returns root/id if it is a directory.
func (d *Dir) Get(ctx context.Context, id string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	p := d.Path(id)
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.IsDir()) {
		return "", fmt.Errorf("layer %s: %w", id, errdefs.ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	return p, nil
}

// Remove renames layer id into the trash.
func (d *Dir) Remove(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	err := os.Rename(d.Path(id), filepath.Join(d.trash, id+"-"+rand.Text()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// List lists root's layer directories.
func (d *Dir) List(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(d.root)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, ent := range ents {
		if ent.IsDir() && !isStaging(ent.Name()) {
			ids = append(ids, ent.Name())
		}
	}
	return ids, nil
}

// Cleanup deletes what is in the trash.
func (d *Dir) Cleanup(ctx context.Context) error { return emptyDir(ctx, d.trash, d.removeAll) }

// EmptyDir deletes everything in dir (a storage's trash), stopping early
// when ctx ends.
func EmptyDir(ctx context.Context, dir string) error { return emptyDir(ctx, dir, os.RemoveAll) }

func emptyDir(ctx context.Context, dir string, removeAll func(string) error) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, ent := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := removeAll(filepath.Join(dir, ent.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}
