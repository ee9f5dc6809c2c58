package registry

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"

	"github.com/arborsh/arbor/internal/archive"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
)

// plan is an image ready to be applied: its config and its layers, bottom
// first.
type plan struct {
	source string
	config *v1.ConfigFile
	layers []layerSource
}

// layerSource is one layer blob.
type layerSource struct {
	digest v1.Hash // of the blob as stored; zero when the source has none (docker save)
	diffID v1.Hash // of the uncompressed tar, from the config; zero if unknown
	size   int64   // of the blob; -1 if unknown
	open   func(ctx context.Context) (io.ReadCloser, error)
}

// newImage creates an image from p: one content-addressed layer per OCI
// layer (engine.NewLayeredImage), so layers already stored for any image
// are shared rather than extracted again. phase names the byte progress
// events.
func (im *Importer) newImage(ctx context.Context, e *engine.Engine, account string, p *plan, phase string) (string, error) {
	pr := newProgress(ctx, phase, p)
	budget := im.opts.MaxBytes
	layers := make([]engine.ImportLayer, len(p.layers))
	var chain v1.Hash
	for i, l := range p.layers {
		if l.diffID.Algorithm != "sha256" || len(l.diffID.Hex) != 64 {
			return "", errdefs.InvalidArgument("%s: layer %d of %d has the diff ID %q in its config; only sha256 is supported", p.source, i+1, len(p.layers), l.diffID)
		}
		chain = chainID(chain, l.diffID)
		where := func(err error) error {
			return fmt.Errorf("%s: layer %d of %d (%s): %w", p.source, i+1, len(p.layers), shortDigest(l), err)
		}
		// After the last layer, report them all done: before the commit,
		// which for an import operation is its completion, its last event.
		done := func() {
			if i == len(p.layers)-1 {
				pr.layer(len(p.layers))
			}
		}
		layers[i] = engine.ImportLayer{
			DiffID:  l.diffID.String(),
			ChainID: chain.String(),
			Fill: func(dir string) error {
				pr.layer(i)
				var devs droppedDevices
				used, err := im.applyLayer(ctx, dir, l, budget, pr, &devs)
				if err != nil {
					return where(err)
				}
				devs.report(ctx, fmt.Sprintf("layer %d of %d (%s)", i+1, len(p.layers), shortDigest(l)))
				budget -= used
				done()
				return nil
			},
			Verify: func() error {
				pr.layer(i)
				if err := im.verifyLayer(ctx, l, pr); err != nil {
					return where(err)
				}
				done()
				return nil
			},
			Shared: func() { pr.skip(l.size); done() },
		}
	}
	id, _, err := e.NewLayeredImage(ctx, account, layers)
	if err != nil {
		return "", err
	}
	return id, nil
}

