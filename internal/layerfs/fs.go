package layerfs

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
)

// maxSymlinks is the number of symlinks one resolution may follow; it is
// Linux's MAXSYMLINKS, so clients see the limit they know from the kernel.
const maxSymlinks = 40

// FS is the read-only merged view of a chain of layer directories (top first).
// It holds no open files, so it needs no Close and is safe for concurrent use.
type FS struct {
	layers []string
}

// New returns the merged view of layers, given as absolute host paths with
// the top layer first. The layers are only read when FS methods are called.
func New(layers []string) *FS {
	l := make([]string, len(layers))
	for i, p := range layers {
		l[i] = filepath.Clean(p)
	}
	return &FS{layers: l}
}

// Entry describes one merged filesystem entry (lstat semantics).
type Entry struct {
	Name     string      // base name; "/" for the root
	Path     string      // canonical (symlink-free) absolute path inside the image
	Mode     fs.FileMode // Go file mode including type bits
	RawMode  uint32      // st_mode as the kernel reports it, e.g. 0100644
	Size     int64
	UID, GID uint32
	Nlink    uint64
	ModTime  time.Time
	Linkname string // symlink target, "" otherwise
	Layer    int    // index of the layer the entry comes from
	HostPath string // absolute host path of the backing entry in that layer
}

// node is a resolved merged entry.
type node struct {
	path  string // canonical image path
	layer int    // topmost layer holding the entry
	st    unix.Stat_t
	// dirs lists, for a directory, the layers whose same path is merged into
	// it, top first. Two nodes with the same dirs host paths have identical
	// subtrees.
	dirs []int
}

func (n *node) isDir() bool     { return n.st.Mode&unix.S_IFMT == unix.S_IFDIR }
func (n *node) isSymlink() bool { return n.st.Mode&unix.S_IFMT == unix.S_IFLNK }
func (n *node) isRegular() bool { return n.st.Mode&unix.S_IFMT == unix.S_IFREG }

// host returns the host path of image path p in layer l.
func (f *FS) host(l int, p string) string { return filepath.Join(f.layers[l], p) }

func (f *FS) hostOf(n *node) string { return f.host(n.layer, n.path) }

// Lstat returns the entry at path without following a final symlink.
func (f *FS) Lstat(path string) (Entry, error) {
	n, err := f.resolve(path, false)
	if err != nil {
		return Entry{}, err
	}
	return f.entry(n)
}

// Stat returns the entry at path, following symlinks inside the image.
func (f *FS) Stat(path string) (Entry, error) {
	n, err := f.resolve(path, true)
	if err != nil {
		return Entry{}, err
	}
	return f.entry(n)
}

