package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
)

// Defaults for [Options]. They are high enough for any real image layer and
// low enough that a decompression or entry bomb fails before it fills a disk.
const (
	DefaultMaxBytes   int64 = 64 << 30
	DefaultMaxEntries       = 2_000_000
)

// OCI/AUFS whiteout names, as written by image builders.
const (
	whiteoutPrefix     = ".wh."
	whiteoutMetaPrefix = ".wh..wh." // AUFS bookkeeping; never part of the image
	whiteoutOpaque     = ".wh..wh..opq"
)

// Options controls [ApplyTar].
type Options struct {
	// MaxBytes bounds the file content read from the stream (0 means
	// DefaultMaxBytes). Exceeding it fails with errdefs.ErrTooLarge.
	MaxBytes int64
	// MaxEntries bounds the number of tar entries (0 means
	// DefaultMaxEntries). Exceeding it fails with errdefs.ErrTooLarge.
	MaxEntries int
	// ConvertWhiteouts turns OCI whiteouts into overlayfs ones: ".wh.NAME"
	// becomes a 0/0 character device NAME and ".wh..wh..opq" makes its
	// directory opaque. Set it for image layers; leave it off for plain
	// rootfs tarballs, where ".wh." files are ordinary files.
	ConvertWhiteouts bool
	// DropDevices leaves character and block device entries out instead of
	// creating them (the sandbox provides /dev), counting them in
	// Stats.Devices; hard links to them are left out too. A 0/0 character
	// device is dropped like any other: in a tar it is a device, and only
	// ".wh." names are whiteouts. Set it for images.
	DropDevices bool
	// DeviceDropped, if set, is called with the path ("/dev/null") of each
	// entry DropDevices left out.
	DeviceDropped func(path string)
}

// Stats counts what [ApplyTar] or [CopyDir] created.
type Stats struct {
	// Files counts regular files, fifos and device nodes; Hardlinks counts
	// additional names for an already-created file.
	Files, Dirs, Symlinks, Hardlinks int
	// Whiteouts counts overlay whiteouts and opaque markers.
	Whiteouts int
	// Skipped counts entries deliberately not created: block devices in
	// archives (a sandbox has no business with host disks) and sockets.
	Skipped int
	// Devices counts device nodes left out under Options.DropDevices (block
	// devices included).
	Devices int
	// Bytes is the file content written.
	Bytes int64
}

// ApplyTar extracts the tar stream r into the layer directory dir, which
// must exist and be empty or hold earlier entries of the same stream. Later
// entries replace earlier ones of the same name, as in docker. The stream may
// be uncompressed or gzip-compressed; the format is sniffed from its first
// bytes. (zstd is not accepted: no zstd library is in the module graph.)
//
// Hostile input fails with errdefs.ErrInvalidArgument and limits with
// errdefs.ErrTooLarge; in either case nothing is written outside dir, but dir
// is left partially filled, so callers extract into a [Stage] directory.
// Absolute names are made relative to dir, and symlinks are resolved as if
// dir were the root (see the package documentation).
//
// Directory modes and mtimes are applied after the last entry, so a
// read-only directory does not block its own contents and its mtime is not
// disturbed by them.
func ApplyTar(ctx context.Context, r io.Reader, dir string, opts Options) (Stats, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	in, err := decompress(&ctxReader{ctx: ctx, r: r})
	if err != nil {
		return Stats{}, err
	}
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Stats{}, fmt.Errorf("open layer directory: %w", &os.PathError{Op: "open", Path: dir, Err: err})
	}
	x := &extractor{
		opts:     opts,
		root:     root,
		rootPath: procLink(root),
		budget:   opts.MaxBytes,
		seen:     make(map[string]kind),
		cacheFD:  -1,
		buf:      make([]byte, 1<<20),
	}
	defer x.close()

	tr := tar.NewReader(in)
	var entries int
	for prev := ""; ; {
		if err := ctx.Err(); err != nil {
			return x.stats, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		// ErrInsecurePath only appears with GODEBUG=tarinsecurepath=0; the
		// header is still valid and cleanName applies our own rules.
		if err != nil && !(errors.Is(err, tar.ErrInsecurePath) && hdr != nil) {
			if prev == "" && errors.Is(err, tar.ErrHeader) {
				return x.stats, errdefs.InvalidArgument("input is not a valid tar archive (%v); send an uncompressed or gzip-compressed tar", err)
			}
			where := ""
			if prev != "" {
				where = fmt.Sprintf(" after entry %q", prev)
			}
			return x.stats, streamError(err, where)
		}
		if entries++; entries > opts.MaxEntries {
			return x.stats, errdefs.TooLarge("archive has more than %d entries; split the content into several layers or raise the entry limit", opts.MaxEntries)
		}
		if err := x.entry(hdr, tr); err != nil {
			return x.stats, err
		}
		prev = hdr.Name
	}
	if err := x.finishDirs(); err != nil {
		return x.stats, err
	}
	return x.stats, nil
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	xzMagic   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// decompress sniffs the compression from the magic bytes. No valid tar
// starts with these bytes: they would be the first bytes of the first name.
func decompress(r io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(len(xzMagic))
	if err != nil && err != io.EOF {
		return nil, streamError(err, "")
	}
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, streamError(err, "")
		}
		return zr, nil
	case bytes.HasPrefix(magic, zstdMagic):
		return nil, errdefs.InvalidArgument("archive is zstd-compressed, which is not supported; send it uncompressed or gzip-compressed")
	case bytes.HasPrefix(magic, xzMagic):
		return nil, errdefs.InvalidArgument("archive is xz-compressed, which is not supported; send it uncompressed or gzip-compressed")
	}
	return br, nil
}

