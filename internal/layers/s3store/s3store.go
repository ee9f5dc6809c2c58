// Package s3store keeps layers in an S3-compatible object store, with a
// bounded local cache of unpacked layers for overlayfs to mount.
//
// # Objects
//
// Layer id is the object <prefix>layers/<id>: the layer directory as an OCI
// layer changeset (layerfs.WriteLayerTar: overlayfs whiteouts become
// ".wh.<name>" files, opaque directories get ".wh..wh..opq"; modes, owners,
// xattrs, hard links, device nodes and sparse files' contents are kept),
// preceded by an entry for the layer's root directory, compressed with
// zstd. The object's metadata holds the sha256 of the compressed bytes,
// checked while a fetch streams, and the tar's size.
//
// # Order
//
// Put uploads the object before it returns, so a layer is durable in the
// bucket before the caller records anything that makes it visible; the
// uploaded directory then becomes the layer's cached copy. Get unpacks a
// layer it lacks into a staging directory, checks the digest, and only
// then renames it into the cache: a layer that failed its check is never
// cached. Concurrent Gets of one layer fetch it once.
//
// # Cache
//
// The cache is bounded in bytes (the layers' tar sizes) and evicts the
// least recently used layers that no lease pins ([layers.Pinner]); pinned
// layers can hold it over its bound until they are released. Eviction runs
// when a layer enters the cache.
package s3store

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/archive"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layerfs"
	"github.com/arborsh/arbor/internal/layers"
)

// DefaultCacheBytes bounds the local cache when Config.CacheBytes is 0.
const DefaultCacheBytes int64 = 20 << 30

// defaultPartSize is the part size of multipart uploads, and the largest
// object put in one request.
const defaultPartSize = 64 << 20

// Metadata keys of a layer object (x-amz-meta-*).
const (
	metaDigest = "sha256"
	metaSize   = "tar-size"
)

// Config configures a [Store]. Credentials come from the usual AWS
// environment and files (AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws/...).
type Config struct {
	// URL is s3://bucket[/prefix].
	URL string
	// Endpoint is the S3 endpoint URL (http://127.0.0.1:7070); empty means
	// AWS's, or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL when set.
	Endpoint string
	// Region; empty means the AWS environment's, else us-east-1.
	Region string
	// CacheDir holds the cached layers (created). Staging is scratch space
	// on the same filesystem: Put's directories come from there and fetches
	// unpack there.
	CacheDir, Staging string
	// CacheBytes bounds the cache (0: DefaultCacheBytes).
	CacheBytes int64
	Logger     *slog.Logger
	// HTTPClient, if set, carries the S3 requests (tests count them).
	HTTPClient *http.Client
	// Guard, if set, coordinates collection with the other nodes sharing
	// the bucket (see shared.go); Grace then keeps objects younger than it
	// (arbor serve: DefaultGrace). Close stops renewing the guard's holds.
	Guard Guard
	Grace time.Duration
	// RetryFor bounds how long an upload is retried while S3 is
	// unavailable (0: DefaultRetryFor; negative: not retried).
	RetryFor time.Duration
}

// Store is a [layers.Storage] over S3. It is safe for concurrent use.
type Store struct {
	client         *s3.Client
	bucket, prefix string // prefix ends in "layers/"
	url            string // for messages
	cacheDir       string
	trash          string
	staging        string
	limit          int64
	partSize       int64 // uploads above it go in parts of this size
	condPut        bool  // the server refuses a PUT over an existing key (probeConditionalPut)
	retryFor       time.Duration
	log            *slog.Logger

	group singleflight.Group // fetches by id

	mu     sync.Mutex
	cached map[string]*entry // layer id → its copy in cacheDir
	pins   map[string]int
	used   int64  // bytes of cached
	tick   uint64 // recency clock

	listed map[string]time.Time // when the objects the last listing saw were stored

	sh        *shared // nil without a Guard
	closeOnce sync.Once

	fetches atomic.Int64 // layers downloaded (tests)
	synced  atomic.Bool  // the cache is recorded as durable (closeCache)
}

type entry struct {
	bytes int64
	used  uint64
}

// DurableElsewhere marks the store as [layers.Remote]: a layer is durable
// once its object is uploaded, and the cache checks itself after a crash
// of the machine (boot.go).
func (s *Store) DurableElsewhere() {}