// chainID extends the OCI chain ID of the layers below (zero for none) by
// the layer with diff ID diff.
func chainID(below, diff v1.Hash) v1.Hash {
	if below.Hex == "" {
		return diff
	}
	s := sha256.Sum256([]byte(below.String() + " " + diff.String()))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// verifyLayer reads a layer blob and checks it against its digest and its
// uncompressed content against its diff ID without extracting it: the
// proof an account gives before it shares a layer stored for another.
func (im *Importer) verifyLayer(ctx context.Context, l layerSource, pr *progress) error {
	rc, err := l.open(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	blob := newBlobReader(rc, l.digest, l.size, pr.add)
	un, closeUn, err := decompress(blob)
	if err != nil {
		return blameBlob(blob, err)
	}
	defer closeUn()
	diff := sha256.New()
	_, err = io.Copy(diff, &capReader{r: &ctxReader{ctx: ctx, r: un}, left: im.opts.MaxBytes, limit: im.opts.MaxBytes})
	if err := blameBlob(blob, blobError(err, "")); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(diff.Sum(nil)); got != l.diffID.String() {
		return errdefs.InvalidArgument("uncompressed content has digest %s, but the image config lists %s: the image is inconsistent or damaged", got, l.diffID)
	}
	return nil
}

func shortDigest(l layerSource) string {
	h := l.digest
	if h.Hex == "" {
		h = l.diffID
	}
	if len(h.Hex) > 12 {
		return h.Algorithm + ":" + h.Hex[:12]
	}
	if h.Hex == "" {
		return "no digest"
	}
	return h.String()
}

// applyLayer extracts one layer blob into dir (which holds the layers
// below it) and returns its uncompressed size. budget is what is left of
// Options.MaxBytes.
//
// The blob is checked against its digest and size while it is read, the
// uncompressed stream against the config's diff_id, and every tar header by
// checkEntries; archive.ApplyTar does the extraction and its own checks.
// Errors are reported in that order of precedence: a damaged blob explains
// everything after it.
func (im *Importer) applyLayer(ctx context.Context, dir string, l layerSource, budget int64, pr *progress, devs *droppedDevices) (int64, error) {
	if budget <= 0 {
		return 0, errdefs.TooLarge("the image expands to more than %d bytes, the import size limit (a decompression bomb?); raise the limit or use a smaller image", im.opts.MaxBytes)
	}
	rc, err := l.open(ctx)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	blob := newBlobReader(rc, l.digest, l.size, pr.add)
	un, closeUn, err := decompress(blob)
	if err != nil {
		return 0, blameBlob(blob, err)
	}
	defer closeUn()
	capped := &capReader{r: un, left: budget, limit: im.opts.MaxBytes}
	diff := sha256.New()
	hashed := io.TeeReader(capped, diff)

	pipeR, pipeW := io.Pipe()
	checked := make(chan error, 1)
	go func() { checked <- checkEntries(pipeR) }()
	src := io.TeeReader(hashed, pipeW)

	_, applyErr := archive.ApplyTar(ctx, src, dir, archive.Options{ConvertWhiteouts: true, MaxBytes: budget, MaxEntries: im.opts.MaxEntries,
		DropDevices: true, DeviceDropped: devs.add})
	if applyErr == nil {
		// The tar ends before the stream does (padding, the compressor's
		// trailer): read to the end so every byte is hashed and checked.
		_, applyErr = io.Copy(io.Discard, src)
	}
	pipeW.CloseWithError(applyErr)
	entryErr := <-checked
	switch {
	case entryErr != nil:
		return 0, blameBlob(blob, entryErr)
	case applyErr != nil:
		if errors.Is(applyErr, errdefs.ErrTooLarge) && !strings.Contains(applyErr.Error(), "entries") {
			// ApplyTar counts against what this layer may add; say what
			// the limit is for the whole image.
			applyErr = errdefs.TooLarge("the image expands to more than %d bytes, the import size limit (a decompression bomb?); raise the limit or use a smaller image", im.opts.MaxBytes)
		}
		return 0, blameBlob(blob, blobError(applyErr, ""))
	}
	if err := blameBlob(blob, nil); err != nil {
		return 0, err
	}
	if got := "sha256:" + hex.EncodeToString(diff.Sum(nil)); l.diffID.Hex != "" && got != l.diffID.String() {
		return 0, errdefs.InvalidArgument("uncompressed content has digest %s, but the image config lists %s: the image is inconsistent or damaged", got, l.diffID)
	}
	return capped.n, nil
}

// blameBlob returns the blob's verification failure if there is one, and
// err otherwise: content that does not match its digest explains any
// error that follows from it. When the blob was not read to its end, the
// rest is read to find out, unless err is a limit or a cancellation (a
// decompression bomb is small compressed; the rest of a big layer is not
// worth fetching for a cancelled import).
func blameBlob(b *blobReader, err error) error {
	if !b.done && !errors.Is(err, errdefs.ErrTooLarge) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		r := io.Reader(b)
		if b.size >= 0 {
			r = io.LimitReader(b, b.size-b.n+1)
		}
		_, _ = io.Copy(io.Discard, r)
	}
	if berr := b.check(); berr != nil {
		return berr
	}
	return err
}

// blobError gives read errors from a blob stream a class. ApplyTar already
// classified damage and limits; what remains are transport errors.
func blobError(err error, what string) error {
	if err == nil || hasClass(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if what != "" {
		what += ": "
	}
	return fmt.Errorf("%sread failed: %w", what, err)
}

// blobReader verifies a blob against its digest and size as it is read.
type blobReader struct {
	r      io.Reader
	want   v1.Hash // zero: nothing to verify
	size   int64   // -1: unknown
	h      hash.Hash
	n      int64
	done   bool  // the whole blob was read
	err    error // sticky verification failure
	onRead func(int)
}

func newBlobReader(r io.Reader, want v1.Hash, size int64, onRead func(int)) *blobReader {
	b := &blobReader{r: r, want: want, size: size, onRead: onRead}
	if want.Algorithm == "sha256" {
		b.h = sha256.New()
	}
	return b
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.size >= 0 && int64(len(p)) > b.size-b.n+1 {
		p = p[:b.size-b.n+1] // read one byte past the end to detect an overlong blob
	}
	n, err := b.r.Read(p)
	if n > 0 {
		if b.h != nil {
			b.h.Write(p[:n])
		}
		b.n += int64(n)
		if b.onRead != nil {
			b.onRead(n)
		}
	}
	switch {
	case b.size >= 0 && b.n > b.size:
		b.err = errdefs.InvalidArgument("blob is longer than the %d bytes its descriptor says: the source served damaged data", b.size)
	case b.size >= 0 && b.n == b.size, err == io.EOF:
		b.done = true
		b.err = b.verify()
	}
	if b.err != nil {
		return n, b.err
	}
	if b.done && b.size >= 0 && err == nil {
		// All bytes are in; report EOF ourselves, whatever the transport
		// says (go-containerregistry checks digests at EOF too).
		return n, io.EOF
	}
	return n, err
}

// verify compares what was read with the descriptor.
func (b *blobReader) verify() error {
	if b.size >= 0 && b.n != b.size {
		return errdefs.InvalidArgument("blob is truncated: %d of %d bytes", b.n, b.size)
	}
	if b.h == nil {
		if b.want.Hex != "" {
			return errdefs.InvalidArgument("cannot verify digest %s: unsupported algorithm", b.want)
		}
		return nil
	}
	if got := hex.EncodeToString(b.h.Sum(nil)); got != b.want.Hex {
		return errdefs.InvalidArgument("content does not match its digest: got sha256:%s, want %s; the source served a corrupt blob", got, b.want)
	}
	return nil
}

// check reports a verification failure, once the blob was read whole.
func (b *blobReader) check() error { return b.err }

// capReader fails once more than left bytes come out of r.
type capReader struct {
	r     io.Reader
	left  int64
	limit int64 // the configured limit, for the message
	n     int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.left -= int64(n); c.left < 0 {
		return n, errdefs.TooLarge("the image expands to more than %d bytes, the import size limit (a decompression bomb?); raise the limit or use a smaller image", c.limit)
	}
	return n, err
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// decompress sniffs the blob's compression: gzip, zstd or none.
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, nil, blobError(err, "")
	}
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, errdefs.InvalidArgument("layer is not valid gzip: %v", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(256<<20))
		if err != nil {
			return nil, nil, errdefs.InvalidArgument("layer is not valid zstd: %v", err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

// checkEntries reads a layer's tar headers and refuses names that climb
// out with "..". (Device nodes are left out by archive.ApplyTar.) Stream
// errors are left to ApplyTar, which reads the same bytes. It drains r, so
// the writer never blocks.
func checkEntries(r *io.PipeReader) error {
	var bad error
	tr := tar.NewReader(r)
	for bad == nil {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		clean := path.Clean(strings.TrimLeft(hdr.Name, "/"))
		if clean == ".." || strings.HasPrefix(clean, "../") {
			bad = errdefs.InvalidArgument("entry %q points outside the image root through \"..\"", hdr.Name)
		}
	}
	if bad != nil {
		r.CloseWithError(bad) // stops the extraction
		return bad
	}
	_, _ = io.Copy(io.Discard, r)
	return nil
}

// droppedDevices collects the device nodes an extraction left out (images
// carry none: the sandbox provides /dev), for the import's events.
type droppedDevices struct {
	n     int
	paths []string
}

// maxDevicePaths bounds the paths one event names.
const maxDevicePaths = 10

func (d *droppedDevices) add(p string) {
	d.n++
	if len(d.paths) < maxDevicePaths {
		d.paths = append(d.paths, p)
	}
}

// report adds an event saying how many device nodes where were dropped.
func (d *droppedDevices) report(ctx context.Context, where string) {
	if d.n == 0 {
		return
	}
	list := strings.Join(d.paths, ", ")
	if d.n > len(d.paths) {
		list += fmt.Sprintf(" and %d more", d.n-len(d.paths))
	}
	engine.Progress(ctx, oplog.EventDataProgress{Phase: "devices", Done: int64(d.n), Total: int64(d.n), Unit: "device nodes",
		Message: fmt.Sprintf("dropped %d device node(s) from %s: %s (device nodes are never created in images; the sandbox provides /dev)", d.n, where, list)})
}

// progress reports an import's layers and bytes as operation events, at
// most a few per second.
type progress struct {
	ctx    context.Context
	phase  string
	layers int
	total  int64 // bytes; 0 if unknown
	done   int64
	last   time.Time
}

func newProgress(ctx context.Context, phase string, p *plan) *progress {
	pr := &progress{ctx: ctx, phase: phase, layers: len(p.layers)}
	for _, l := range p.layers {
		if l.size < 0 {
			pr.total = 0
			break
		}
		pr.total += l.size
	}
	return pr
}

func (p *progress) layer(i int) {
	msg := ""
	if i < p.layers {
		msg = fmt.Sprintf("layer %d of %d", i+1, p.layers)
	}
	engine.Progress(p.ctx, oplog.EventDataProgress{Phase: "layers", Done: int64(i), Total: int64(p.layers), Unit: "layers", Message: msg})
	p.emit()
}

// skip takes a layer that needs no reading out of the byte total.
func (p *progress) skip(size int64) {
	if p.total > 0 && size > 0 {
		p.total = max(p.total-size, p.done)
	}
}

func (p *progress) add(n int) {
	p.done += int64(n)
	if time.Since(p.last) >= 250*time.Millisecond {
		p.emit()
	}
}

func (p *progress) emit() {
	p.last = time.Now()
	engine.Progress(p.ctx, oplog.EventDataProgress{Phase: p.phase, Done: p.done, Total: max(p.total, p.done), Unit: "bytes"})
}