// streamError classifies an error from reading the (decompressed) stream:
// damage is the client's to fix; anything else (I/O, cancellation) is
// passed on with context.
// where is "" or a phrase such as ` after entry "x"`.
func streamError(err error, where string) error {
	var corrupt flate.CorruptInputError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errdefs.InvalidArgument("archive is truncated%s; upload the complete file", where)
	case errors.Is(err, tar.ErrHeader), errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum), errors.As(err, &corrupt):
		return errdefs.InvalidArgument("archive is corrupt%s (%v); check that it is a valid tar, optionally gzip-compressed", where, err)
	}
	return fmt.Errorf("read archive%s: %w", where, err)
}

// ctxReader stops the stream when ctx is done, so a slow or endless upload
// cannot outlive its request.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// kind records what this stream created at a name. Hard links may only
// target kindFile, and opaque markers keep entries present in the map.
type kind uint8

const (
	kindFile kind = iota + 1
	kindDir
	kindOther
)

// dirMeta is the metadata applied to a directory after the last entry.
type dirMeta struct {
	name         string
	uid, gid     int
	mode         uint32
	atime, mtime unix.Timespec
}

type extractor struct {
	opts   Options
	root   int // O_PATH descriptor of the layer directory
	stats  Stats
	budget int64 // content bytes still allowed
	// seen maps what this stream created, by real path inside the layer
	// (see realPath), to its kind.
	seen     map[string]kind
	rootPath string // host path of the layer directory, per procfs
	dirs     []dirMeta
	buf      []byte
	dropped  map[string]bool // device entries left out, by clean name

	// The last parent directory resolved, since archives list siblings
	// together. Any removal marks it stale, because removing a directory or
	// symlink can change what a path resolves to; the descriptor stays open
	// until the next lookup so callers may keep using it.
	cachePath  string
	cacheReal  string
	cacheFD    int
	cacheStale bool
}

func (x *extractor) close() {
	if x.cacheFD >= 0 {
		unix.Close(x.cacheFD)
	}
	unix.Close(x.root)
}