var (
	_ layers.Remote        = (*Store)(nil)
	_ layers.Storage       = (*Store)(nil)
	_ layers.Cleaner       = (*Store)(nil)
	_ layers.Pinner        = (*Store)(nil)
	_ layers.Sizer         = (*Store)(nil)
	_ layers.SharedRemover = (*Store)(nil)
)

// ParseURL splits s3://bucket[/prefix] into its bucket and its key prefix
// ("" or ending in "/").
func ParseURL(raw string) (bucket, prefix string, err error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "s3" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", "", errdefs.InvalidArgument("layer storage %q is not an s3://bucket/prefix URL; fix --blobs", raw)
	}
	prefix = strings.Trim(u.Path, "/")
	if prefix != "" {
		prefix += "/"
	}
	return u.Host, prefix, nil
}

// New connects to the bucket (checking that it is reachable) and opens the
// cache, keeping the layers an earlier run cached and deleting what it left
// half-written.
func New(ctx context.Context, cfg Config) (*Store, error) {
	bucket, prefix, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	var opts []func(*config.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("layer storage %s: AWS configuration: %w", cfg.URL, err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		// Path-style works on every S3 server; the SDK's default CRC32
		// checksums are refused by many of them (XAmzContentSHA256Mismatch),
		// and the layer's sha256 is checked here anyway.
		o.UsePathStyle = true
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		if cfg.HTTPClient != nil {
			o.HTTPClient = cfg.HTTPClient
		}
	})
	s := &Store{client: client, bucket: bucket, prefix: prefix + "layers/", url: cfg.URL,
		cacheDir: cfg.CacheDir, trash: filepath.Join(cfg.CacheDir, ".trash"), staging: cfg.Staging,
		limit: cfg.CacheBytes, log: cfg.Logger, cached: map[string]*entry{}, pins: map[string]int{}, listed: map[string]time.Time{}}
	if s.limit <= 0 {
		s.limit = DefaultCacheBytes
	}
	s.partSize = defaultPartSize
	s.retryFor = cfg.RetryFor
	if s.retryFor == 0 {
		s.retryFor = DefaultRetryFor
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return nil, s.s3Error(err, "open bucket "+bucket, "check --blobs-endpoint and that the S3 server is up")
	}
	s.condPut = s.probeConditionalPut(ctx)
	if err := s.openCache(); err != nil {
		return nil, fmt.Errorf("layer cache %s: %w", cfg.CacheDir, err)
	}
	if cfg.Guard != nil {
		s.startShared(cfg.Guard, cfg.Grace)
	}
	return s, nil
}

func (s *Store) openCache() error {
	for _, d := range []string{s.cacheDir, s.trash, s.staging} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	trusted, err := s.trustCache()
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(s.cacheDir)
	if err != nil {
		return err
	}
	for _, ent := range ents {
		p := filepath.Join(s.cacheDir, ent.Name())
		if ent.Name() == ".trash" || ent.Name() == bootFile {
			continue
		}
		if !trusted && ent.IsDir() && checkID(ent.Name()) == nil {
			// Perhaps cut short by a power loss: fetched again when needed.
			if err := os.Rename(p, filepath.Join(s.trash, ent.Name())); err != nil {
				return err
			}
			continue
		}
		if !ent.IsDir() || checkID(ent.Name()) != nil {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
			continue
		}
		n, err := treeBytes(p)
		if err != nil {
			return err
		}
		s.cached[ent.Name()] = &entry{bytes: n}
		s.used += n
	}
	if err := s.Cleanup(context.Background()); err != nil {
		return err
	}
	return writeBoot(s.cacheDir, false)
}

func checkID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") || strings.HasPrefix(id, ".") || strings.Contains(id, ".tmp") {
		return errdefs.InvalidArgument("invalid layer id %q", id)
	}
	return nil
}

func (s *Store) key(id string) string { return s.prefix + id }