// ReadDir returns the merged listing of the directory at path, sorted by name.
// A final symlink is followed.
func (f *FS) ReadDir(path string) ([]Entry, error) {
	n, err := f.resolveDir(path)
	if err != nil {
		return nil, err
	}
	children, err := f.readDir(n)
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, len(children))
	for _, c := range children {
		e, err := f.entry(c)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// Open opens the regular file at path for reading, following symlinks inside
// the image. The caller closes the file.
func (f *FS) Open(path string) (*os.File, Entry, error) {
	n, err := f.resolve(path, true)
	if err != nil {
		return nil, Entry{}, err
	}
	if !n.isRegular() {
		return nil, Entry{}, errdefs.InvalidArgument("not a regular file: %s", path)
	}
	e, err := f.entry(n)
	if err != nil {
		return nil, Entry{}, err
	}
	file, err := f.open(n)
	if err != nil {
		return nil, Entry{}, err
	}
	return file, e, nil
}

// Walk calls fn for the entry at root and, if it is a directory, for every
// entry below it: depth first, in lexical order, without following symlinks
// (root included). As with [filepath.Walk], fs.SkipDir returned for a
// directory skips its contents, returned for another entry skips the rest of
// its directory, and fs.SkipAll stops the walk; Walk then returns nil.
func (f *FS) Walk(ctx context.Context, root string, fn func(e Entry) error) error {
	n, err := f.resolve(root, false)
	if err != nil {
		return err
	}
	err = f.walk(ctx, n, func(n *node) error {
		e, err := f.entry(n)
		if err != nil {
			return err
		}
		return fn(e)
	})
	if errors.Is(err, fs.SkipDir) || errors.Is(err, fs.SkipAll) {
		return nil
	}
	return err
}

// walk is Walk on nodes; it returns fs.SkipDir and fs.SkipAll from the root.
func (f *FS) walk(ctx context.Context, n *node, visit func(*node) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := visit(n); err != nil || !n.isDir() {
		return err
	}
	children, err := f.readDir(n)
	if err != nil {
		return err
	}
	for _, c := range children {
		err := f.walk(ctx, c, visit)
		if errors.Is(err, fs.SkipDir) {
			if c.isDir() {
				continue
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// root returns the merged root directory. Its attributes come from the top
// layer; like the kernel, opaque xattrs on layer roots are ignored.
func (f *FS) root() (*node, error) {
	if len(f.layers) == 0 {
		return nil, errdefs.FailedPrecondition("image has no layers")
	}
	n := &node{path: "/", dirs: make([]int, len(f.layers))}
	for i, l := range f.layers {
		var st unix.Stat_t
		if err := unix.Stat(l, &st); err != nil {
			return nil, &os.PathError{Op: "stat", Path: l, Err: err}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil, &os.PathError{Op: "stat", Path: l, Err: unix.ENOTDIR}
		}
		if i == 0 {
			n.st = st
		}
		n.dirs[i] = i
	}
	return n, nil
}

// resolve walks p component by component over the merged tree, confined to
// the image root. Intermediate symlinks are always followed, a final one only
// if follow is set.
func (f *FS) resolve(p string, follow bool) (*node, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return nil, errdefs.InvalidArgument("path contains a NUL byte")
	}
	root, err := f.root()
	if err != nil {
		return nil, err
	}
	// stack holds the resolved directories from the root down, so ".." is
	// the parent of where resolution really is, as in the kernel.
	stack := []*node{root}
	rest := strings.Split(p, "/")
	hops := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		n, err := f.lookup(stack[len(stack)-1], c)
		if err != nil {
			return nil, err
		}
		if n == nil {
			return nil, errdefs.NotFound("path not found: %s", p)
		}
		if n.isSymlink() && (len(rest) > 0 || follow) {
			if hops++; hops > maxSymlinks {
				return nil, errdefs.InvalidArgument("too many levels of symbolic links: %s", p)
			}
			target, err := f.readlink(n)
			if err != nil {
				return nil, err
			}
			if target == "" {
				return nil, errdefs.NotFound("path not found: %s", p)
			}
			if target[0] == '/' {
				stack = stack[:1]
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		}
		if len(rest) > 0 && !n.isDir() {
			return nil, errdefs.NotFound("path not found: %s", p)
		}
		stack = append(stack, n)
	}
	return stack[len(stack)-1], nil
}

// resolveDir resolves p, following a final symlink, and requires a directory.
func (f *FS) resolveDir(p string) (*node, error) {
	n, err := f.resolve(p, true)
	if err != nil {
		return nil, err
	}
	if !n.isDir() {
		return nil, errdefs.NotFound("not a directory: %s", p)
	}
	return n, nil
}

// lookup finds name in directory dir; it returns nil if there is no such
// merged entry.
func (f *FS) lookup(dir *node, name string) (*node, error) {
	p := path.Join(dir.path, name)
	var n *node
	for _, l := range dir.dirs {
		var st unix.Stat_t
		h := f.host(l, p)
		err := unix.Lstat(h, &st)
		if err == unix.ENOENT {
			continue
		}
		if err != nil {
			return nil, hostError("lstat", h, err)
		}
		if isWhiteout(&st) {
			break
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if n == nil {
			n = &node{path: p, layer: l, st: st}
		}
		if !isDir || !n.isDir() {
			break
		}
		n.dirs = append(n.dirs, l)
		opaque, err := isOpaque(h)
		if err != nil {
			return nil, err
		}
		if opaque {
			break
		}
	}
	return n, nil
}

// readDir returns the merged children of directory dir sorted by name. It
// merges the layers' listings in one pass, top first, tracking for each name
// whether lower layers may still add to it.
func (f *FS) readDir(dir *node) ([]*node, error) {
	type merge struct {
		n    *node // nil for a whiteout
		open bool  // a directory that lower layers still merge into
	}
	seen := map[string]*merge{}
	for _, l := range dir.dirs {
		h := f.host(l, dir.path)
		ents, err := listDir(f.layers[l], dir.path)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			m := seen[e.name]
			if m != nil && !m.open {
				continue
			}
			isDir := e.st.Mode&unix.S_IFMT == unix.S_IFDIR
			if m == nil {
				m = &merge{}
				seen[e.name] = m
				if isWhiteout(&e.st) {
					continue
				}
				m.n = &node{path: path.Join(dir.path, e.name), layer: l, st: e.st}
				if !isDir {
					continue
				}
			} else if !isDir || isWhiteout(&e.st) {
				m.open = false
				continue
			}
			m.n.dirs = append(m.n.dirs, l)
			opaque, err := isOpaque(filepath.Join(h, e.name))
			if err != nil {
				return nil, err
			}
			m.open = !opaque
		}
	}
	nodes := make([]*node, 0, len(seen))
	for _, m := range seen {
		if m.n != nil {
			nodes = append(nodes, m.n)
		}
	}
	slices.SortFunc(nodes, func(a, b *node) int { return strings.Compare(a.path, b.path) })
	return nodes, nil
}

// open opens the regular file n for reading and checks that it is still the
// inode resolution saw.
func (f *FS) open(n *node) (*os.File, error) {
	file, err := openBeneath(f.layers[n.layer], n.path, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(file.Fd()), &st); err != nil {
		file.Close()
		return nil, hostError("fstat", file.Name(), err)
	}
	if st.Dev != n.st.Dev || st.Ino != n.st.Ino {
		file.Close()
		return nil, errors.New("layerfs: layer changed while reading: " + file.Name())
	}
	return file, nil
}

func (f *FS) entry(n *node) (Entry, error) {
	e := Entry{
		Name:     path.Base(n.path),
		Path:     n.path,
		Mode:     fileMode(n.st.Mode),
		RawMode:  n.st.Mode,
		Size:     n.st.Size,
		UID:      n.st.Uid,
		GID:      n.st.Gid,
		Nlink:    uint64(n.st.Nlink),
		ModTime:  mtime(&n.st),
		Layer:    n.layer,
		HostPath: f.hostOf(n),
	}
	if n.isSymlink() {
		target, err := f.readlink(n)
		if err != nil {
			return Entry{}, err
		}
		e.Linkname = target
	}
	return e, nil
}

func (f *FS) readlink(n *node) (string, error) { return os.Readlink(f.hostOf(n)) }

func mtime(st *unix.Stat_t) time.Time { return time.Unix(st.Mtim.Unix()) }
