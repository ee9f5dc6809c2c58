package registry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/arborsh/arbor/internal/archive"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
)

// ArchiveKind is the format an uploaded tarball's entries show (see
// tarIndex.kind).
type ArchiveKind string

const (
	// KindDockerSave is a `docker save` archive: manifest.json, an image
	// config and layer tarballs.
	KindDockerSave ArchiveKind = "docker-save"
	// KindOCILayout is an OCI image layout: oci-layout, index.json and
	// blobs/<alg>/<hex>. Docker 25 and later write archives that are both;
	// they are read as OCI layouts, whose blobs carry digests.
	KindOCILayout ArchiveKind = "oci-layout"
	// KindRootfs is anything else: a plain root filesystem tarball.
	KindRootfs ArchiveKind = "rootfs"
)

// ImportArchive imports the tar archive held by r (size bytes), which may
// be gzip-compressed: a docker save archive or an OCI image layout becomes
// one image holding its layers applied in order (with whiteouts and opaque
// directories); anything else is extracted as a plain root filesystem, as
// engine.importArchive does. It returns the new image's uuid.
//
// Archives with several images are refused, except OCI layouts whose index
// has exactly one image for the configured platform.
func (im *Importer) ImportArchive(ctx context.Context, e *engine.Engine, account string, r io.ReaderAt, size int64) (string, error) {
	return im.importArchive(ctx, e, account, r, size, "")
}

// importArchive is ImportArchive for an import that will tag its image
// with tag (see [Importer.cached]).
func (im *Importer) importArchive(ctx context.Context, e *engine.Engine, account string, r io.ReaderAt, size int64, tag string) (string, error) {
	ra, size, cleanup, err := im.seekable(ctx, e, r, size)
	if err != nil {
		return "", err
	}
	defer cleanup()
	idx, err := indexTar(ctx, ra, size, im.opts.MaxEntries)
	if err != nil {
		return "", err
	}
	kind := idx.kind()
	engine.Progress(ctx, oplog.EventDataProgress{Phase: "resolve", Message: "archive: " + string(kind)})
	switch kind {
	case KindOCILayout:
		return im.importLayout(ctx, e, account, idx, "OCI layout archive", tag)
	case KindDockerSave:
		p, key, err := dockerSavePlan(idx)
		if err != nil {
			return "", err
		}
		return im.cached(ctx, e, account, key, p.source, tag, func() (string, error) {
			return im.newImage(ctx, e, account, p, "extract")
		})
	}
	return im.importRootfs(ctx, e, account, io.NewSectionReader(ra, 0, size), size)
}

// ImportPath imports the archive file at p (as ImportArchive) or the OCI
// image layout directory at p. It is meant for in-process callers and
// tests: the API imports uploads.
func (im *Importer) ImportPath(ctx context.Context, e *engine.Engine, account, p string) (string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		defer f.Close()
		return im.ImportArchive(ctx, e, account, f, fi.Size())
	}
	store := dirStore(p)
	if _, _, err := store.open("oci-layout"); err != nil {
		return "", errdefs.InvalidArgument("%s is not an OCI image layout (no oci-layout file); archive a root filesystem directory and import the tarball", p)
	}
	return im.importLayout(ctx, e, account, store, "OCI layout "+p, "")
}

// importLayout imports the image of an OCI layout for the platform.
func (im *Importer) importLayout(ctx context.Context, e *engine.Engine, account string, s blobStore, source, tag string) (string, error) {
	if b, err := readStoreFile(s, "oci-layout", 4<<10); err != nil {
		return "", err
	} else {
		var l struct {
			Version string `json:"imageLayoutVersion"`
		}
		if json.Unmarshal(b, &l) != nil || !strings.HasPrefix(l.Version, "1.") {
			return "", errdefs.InvalidArgument("%s: oci-layout declares version %q; only 1.x layouts are supported", source, l.Version)
		}
	}
	f := &layoutFetcher{s: s, source: source}
	m, err := resolveManifest(ctx, f, im.platform, source)
	if err != nil {
		return "", err
	}
	return im.cached(ctx, e, account, "manifest:"+m.digest.String(), source, tag, func() (string, error) {
		p, err := m.plan(ctx, f, im.platform, source)
		if err != nil {
			return "", err
		}
		return im.newImage(ctx, e, account, p, "extract")
	})
}