// s3Error adds what failed and how to fix it to an S3 error. A server that
// cannot be reached or fails (5xx) is errdefs.ErrUnavailable, with
// unavailableFix as the hint; other refusals (missing bucket, credentials,
// permissions) get a hint of their own.
func (s *Store) s3Error(err error, what, unavailableFix string) error {
	var re *smithyhttp.ResponseError
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("layer storage %s: %s: %w", s.url, what, err)
	// The SDK reports a failed connection as a response of status 0.
	case !errors.As(err, &re) || re.HTTPStatusCode() == 0 || re.HTTPStatusCode() >= 500:
		return errdefs.Unavailable("layer storage %s: %s: S3 is unavailable (%v); %s", s.url, what, err, unavailableFix)
	}
	return fmt.Errorf("layer storage %s: %s: %w; check the bucket exists and that the AWS credentials may read, write and list it", s.url, what, err)
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// Put packs dir, uploads it and, once it is stored, moves dir into the
// cache. A failed upload leaves dir alone and nothing in the bucket.
func (s *Store) Put(ctx context.Context, id, dir string) error {
	if err := checkID(id); err != nil {
		return err
	}
	// Is it stored already? A server that refuses a conditional PUT over
	// an existing key (probed by New) answers that with the upload itself;
	// any other is asked, while the layer is packed.
	headed := make(chan error, 1) // nil: stored; errAbsent: not stored
	if s.condPut {
		headed <- errAbsent
	} else {
		go func() { headed <- s.head(ctx, id) }()
	}
	// A shared bucket: the layer and the chain it was made on are held
	// (and whole) before the object appears, and still held once it is
	// stored. The hold, a database round trip, also overlaps the packing.
	held := make(chan error, 1)
	go func() { held <- s.holdForPut(ctx) }()
	blob, err := os.CreateTemp(s.staging, "blob-*.tar.zst")
	if err != nil {
		<-headed
		<-held
		return err
	}
	defer os.Remove(blob.Name())
	defer blob.Close()
	digest, tarSize, err := pack(ctx, blob, dir)
	herr := <-headed
	if herr != nil && herr != errAbsent && err == nil {
		herr = s.retry(ctx, "look up layer "+id, func(attempt int) error {
			if attempt == 1 {
				return herr
			}
			return s.head(ctx, id)
		})
	}
	holdErr := <-held
	switch {
	case herr == nil:
		return errdefs.Conflict("layer %s is already stored", id)
	case herr != errAbsent:
		return s.s3Error(herr, "look up layer "+id, "retry when S3 is back")
	case err != nil:
		return fmt.Errorf("pack layer %s: %w", id, err)
	case holdErr != nil:
		return holdErr
	}
	size, err := blob.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = blob.Seek(0, io.SeekStart)
	}
	if err != nil {
		return err
	}
	meta := map[string]string{metaDigest: digest, metaSize: strconv.FormatInt(tarSize, 10)}
	retried := false
	err = s.retry(ctx, "upload layer "+id, func(attempt int) error {
		retried = attempt > 1
		if _, err := blob.Seek(0, io.SeekStart); err != nil {
			return err
		}
		return s.upload(ctx, id, blob, size, meta)
	})
	if httpStatus(err) == http.StatusPreconditionFailed {
		if !retried {
			return errdefs.Conflict("layer %s is already stored", id)
		}
		// An earlier attempt stored it and its answer was lost.
		err = nil
	}
	if err != nil {
		return s.s3Error(err, "upload layer "+id, "retry when S3 is back")
	}
	s.log.Debug("layer uploaded", "layer", id, "bytes", size, "tar_bytes", tarSize)
	s.forgetGone(id)
	if err := s.holdForPut(ctx); err != nil {
		return err
	}
	// Durable now; the directory becomes the cached copy.
	if err := s.admit(id, dir, tarSize); err != nil {
		s.log.Warn("cache uploaded layer", "layer", id, "err", err)
		return os.RemoveAll(dir)
	}
	return nil
}

const mediaType = "application/vnd.oci.image.layer.v1.tar+zstd"

// errAbsent is head's answer for a layer not stored.
var errAbsent = errors.New("not stored")

// head asks whether layer id is stored: nil if it is, errAbsent if not.
func (s *Store) head(ctx context.Context, id string) error {
	_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(id))})
	if httpStatus(err) == http.StatusNotFound {
		return errAbsent
	}
	return err
}