// cleanName turns an entry name into a clean path relative to the layer
// root. Leading slashes are dropped (absolute names are relative to the
// image root, as docker treats them); names that climb out with ".." are an
// attack or a broken archive.
func cleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", errdefs.InvalidArgument("archive entry %q contains a NUL byte; entry names must be plain paths", name)
	}
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", errdefs.InvalidArgument("archive entry %q points outside the image root through \"..\"; fix or remove the entry", name)
	}
	return p, nil
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont:
		// Charge content before reading it, so one huge entry fails at
		// once rather than after writing MaxBytes.
		if hdr.Size > x.budget {
			return errdefs.TooLarge("archive content exceeds the limit of %d bytes at entry %q; use a smaller image or raise the limit", x.opts.MaxBytes, hdr.Name)
		}
		x.budget -= hdr.Size
	case tar.TypeXGlobalHeader:
		return nil // PAX defaults for later entries; tar.Reader applied them
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || hdr.Uid > 1<<32-2 || hdr.Gid > 1<<32-2 {
		return errdefs.InvalidArgument("archive entry %q has invalid owner %d:%d; owners must be between 0 and 4294967294", hdr.Name, hdr.Uid, hdr.Gid)
	}
	if x.opts.ConvertWhiteouts {
		if done, err := x.whiteout(name, hdr); done || err != nil {
			return entryErr(hdr.Name, err)
		}
	}
	if x.opts.DropDevices {
		if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
			x.dropDevice(name)
			return nil
		}
		if target, err := cleanName(hdr.Linkname); hdr.Typeflag == tar.TypeLink && err == nil && x.dropped[target] {
			x.dropDevice(name)
			return nil
		}
	}
	switch hdr.Typeflag {
	case tar.TypeBlock:
		x.stats.Skipped++
		return nil
	case tar.TypeLink:
		return x.hardlink(name, hdr)
	}
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return errdefs.InvalidArgument("archive entry %q names the image root but is not a directory; remove the entry", hdr.Name)
		}
		if err := x.setXattrs(node{x.root, ""}, hdr); err != nil {
			return entryErr(hdr.Name, err)
		}
		x.dirs = append(x.dirs, newDirMeta(name, hdr))
		return nil
	}

	pfd, rdir, err := x.parent(name, hdr.Name)
	if err != nil {
		return err
	}
	base := path.Base(name)
	n := node{pfd, base}
	return entryErr(hdr.Name, x.create(n, path.Join(rdir, base), name, hdr, r))
}

// dropDevice records a device entry left out.
func (x *extractor) dropDevice(name string) {
	if x.dropped == nil {
		x.dropped = map[string]bool{}
	}
	x.dropped[name] = true
	x.stats.Devices++
	if x.opts.DeviceDropped != nil {
		x.opts.DeviceDropped("/" + name)
	}
}

// entryErr adds the entry name to system errors. Classified errors already
// name the entry and say what to do.
func entryErr(entry string, err error) error {
	switch {
	case err == nil, errors.Is(err, errdefs.ErrInvalidArgument), errors.Is(err, errdefs.ErrTooLarge),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, unix.ENAMETOOLONG):
		return errdefs.InvalidArgument("archive entry %q has a name longer than the filesystem allows (255 bytes per component, 4096 in all); shorten it", entry)
	}
	return fmt.Errorf("extract %q: %w", entry, err)
}

// create makes the entry name at n; key is its real path for seen.
func (x *extractor) create(n node, key, name string, hdr *tar.Header, r io.Reader) error {
	isDir := hdr.Typeflag == tar.TypeDir
	if err := x.replace(n, isDir); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		err := unix.Mkdirat(n.dirfd, n.name, 0o700)
		if err != nil && !errors.Is(err, unix.EEXIST) { // EEXIST: merging into an existing directory
			return err
		}
		if err := x.setXattrs(n, hdr); err != nil {
			return err
		}
		x.dirs = append(x.dirs, newDirMeta(name, hdr))
		x.seen[key] = kindDir
		x.stats.Dirs++
		return nil
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont:
		if err := x.writeFile(n, hdr.Name, r); err != nil {
			return err
		}
		x.seen[key] = kindFile
		x.stats.Files++
	case tar.TypeSymlink:
		if strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return errdefs.InvalidArgument("symlink %q has a target containing a NUL byte; fix the entry", hdr.Name)
		}
		if err := unix.Symlinkat(hdr.Linkname, n.dirfd, n.name); err != nil {
			return err
		}
		x.seen[key] = kindOther
		x.stats.Symlinks++
	case tar.TypeChar, tar.TypeFifo:
		mode := uint32(unix.S_IFIFO)
		dev := 0
		if hdr.Typeflag == tar.TypeChar {
			mode = unix.S_IFCHR
			dev = int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		}
		if err := unix.Mknodat(n.dirfd, n.name, mode|0o600, dev); err != nil {
			return err
		}
		x.seen[key] = kindOther
		x.stats.Files++
	default:
		return errdefs.InvalidArgument("archive entry %q has unsupported type %q; remove the entry", hdr.Name, string(hdr.Typeflag))
	}
	return x.setMeta(n, hdr)
}