// importRootfs extracts a plain root filesystem tarball.
func (im *Importer) importRootfs(ctx context.Context, e *engine.Engine, account string, r io.Reader, size int64) (string, error) {
	return e.NewBaseImage(ctx, account, func(dir string) error {
		pr := &progress{ctx: ctx, phase: "extract", total: size}
		pr.emit()
		var devs droppedDevices
		_, err := archive.ApplyTar(ctx, &countingReader{r: r, add: pr.add}, dir, archive.Options{MaxBytes: im.opts.MaxBytes, MaxEntries: im.opts.MaxEntries,
			DropDevices: true, DeviceDropped: devs.add})
		if err == nil {
			pr.emit()
			devs.report(ctx, "the root filesystem")
		}
		return err
	})
}

type countingReader struct {
	r   io.Reader
	add func(int)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.add(n)
	return n, err
}

// seekable returns r itself when it holds a plain tar, and otherwise (a
// gzip-compressed archive) a temporary file with its decompressed content,
// so the archive can be read at random.
func (im *Importer) seekable(ctx context.Context, e *engine.Engine, r io.ReaderAt, size int64) (io.ReaderAt, int64, func(), error) {
	var magic [2]byte
	if n, _ := r.ReadAt(magic[:], 0); n < 2 || !bytes.Equal(magic[:], gzipMagic) {
		return r, size, func() {}, nil
	}
	zr, err := gzip.NewReader(io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, 0, nil, errdefs.InvalidArgument("archive is not valid gzip: %v", err)
	}
	dir := filepath.Join(e.Home(), "registry", "tmp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, nil, err
	}
	f, err := os.CreateTemp(dir, "archive-*.tar")
	if err != nil {
		return nil, 0, nil, err
	}
	cleanup := func() { f.Close(); os.Remove(f.Name()) }
	pr := &progress{ctx: ctx, phase: "decompress", total: size}
	// Zeros stay holes: a sparse file in the archive does not take its
	// size on disk while it is staged.
	sw := archive.NewSparseWriter(f)
	n, err := io.Copy(sw, &capReader{r: &ctxReader{ctx: ctx, r: &countingReader{r: zr, add: func(int) {}}}, left: im.opts.MaxBytes, limit: im.opts.MaxBytes})
	if err == nil {
		err = sw.Close()
	}
	pr.done = n
	pr.emit()
	if err != nil {
		cleanup()
		if !hasClass(err) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			err = errdefs.InvalidArgument("archive is damaged: %v", err)
		}
		return nil, 0, nil, err
	}
	return f, n, cleanup, nil
}

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

// tarIndex records where the files of an uncompressed tar archive are, so
// they can be read in any order without extracting the archive. Only
// entries up to three components deep are kept: docker save and OCI
// layouts put everything at depth three or less.
type tarIndex struct {
	r       io.ReaderAt
	entries map[string]tarEntry
}

type tarEntry struct {
	offset, size int64
	typeflag     byte
	linkname     string
}