// probeConditionalPut tells whether the server refuses a PUT with
// If-None-Match: * over an existing key, as AWS S3, R2, MinIO, Ceph RGW and
// versitygw do: Put then learns that a layer is stored from its upload
// alone, with no HEAD before it (a round trip on every commit). A server
// that overwrites instead, or any doubt, keeps the HEAD.
func (s *Store) probeConditionalPut(ctx context.Context) bool {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (Go 1.24+)
	key := aws.String(s.prefix + ".probe-conditional-put-" + hex.EncodeToString(b[:]))
	put := func() error {
		_, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: key,
			Body: strings.NewReader("probe"), ContentLength: aws.Int64(5), IfNoneMatch: aws.String("*")})
		return err
	}
	if err := put(); err != nil {
		s.log.Debug("layer storage: conditional PUT probe failed; asking before each upload", "err", err)
		return false
	}
	second := put()
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: key}); err != nil {
		s.log.Warn("layer storage: delete the conditional PUT probe", "key", *key, "err", err)
	}
	return httpStatus(second) == http.StatusPreconditionFailed
}

// upload stores the size bytes of f as layer id's object, in one PUT or,
// above partSize, in parts (a single PUT stops at 5 GiB, and a part that
// fails is retried alone). It is write-once where the server supports it:
// a lost race is 412 Precondition Failed.
func (s *Store) upload(ctx context.Context, id string, f *os.File, size int64, meta map[string]string) error {
	return s.uploadKey(ctx, s.key(id), f, size, meta)
}

// uploadKey uploads f (size bytes) as object k, write-once.
func (s *Store) uploadKey(ctx context.Context, k string, f *os.File, size int64, meta map[string]string) error {
	key := aws.String(k)
	if size <= s.partSize {
		_, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: key, Body: f, ContentLength: aws.Int64(size),
			ContentType: aws.String(mediaType), Metadata: meta, IfNoneMatch: aws.String("*")})
		return err
	}
	mp, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(s.bucket), Key: key,
		ContentType: aws.String(mediaType), Metadata: meta})
	if err != nil {
		return err
	}
	var parts []types.CompletedPart
	for n, off := int32(1), int64(0); off < size; n, off = n+1, off+s.partSize {
		l := min(s.partSize, size-off)
		var out *s3.UploadPartOutput
		out, err = s.client.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(s.bucket), Key: key, UploadId: mp.UploadId,
			PartNumber: aws.Int32(n), Body: io.NewSectionReader(f, off, l), ContentLength: aws.Int64(l)})
		if err != nil {
			break
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(n)})
	}
	if err == nil {
		_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(s.bucket), Key: key,
			UploadId: mp.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}, IfNoneMatch: aws.String("*")})
	}
	if err != nil {
		// Best effort: a bucket lifecycle rule catches what this misses.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, aerr := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(s.bucket), Key: key, UploadId: mp.UploadId}); aerr != nil {
			s.log.Warn("abort multipart upload", "key", k, "err", aerr)
		}
	}
	return err
}

// encoders are reused: a new one costs more than packing a small layer.
var encoders = sync.Pool{New: func() any {
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		panic(err) // only for invalid options
	}
	return zw
}}

// decoders decode synchronously, so nothing else reads a fetch's body
// when it is drained. The digest is checked after unpacking, so the window
// an object may ask for is bounded (the encoder's default is 8 MiB).
var decoders = sync.Pool{New: func() any {
	zr, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		panic(err) // only for invalid options
	}
	return zr
}}

// pack writes dir as a zstd-compressed tar to w and returns the sha256 of
// the compressed bytes and the tar's size.
func pack(ctx context.Context, w io.Writer, dir string) (digest string, tarSize int64, err error) {
	h := sha256.New()
	zw := encoders.Get().(*zstd.Encoder)
	defer encoders.Put(zw)
	zw.Reset(io.MultiWriter(w, h))
	cw := &countWriter{w: zw}
	root, err := rootHeader(dir)
	if err == nil {
		tw := tar.NewWriter(cw)
		if err = tw.WriteHeader(root); err == nil {
			err = tw.Flush() // no trailer: WriteLayerTar's members follow
		}
	}
	if err == nil {
		err = layerfs.WriteLayerTar(ctx, cw, dir)
	}
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

// rootHeader describes the layer's root directory (WriteLayerTar leaves it
// out): overlayfs takes the merged root's owner and mode from the top layer.
func rootHeader(dir string) (*tar.Header, error) {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: dir, Err: err}
	}
	hdr := &tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: int64(st.Mode & 0o7777), Uid: int(st.Uid), Gid: int(st.Gid),
		ModTime: timeOf(st.Mtim), Format: tar.FormatPAX}
	names, err := listXattrs(dir)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if strings.HasPrefix(name, "trusted.overlay.") {
			continue
		}
		v, err := getXattr(dir, name)
		if err != nil {
			return nil, err
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+name] = string(v)
	}
	return hdr, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Get returns the cached copy of layer id, fetching it first if needed.
