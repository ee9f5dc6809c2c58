package s3store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The cache is not synced as it is written: a layer is durable once its
// object is in the bucket, and fsyncing its cached copy too (a directory
// tree, or a whole filesystem after a fetch) cost the commit of a step
// milliseconds on a busy disk. What a crash of arbor leaves in the page
// cache is intact; only a crash of the machine can leave a cached copy cut
// short. So the cache records the boot it was written in (bootFile):
// opened in another boot, it is trusted only if it was synced when the
// store was closed in that boot, and is otherwise emptied (its layers are
// fetched again when needed).
const bootFile = ".boot"

// bootID returns the kernel's id of this boot (a test replaces it).
var bootID = func() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read this boot's id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// trustCache tells whether the cached copies can be used as they are.
func (s *Store) trustCache() (bool, error) {
	boot, err := bootID()
	if err != nil {
		return false, err
	}
	b, err := os.ReadFile(filepath.Join(s.cacheDir, bootFile))
	if err != nil {
		if os.IsNotExist(err) {
			return false, nil // a new cache, or one from before the boot was recorded
		}
		return false, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return false, nil
	}
	if f[0] == boot || (len(f) == 2 && f[1] == "synced") {
		return true, nil
	}
	s.log.Info("layer cache: written in an earlier boot that did not end with a clean stop; fetching its layers again when needed", "dir", s.cacheDir)
	return false, nil
}

// writeBoot records this boot in dir, durably, and whether everything
// written in it so far is durable too (synced).
func writeBoot(dir string, synced bool) error {
	boot, err := bootID()
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString(boot)
	if synced {
		b.WriteString(" synced")
	}
	b.WriteByte('\n')
	tmp := filepath.Join(dir, bootFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b.Bytes())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, bootFile))
	}
	if err == nil {
		err = syncDir(dir)
	}
	return err
}

// closeCache makes the cache durable and records that it is, so that the
// next boot keeps it.
func (s *Store) closeCache() error {
	if err := syncfs(s.cacheDir); err != nil {
		return err
	}
	if err := writeBoot(s.cacheDir, true); err != nil {
		return err
	}
	s.synced.Store(true)
	return nil
}

// unsynced records, before a layer enters the cache of a closed store,
// that the cache is no longer all durable.
func (s *Store) unsynced() error {
	if !s.synced.CompareAndSwap(true, false) {
		return nil
	}
	return writeBoot(s.cacheDir, false)
}