func indexTar(ctx context.Context, r io.ReaderAt, size int64, maxEntries int) (*tarIndex, error) {
	sr := io.NewSectionReader(r, 0, size)
	tr := tar.NewReader(sr)
	idx := &tarIndex{r: r, entries: map[string]tarEntry{}}
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if n == 0 {
				return nil, errdefs.InvalidArgument("input is not a valid tar archive (%v); send an uncompressed or gzip-compressed tar", err)
			}
			return nil, errdefs.InvalidArgument("archive is damaged after %d entries: %v", n, err)
		}
		if n >= maxEntries {
			return nil, errdefs.TooLarge("archive has more than %d entries", maxEntries)
		}
		name := path.Clean(strings.TrimPrefix(strings.TrimLeft(hdr.Name, "/"), "./"))
		if strings.Count(name, "/") > 2 {
			continue
		}
		off, err := sr.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		idx.entries[name] = tarEntry{offset: off, size: hdr.Size, typeflag: hdr.Typeflag, linkname: hdr.Linkname}
	}
	return idx, nil
}

func (t *tarIndex) kind() ArchiveKind {
	if t.isFile("oci-layout") && t.isFile("index.json") {
		return KindOCILayout
	}
	if t.isFile("manifest.json") {
		if b, err := readStoreFile(t, "manifest.json", maxManifestBytes); err == nil {
			var m tarball.Manifest
			if json.Unmarshal(b, &m) == nil && len(m) > 0 && m[0].Config != "" {
				return KindDockerSave
			}
		}
	}
	return KindRootfs
}

func (t *tarIndex) isFile(name string) bool {
	_, _, err := t.open(name)
	return err == nil
}

// open returns the content of the regular file name, following symlinks
// and hard links inside the archive (docker save links repeated layers).
func (t *tarIndex) open(name string) (io.ReadCloser, int64, error) {
	name = path.Clean(strings.TrimPrefix(name, "./"))
	for hops := 0; hops < 8; hops++ {
		en, ok := t.entries[name]
		if !ok {
			return nil, 0, fmt.Errorf("%w: %s", os.ErrNotExist, name)
		}
		switch en.typeflag {
		case tar.TypeReg:
			return io.NopCloser(io.NewSectionReader(t.r, en.offset, en.size)), en.size, nil
		case tar.TypeSymlink:
			name = path.Clean(path.Join(path.Dir(name), en.linkname))
		case tar.TypeLink:
			name = path.Clean(strings.TrimPrefix(en.linkname, "./"))
		default:
			return nil, 0, fmt.Errorf("%s is not a regular file in the archive", name)
		}
		if name == ".." || strings.HasPrefix(name, "../") || strings.HasPrefix(name, "/") {
			return nil, 0, errdefs.InvalidArgument("archive link %s points outside the archive", name)
		}
	}
	return nil, 0, errdefs.InvalidArgument("archive links around %s form a loop", name)
}

// blobStore reads the files of an OCI layout or docker save archive by
// their path inside it.
type blobStore interface {
	open(name string) (io.ReadCloser, int64, error)
}

// dirStore is an OCI layout directory on the host.
type dirStore string

func (d dirStore) open(name string) (io.ReadCloser, int64, error) {
	if !filepath.IsLocal(name) {
		return nil, 0, errdefs.InvalidArgument("%q is not a path inside the layout", name)
	}
	f, err := os.Open(filepath.Join(string(d), filepath.FromSlash(name)))
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file", name)
	}
	return f, fi.Size(), nil
}

// readStoreFile reads a small file of s whole.
func readStoreFile(s blobStore, name string, max int64) ([]byte, error) {
	rc, size, err := s.open(name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errdefs.InvalidArgument("the archive has no %s", name)
		}
		return nil, err
	}
	defer rc.Close()
	if size > max {
		return nil, errdefs.TooLarge("%s is %d bytes, over the limit of %d", name, size, max)
	}
	return io.ReadAll(io.LimitReader(rc, max))
}

var hexRE = regexp.MustCompile(`^[a-f0-9]{64}$`)

// blobPath is where an OCI layout keeps the blob with digest h.
func blobPath(h v1.Hash) (string, error) {
	if h.Algorithm != "sha256" || !hexRE.MatchString(h.Hex) {
		return "", errdefs.InvalidArgument("unsupported digest %q: only sha256 is supported", h)
	}
	return "blobs/sha256/" + h.Hex, nil
}