// writeFile creates n exclusively and copies the entry's content into it.
func (x *extractor) writeFile(n node, entry string, r io.Reader) error {
	fd, err := unix.Openat(n.dirfd, n.name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), entry)
	defer f.Close()
	// Blocks of zeros become holes: a sparse file in an image stays sparse.
	sw := NewSparseWriter(f)
	for {
		nr, rerr := r.Read(x.buf)
		if nr > 0 {
			if _, err := sw.Write(x.buf[:nr]); err != nil {
				return err
			}
			x.stats.Bytes += int64(nr)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return streamError(rerr, fmt.Sprintf(" in the content of entry %q", entry))
		}
	}
	if err := sw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// replace removes whatever is at n so the new entry can be created
// exclusively. A directory replacing a directory merges instead.
func (x *extractor) replace(n node, isDir bool) error {
	var st unix.Stat_t
	err := unix.Fstatat(n.dirfd, n.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if isDir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil
	}
	x.cacheStale = true
	return removeAllAt(n.dirfd, n.name)
}

// setMeta applies owner, then mode (chown clears setuid/setgid), then xattrs
// (chown clears security.capability), then times.
func (x *extractor) setMeta(n node, hdr *tar.Header) error {
	if err := n.lchown(hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := n.chmod(uint32(hdr.Mode) & 0o7777); err != nil {
			return err
		}
	}
	if err := x.setXattrs(n, hdr); err != nil {
		return err
	}
	return n.utimes(entryTimes(hdr))
}

func entryTimes(hdr *tar.Header) (atime, mtime unix.Timespec) {
	mtime = timespec(hdr.ModTime)
	if hdr.AccessTime.IsZero() {
		return mtime, mtime
	}
	return timespec(hdr.AccessTime), mtime
}

func newDirMeta(name string, hdr *tar.Header) dirMeta {
	at, mt := entryTimes(hdr)
	return dirMeta{name: name, uid: hdr.Uid, gid: hdr.Gid, mode: uint32(hdr.Mode) & 0o7777, atime: at, mtime: mt}
}

const paxXattrPrefix = "SCHILY.xattr."

// setXattrs applies the entry's PAX xattrs, except overlay ones. Xattrs the
// filesystem or object type cannot hold are dropped, as docker does.
func (x *extractor) setXattrs(n node, hdr *tar.Header) error {
	var keys []string
	for k := range hdr.PAXRecords {
		if key, ok := strings.CutPrefix(k, paxXattrPrefix); ok && key != "" && !isOverlayXattr(key) {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		if strings.IndexByte(key, 0) >= 0 {
			return errdefs.InvalidArgument("archive entry %q has an xattr name containing a NUL byte; fix the entry", hdr.Name)
		}
		err := n.setxattr(key, []byte(hdr.PAXRecords[paxXattrPrefix+key]))
		if err != nil && !isNotSupported(err) {
			return fmt.Errorf("set xattr %s: %w", key, err)
		}
	}
	return nil
}

// parent returns an O_PATH descriptor of the directory that will hold name,
// creating missing directories, and the directory's real path. The
// descriptor belongs to the cache: it is valid until the next call to parent.
func (x *extractor) parent(name, entry string) (int, string, error) {
	d := path.Dir(name)
	if d == "." {
		return x.root, ".", nil
	}
	if x.cacheFD >= 0 && !x.cacheStale && x.cachePath == d {
		return x.cacheFD, x.cacheReal, nil
	}
	if x.cacheFD >= 0 {
		unix.Close(x.cacheFD)
		x.cacheFD = -1
	}
	fd, err := x.mkdirAll(d, entry)
	if err != nil {
		return -1, "", err
	}
	x.cachePath, x.cacheReal, x.cacheFD, x.cacheStale = d, x.realPath(fd, d), fd, false
	return fd, x.cacheReal, nil
}

// procLink returns the path procfs reports for fd, or "" if it cannot.
func procLink(fd int) string {
	link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return ""
	}
	return link
}

// realPath returns where the directory fd is inside the layer, or fallback
// if procfs cannot tell. Keying seen by real paths makes a name reached
// through an in-layer symlink ("lib/x" via lib -> usr/lib) and its real name
// ("usr/lib/x") the same entry for hard links and opaque markers.
func (x *extractor) realPath(fd int, fallback string) string {
	if fd == x.root {
		return "."
	}
	link := procLink(fd)
	switch {
	case x.rootPath == "" || link == "":
		return fallback
	case link == x.rootPath:
		return "."
	case x.rootPath == "/":
		return strings.TrimPrefix(link, "/")
	}
	if rel, ok := strings.CutPrefix(link, x.rootPath+"/"); ok {
		return rel
	}
	return fallback
}

