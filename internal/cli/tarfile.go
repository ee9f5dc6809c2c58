package cli

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// writeDirTar writes the tree under dir as a tar stream, names relative to
// dir: modes, owners, mtimes, symlinks and hard links are kept; sockets are
// left out.
func writeDirTar(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	type inode struct{ dev, ino uint64 }
	seen := map[inode]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSocket != 0 {
			return nil
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.Format = tar.FormatPAX
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
			key := inode{uint64(st.Dev), st.Ino}
			if first, ok := seen[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				seen[key] = hdr.Name
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
			return fmt.Errorf("%s: %w (did it change while being archived?)", p, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// extractStats counts what extractTar wrote.
type extractStats struct {
	Files   int   `json:"files"`
	Bytes   int64 `json:"bytes"`
	Skipped int   `json:"skipped,omitempty"` // devices and fifos
}

// extractTar unpacks a tar stream into dst (created if missing). Every
// member is written through an [os.Root] on dst, so names with "..", absolute
// names and symlinks in the archive cannot reach outside dst. Modes and
// mtimes are kept; owners are not. Device nodes and fifos are skipped.
func extractTar(r io.Reader, dst string) (extractStats, error) {
	var st extractStats
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return st, err
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return st, err
	}
	defer root.Close()
	type dirMeta struct {
		name  string
		mode  fs.FileMode
		mtime time.Time
	}
	var dirs []dirMeta
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, fmt.Errorf("read archive: %w", err)
		}
		name := path.Clean(strings.TrimLeft(hdr.Name, "/"))
		if name == ".." || strings.HasPrefix(name, "../") {
			return st, fmt.Errorf("archive member %q points outside the destination: refusing it", hdr.Name)
		}
		mode := fs.FileMode(hdr.Mode & 0o777)
		if name != "." {
			if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
				return st, err
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return st, err
			}
			dirs = append(dirs, dirMeta{name, mode, hdr.ModTime})
			continue
		case tar.TypeReg:
			if err := removeNonDir(root, name); err != nil {
				return st, err
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return st, err
			}
			n, err := io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return st, fmt.Errorf("write %s: %w", name, err)
			}
			st.Bytes += n
			if err := root.Chmod(name, mode); err != nil {
				return st, err
			}
		case tar.TypeSymlink:
			if err := removeNonDir(root, name); err != nil {
				return st, err
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return st, err
			}
			st.Files++
			continue // no chtimes: it would follow the link
		case tar.TypeLink:
			target := path.Clean(strings.TrimLeft(hdr.Linkname, "/"))
			if err := removeNonDir(root, name); err != nil {
				return st, err
			}
			if err := root.Link(target, name); err != nil {
				return st, fmt.Errorf("hard link %s -> %s: %w", name, hdr.Linkname, err)
			}
		default:
			st.Skipped++
			continue
		}
		st.Files++
		if err := root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
			return st, err
		}
	}
	// Directory modes last, deepest first, so a read-only directory does not
	// stop its own contents from being written.
	slices.Reverse(dirs)
	for _, d := range dirs {
		if err := root.Chmod(d.name, d.mode); err != nil {
			return st, err
		}
		_ = root.Chtimes(d.name, d.mtime, d.mtime)
	}
	return st, nil
}

// removeNonDir removes whatever non-directory is at name, so the member
// replaces it rather than writing through a symlink.
func removeNonDir(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.IsDir():
		return fmt.Errorf("%s: a directory is in the way", name)
	}
	return root.Remove(name)
}