// layoutFetcher reads an OCI image layout.
type layoutFetcher struct {
	s      blobStore
	source string
}

func (f *layoutFetcher) root(context.Context) (rawManifest, error) {
	b, err := readStoreFile(f.s, "index.json", maxManifestBytes)
	if err != nil {
		return rawManifest{}, err
	}
	sum := sha256.Sum256(b)
	return rawManifest{raw: b, mediaType: types.OCIImageIndex, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}, nil
}

func (f *layoutFetcher) child(ctx context.Context, d v1.Descriptor) (rawManifest, error) {
	rc, err := f.blob(ctx, d)
	if err != nil {
		return rawManifest{}, err
	}
	defer rc.Close()
	b, err := readVerified(rc, d, maxManifestBytes, "manifest "+d.Digest.String())
	if err != nil {
		return rawManifest{}, err
	}
	return rawManifest{raw: b, mediaType: d.MediaType, digest: d.Digest}, nil
}

func (f *layoutFetcher) blob(_ context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	p, err := blobPath(d.Digest)
	if err != nil {
		return nil, err
	}
	rc, size, err := f.s.open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errdefs.InvalidArgument("%s lacks blob %s", f.source, d.Digest)
		}
		return nil, err
	}
	if d.Size > 0 && size != d.Size {
		rc.Close()
		return nil, errdefs.InvalidArgument("%s: blob %s is %d bytes, but its descriptor says %d", f.source, d.Digest, size, d.Size)
	}
	return rc, nil
}

// dockerSavePlan reads a docker save archive's manifest.json and config.
// Layers are identified by the config's diff_ids, which are checked as the
// layers are read; the archive's paths carry digests only in the newer
// format (blobs/sha256/<hex>).
func dockerSavePlan(idx *tarIndex) (*plan, string, error) {
	b, err := readStoreFile(idx, "manifest.json", maxManifestBytes)
	if err != nil {
		return nil, "", err
	}
	var m tarball.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, "", errdefs.InvalidArgument("docker save archive: manifest.json is not valid: %v", err)
	}
	if len(m) != 1 {
		var tags []string
		for _, d := range m {
			tags = append(tags, d.RepoTags...)
		}
		return nil, "", errdefs.InvalidArgument("docker save archive holds %d images (%s): save one image per archive", len(m), strings.Join(tags, ", "))
	}
	d := m[0]
	source := "docker save archive"
	if len(d.RepoTags) > 0 {
		source += " of " + d.RepoTags[0]
	}
	raw, err := readStoreFile(idx, d.Config, maxConfigBytes)
	if err != nil {
		return nil, "", err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, "", errdefs.InvalidArgument("%s: config %s is not valid: %v", source, d.Config, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(d.Layers) {
		return nil, "", errdefs.InvalidArgument("%s: manifest.json lists %d layers but the config %d diff_ids", source, len(d.Layers), len(cfg.RootFS.DiffIDs))
	}
	p := &plan{source: source, config: cfg}
	for i, lp := range d.Layers {
		lp := lp
		_, size, err := idx.open(lp)
		if err != nil {
			return nil, "", errdefs.InvalidArgument("%s: layer %d of %d (%s) is missing from the archive", source, i+1, len(d.Layers), lp)
		}
		var digest v1.Hash
		if hx, ok := strings.CutPrefix(path.Clean(lp), "blobs/sha256/"); ok && hexRE.MatchString(hx) {
			digest = v1.Hash{Algorithm: "sha256", Hex: hx}
		}
		p.layers = append(p.layers, layerSource{digest: digest, diffID: cfg.RootFS.DiffIDs[i], size: size,
			open: func(context.Context) (io.ReadCloser, error) {
				rc, _, err := idx.open(lp)
				return rc, err
			}})
	}
	sum := sha256.Sum256(raw)
	return p, "config:sha256:" + hex.EncodeToString(sum[:]), nil
}