// mkdirAll opens directory d inside the root, creating missing components
// with mode 0755 as docker does. The caller closes the descriptor.
func (x *extractor) mkdirAll(d, entry string) (int, error) {
	fd, err := openInRoot(x.root, d)
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return -1, x.lookupError(err, d, entry)
	}
	cur := -1 // -1 stands for x.root, which we must not close
	defer func() {
		if cur >= 0 {
			unix.Close(cur)
		}
	}()
	parts := strings.Split(d, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fd, err := openInRoot(x.root, p)
		if errors.Is(err, unix.ENOENT) {
			dirfd := cur
			if dirfd < 0 {
				dirfd = x.root
			}
			if err := unix.Mkdirat(dirfd, parts[i], 0o755); err != nil {
				if errors.Is(err, unix.EEXIST) {
					return -1, errdefs.InvalidArgument("archive entry %q goes through %q, a symlink whose target does not exist in the image; add the target directory first", entry, p)
				}
				return -1, entryErr(entry, fmt.Errorf("create %q: %w", p, err))
			}
			key := path.Join(x.realPath(dirfd, path.Dir(p)), parts[i])
			if _, ok := x.seen[key]; !ok {
				x.seen[key] = kindDir
			}
			fd, err = openInRoot(x.root, p)
		}
		if err != nil {
			return -1, x.lookupError(err, p, entry)
		}
		if cur >= 0 {
			unix.Close(cur)
		}
		cur = fd
	}
	fd, cur = cur, -1
	return fd, nil
}

func (x *extractor) lookupError(err error, p, entry string) error {
	switch {
	case errors.Is(err, unix.ENOTDIR):
		return errdefs.InvalidArgument("archive entry %q needs %q to be a directory, but an earlier entry made it something else; fix the archive order", entry, p)
	case errors.Is(err, unix.ELOOP):
		return errdefs.InvalidArgument("archive entry %q goes through a symlink loop at %q; fix the symlinks", entry, p)
	case errors.Is(err, unix.EXDEV):
		return errdefs.InvalidArgument("archive entry %q resolves across a mount point at %q", entry, p)
	}
	return entryErr(entry, fmt.Errorf("open %q: %w", p, err))
}

// hardlink links name to an earlier regular file of the same stream. Links
// to anything else could pin a symlink, a device or a file outside the
// layer, so they are refused.
func (x *extractor) hardlink(name string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return errdefs.InvalidArgument("hard link %q points to %q, outside the image root; fix or remove the entry", hdr.Name, hdr.Linkname)
	}
	notFile := errdefs.InvalidArgument("hard link %q points to %q, which is not a regular file earlier in the archive; hard links must follow their target", hdr.Name, hdr.Linkname)
	if name == "." || target == "." {
		return notFile
	}
	tfd := x.root
	if d := path.Dir(target); d != "." {
		tfd, err = openInRoot(x.root, d)
		if err != nil {
			return notFile
		}
		defer unix.Close(tfd)
	}
	tbase := path.Base(target)
	tkey := path.Join(x.realPath(tfd, path.Dir(target)), tbase)
	if x.seen[tkey] != kindFile {
		return notFile
	}
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return notFile
	}
	pfd, rdir, err := x.parent(name, hdr.Name)
	if err != nil {
		return err
	}
	n := node{pfd, path.Base(name)}
	if path.Join(rdir, n.name) == tkey {
		return nil // a link to itself changes nothing
	}
	if err := x.replace(n, false); err != nil {
		return entryErr(hdr.Name, err)
	}
	// Flags 0: never follow a symlink at the target.
	if err := unix.Linkat(tfd, tbase, n.dirfd, n.name, 0); err != nil {
		return entryErr(hdr.Name, fmt.Errorf("link to %q: %w", hdr.Linkname, err))
	}
	x.seen[path.Join(rdir, n.name)] = kindFile
	x.stats.Hardlinks++
	return nil
}