func (s *Store) Get(ctx context.Context, id string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	if p, ok := s.lookup(id); ok {
		if err := s.checkCached(ctx, id); err != nil {
			return "", err
		}
		return p, nil
	}
	// One fetch per id at a time; it runs on its own so that one caller
	// giving up does not fail the others.
	ch := s.group.DoChan(id, func() (any, error) {
		if p, ok := s.lookup(id); ok {
			return p, nil
		}
		if err := s.holdPinned(ctx); err != nil {
			return nil, err
		}
		p, err := s.fetch(context.WithoutCancel(ctx), id)
		if err == nil {
			s.forgetGone(id) // stored again
		}
		return p, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (s *Store) lookup(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.cached[id]
	if !ok {
		return "", false
	}
	s.tick++
	e.used = s.tick
	return filepath.Join(s.cacheDir, id), true
}

// fetch downloads layer id, unpacks it into staging, checks its digest and
// admits it into the cache.
func (s *Store) fetch(ctx context.Context, id string) (string, error) {
	tmp, n, err := s.getTar(ctx, s.key(id), "layer "+id, "nothing was cached: restore the object or delete the images made of it",
		archive.Options{ConvertWhiteouts: true}, &s.fetches)
	if errors.Is(err, errdefs.ErrNotFound) {
		return "", fmt.Errorf("layer %s: %w", id, errdefs.ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // after the admission, a no-op
	if err := s.admit(id, tmp, n); err != nil {
		return "", err
	}
	return filepath.Join(s.cacheDir, id), nil
}

// getTar downloads the zstd-compressed tar at key, unpacks it with opts
// into a new directory of staging and checks the digest the object's
// metadata names. It returns the directory (not synced) and the tar's size;
// the caller renames or removes it. On an error nothing is left, and an
// object not in the bucket is errdefs.ErrNotFound. what names the object
// in errors; fix says what to do about a corrupt one. got, if not nil,
// counts the downloads started.
func (s *Store) getTar(ctx context.Context, key, what, fix string, opts archive.Options, got *atomic.Int64) (string, int64, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if st := httpStatus(err); st == http.StatusNotFound {
		return "", 0, errdefs.ErrNotFound
	}
	if err != nil {
		return "", 0, s.s3Error(err, "fetch "+what, "retry when S3 is back")
	}
	defer out.Body.Close()
	if got != nil {
		got.Add(1)
	}
	want := out.Metadata[metaDigest]
	tmp, err := os.MkdirTemp(s.staging, "fetch-*")
	if err != nil {
		return "", 0, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", 0, err
	}
	h := sha256.New()
	body := io.TeeReader(out.Body, h)
	zr := decoders.Get().(*zstd.Decoder)
	defer decoders.Put(zr)
	if err := zr.Reset(body); err != nil {
		return "", 0, err
	}
	cr := &countReader{r: zr}
	_, err = archive.ApplyTar(ctx, cr, tmp, opts)
	if err == nil {
		_, err = io.Copy(io.Discard, cr) // the tar reader stops at its trailer
	}
	_ = zr.Reset(nil) // let go of body
	// The digest covers every byte, whatever the unpacking made of them.
	_, derr := io.Copy(io.Discard, body)
	if got := hex.EncodeToString(h.Sum(nil)); derr == nil && got != want {
		return "", 0, fmt.Errorf("%s in %s is corrupt: its sha256 is %s, its metadata says %q; %s", what, s.url, got, want, fix)
	}
	if derr != nil {
		return "", 0, s.s3Error(derr, "fetch "+what, "retry when S3 is back")
	}
	if err != nil {
		return "", 0, fmt.Errorf("unpack %s: %w", what, err)
	}
	ok = true
	return tmp, cr.n, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// admit renames dir into the cache as layer id, then evicts down to the
// bound.
func (s *Store) admit(id, dir string, bytes int64) error {
	if err := s.unsynced(); err != nil {
		return err
	}
	s.mu.Lock()
	dst := filepath.Join(s.cacheDir, id)
	if err := unix.Renameat2(unix.AT_FDCWD, dir, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE); err != nil {
		s.mu.Unlock()
		return &os.LinkError{Op: "rename", Old: dir, New: dst, Err: err}
	}
	s.tick++
	s.cached[id] = &entry{bytes: bytes, used: s.tick}
	s.used += bytes
	evicted := s.evictLocked(id)
	s.mu.Unlock()
	if len(evicted) > 0 {
		s.log.Debug("layer cache: evicted", "layers", evicted)
		if err := s.Cleanup(context.Background()); err != nil {
			s.log.Warn("layer cache: delete evicted layers", "err", err)
		}
	}
	return nil
}

// evictLocked moves the least recently used unpinned layers (never keep)
// into the trash until the cache is within its bound.
func (s *Store) evictLocked(keep string) []string {
	var out []string
	for s.used > s.limit {
		victim := ""
		var oldest uint64
		for id, e := range s.cached {
			if id == keep || s.pins[id] > 0 {
				continue
			}
			if victim == "" || e.used < oldest {
				victim, oldest = id, e.used
			}
		}
		if victim == "" {
			break // what is left is in use
		}
		if err := s.dropLocked(victim); err != nil {
			s.log.Warn("layer cache: evict", "layer", victim, "err", err)
			break
		}
		out = append(out, victim)
	}
	return out
}

// dropLocked forgets the cached copy of id and moves it into the trash.
func (s *Store) dropLocked(id string) error {
	e, ok := s.cached[id]
	if !ok {
		return nil
	}
	tmp, err := os.MkdirTemp(s.trash, id+"-*")
	if err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(s.cacheDir, id), filepath.Join(tmp, "layer")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	delete(s.cached, id)
	s.used -= e.bytes
	return nil
}

// Pin keeps id's cached copy until Unpin (see [layers.Pinner]).
func (s *Store) Pin(id string) {
	s.mu.Lock()
	s.pins[id]++
	s.mu.Unlock()
}

// Unpin undoes a Pin; the layer may be evicted from then on.
func (s *Store) Unpin(id string) {
	s.mu.Lock()
	if s.pins[id]--; s.pins[id] <= 0 {
		delete(s.pins, id)
	}
	s.mu.Unlock()
}

// Remove deletes layer id's object and cached copy. With a guard it drops
// only the cached copy: another node may have stored the same id (an
// imported layer) and recorded it, so the object goes through a
// collection (RemoveUnneeded) like every other.
func (s *Store) Remove(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if s.sh != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.dropLocked(id)
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(id))}); err != nil && httpStatus(err) != http.StatusNotFound {
		return s.s3Error(err, "delete layer "+id, "the next collection retries")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropLocked(id)
}

// List lists the layer objects under the prefix.
func (s *Store) List(ctx context.Context) ([]string, error) {
	var ids []string
	listed := map[string]time.Time{}
	err := s.walk(ctx, func(id string, _ int64, at time.Time) { ids = append(ids, id); listed[id] = at })
	if err == nil {
		s.mu.Lock()
		s.listed = listed
		s.mu.Unlock()
	}
	return ids, err
}

// StoredBytes counts the layer objects and their compressed bytes.
func (s *Store) StoredBytes(ctx context.Context) (n int, bytes int64, err error) {
	err = s.walk(ctx, func(_ string, size int64, _ time.Time) { n++; bytes += size })
	return n, bytes, err
}

func (s *Store) walk(ctx context.Context, fn func(id string, size int64, stored time.Time)) error {
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.s3Error(err, "list layers", "retry when S3 is back")
		}
		for _, o := range page.Contents {
			id := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			if checkID(id) == nil {
				fn(id, aws.ToInt64(o.Size), aws.ToTime(o.LastModified))
			}
		}
	}
	return nil
}

// Cleanup deletes evicted and removed cached copies.
func (s *Store) Cleanup(ctx context.Context) error { return layers.EmptyDir(ctx, s.trash) }

// CachedBytes returns the bytes of the cached layers.
func (s *Store) CachedBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// Fetches returns how many layers were downloaded.
func (s *Store) Fetches() int64 { return s.fetches.Load() }