// whiteout handles OCI whiteout entries and reports whether name was one.
func (x *extractor) whiteout(name string, hdr *tar.Header) (bool, error) {
	base := path.Base(name)
	if !strings.HasPrefix(base, whiteoutPrefix) && !strings.Contains(name, whiteoutMetaPrefix) {
		return false, nil
	}
	dir := path.Dir(name)
	if base == whiteoutOpaque {
		return true, x.opaque(dir, hdr)
	}
	for _, part := range strings.Split(name, "/") {
		if strings.HasPrefix(part, whiteoutMetaPrefix) {
			return true, nil // AUFS hard-link and bookkeeping entries
		}
	}
	if !strings.HasPrefix(base, whiteoutPrefix) {
		return false, nil
	}
	victim := strings.TrimPrefix(base, whiteoutPrefix)
	if victim == "" || victim == "." || victim == ".." {
		return true, errdefs.InvalidArgument("archive entry %q is a whiteout without a valid name to delete; remove the entry", hdr.Name)
	}
	victim = path.Join(dir, victim)
	pfd, rdir, err := x.parent(victim, hdr.Name)
	if err != nil {
		return true, err
	}
	n := node{pfd, path.Base(victim)}
	if err := x.replace(n, false); err != nil {
		return true, err
	}
	if err := unix.Mknodat(n.dirfd, n.name, unix.S_IFCHR, 0); err != nil {
		return true, err
	}
	if err := n.lchown(hdr.Uid, hdr.Gid); err != nil {
		return true, err
	}
	if err := n.utimes(entryTimes(hdr)); err != nil {
		return true, err
	}
	x.seen[path.Join(rdir, n.name)] = kindOther
	x.stats.Whiteouts++
	return true, nil
}

// opaque marks dir opaque. Following docker, it also removes what dir held
// before this stream started; entries of this stream stay, because OCI
// whiteouts only apply to lower layers.
func (x *extractor) opaque(dir string, hdr *tar.Header) error {
	pathFD := x.root
	if dir != "." {
		fd, err := x.mkdirAll(dir, hdr.Name)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		pathFD = fd
	}
	fd, err := unix.Openat(pathFD, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	rdir := x.realPath(pathFD, dir)
	if err := x.prune(fd, rdir); err != nil {
		return err
	}
	if err := unix.Fsetxattr(fd, xattrOpaque, []byte("y"), 0); err != nil {
		return fmt.Errorf("set %s: %w", xattrOpaque, err)
	}
	if _, ok := x.seen[rdir]; !ok && rdir != "." {
		x.seen[rdir] = kindDir
	}
	x.stats.Whiteouts++
	return nil
}

// prune removes the entries below the directory dirfd (at logical path dir)
// that this stream did not create.
func (x *extractor) prune(dirfd int, dir string) error {
	names, err := readDirNames(dirfd, "")
	if err != nil {
		return err
	}
	for _, n := range names {
		child := path.Join(dir, n)
		k, ok := x.seen[child]
		if !ok {
			x.cacheStale = true
			if err := removeAllAt(dirfd, n); err != nil {
				return err
			}
			continue
		}
		if k != kindDir {
			continue
		}
		cfd, err := unix.Openat(dirfd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // replaced by something else since; nothing to prune
		}
		err = x.prune(cfd, child)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// finishDirs applies the deferred directory metadata. A directory that a
// later entry replaced is skipped; its replacement has its own metadata.
func (x *extractor) finishDirs() error {
	for _, d := range x.dirs { // in archive order, so the last entry for a name wins
		n := node{x.root, ""}
		if d.name != "." {
			pfd := x.root
			if p := path.Dir(d.name); p != "." {
				fd, err := openInRoot(x.root, p)
				if err != nil {
					continue
				}
				pfd = fd
			}
			n = node{pfd, path.Base(d.name)}
		}
		err := x.applyDirMeta(n, d)
		if n.dirfd != x.root {
			unix.Close(n.dirfd)
		}
		if err != nil {
			return entryErr(d.name, err)
		}
	}
	return nil
}

func (x *extractor) applyDirMeta(n node, d dirMeta) error {
	var st unix.Stat_t
	p, fl := n.at(unix.AT_SYMLINK_NOFOLLOW)
	if err := unix.Fstatat(n.dirfd, p, &st, fl); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	if err := n.lchown(d.uid, d.gid); err != nil {
		return err
	}
	if err := n.chmod(d.mode); err != nil {
		return err
	}
	return n.utimes(d.atime, d.mtime)
}
