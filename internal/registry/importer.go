package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/arborsh/arbor/internal/archive"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
)

// Options configures an [Importer]. Zero values take the defaults noted.
type Options struct {
	// MaxBytes bounds the uncompressed size of one imported image, all
	// layers together: decompression bombs fail with errdefs.ErrTooLarge.
	// Default archive.DefaultMaxBytes.
	MaxBytes int64
	// MaxEntries bounds the tar entries of one layer. Default
	// archive.DefaultMaxEntries.
	MaxEntries int
	// Platform picks the image from multi-platform indexes, as "os/arch"
	// or "os/arch/variant". Default "linux/" + runtime.GOARCH
	// ("linux/amd64" on the usual hosts).
	Platform string
	// Transport carries registry requests. Default: go-containerregistry's
	// remote.DefaultTransport with a 2-minute response header timeout,
	// dialling only what AllowRegistries allows. Plain HTTP is refused for
	// non-loopback hosts whatever it is.
	Transport http.RoundTripper
	// AllowRegistries lists the non-public registries imports may reach:
	// CIDR ranges ("10.0.0.0/8", "127.0.0.0/8"), addresses ("::1") and
	// registry names with or without a port ("registry.lan:5000",
	// "localhost"). Public addresses are always allowed; loopback, private,
	// link-local and other special-purpose ones only when listed. Checked
	// on the address each connection goes to, after name resolution (an
	// HTTPS proxy from the environment is dialled, so it must be allowed
	// too). Only used for the default Transport.
	AllowRegistries []string
	// Logger receives warnings (a cache index that cannot be written).
	// Default: discard.
	Logger *slog.Logger
}

// Importer imports images from registries and archives into an engine. It
// is safe for concurrent use.
type Importer struct {
	opts     Options
	platform v1.Platform
	log      *slog.Logger

	mu     sync.Mutex
	caches map[string]*importCache // by engine home
	locks  map[string]*sync.Mutex  // one per cache key, so equal imports run once
}

// New returns an Importer with opts.
func New(opts Options) (*Importer, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = archive.DefaultMaxBytes
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = archive.DefaultMaxEntries
	}
	if opts.Platform == "" {
		opts.Platform = "linux/" + goruntime.GOARCH
	}
	p, err := v1.ParsePlatform(opts.Platform)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return nil, fmt.Errorf("registry: platform %q is not os/arch[/variant]", opts.Platform)
	}
	policy, err := newDialPolicy(opts.AllowRegistries)
	if err != nil {
		return nil, err
	}
	if opts.Transport == nil {
		t := remote.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = policy.dialContext(newDialer())
		// A registry that accepts connections but never answers would
		// otherwise hold the import until its operation times out.
		t.ResponseHeaderTimeout = 2 * time.Minute
		opts.Transport = t
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Importer{opts: opts, platform: *p, log: opts.Logger, caches: map[string]*importCache{}, locks: map[string]*sync.Mutex{}}, nil
}

// Install makes e import registry references through a new Importer:
// docker://HOST/PATH:TAG, oci://…, scheme-less references such as
// python:3.12-slim, and upload://<file> archives (docker save tarballs, OCI
// layouts and plain root filesystems), once the engine routes upload:// to
// its registry importer. It returns the Importer for direct use.
func Install(e *engine.Engine, opts Options) (*Importer, error) {
	im, err := New(opts)
	if err != nil {
		return nil, err
	}
	e.SetRegistryImporter(im.ImportRegistry)
	return im, nil
}

// ImportRegistry is an [engine.RegistryImporter]. It pulls the image that
// req.Registry.URL names (for the configured platform) and creates one
// parentless image whose chain is its layers, each stored once however many
// images share it (see the package documentation). Re-importing an
// image whose manifest digest this account already imported returns the
// earlier image at once, without pulling layers, while that image exists.
//
// "upload://<file uuid or sha256>" URLs import an uploaded archive with
// [Importer.ImportArchive], again returning the earlier image for content
// already imported.
func (im *Importer) ImportRegistry(ctx context.Context, e *engine.Engine, account string, req engine.ImportRequest) (string, error) {
	url := strings.TrimSpace(req.Registry.URL)
	if ref, ok := strings.CutPrefix(url, engine.UploadScheme); ok {
		return im.importUpload(ctx, e, account, ref, requestTag(req))
	}
	ref, err := ParseReference(url)
	if err != nil {
		return "", err
	}
	auth, withCreds := authenticator(req.Registry.Credentials)
	engine.Progress(ctx, oplog.EventDataProgress{Phase: "resolve", Message: ref.String()})
	puller, err := remote.NewPuller(
		remote.WithAuth(auth),
		remote.WithTransport(tlsPolicy{im.opts.Transport}),
		remote.WithPlatform(im.platform),
		remote.WithUserAgent("arbor"),
		remote.WithContext(ctx),
	)
	if err != nil {
		return "", err
	}
	f := &remoteFetcher{p: puller, ref: ref}
	m, err := resolveManifest(ctx, f, im.platform, ref.String())
	if err != nil {
		return "", im.remoteError(ctx, err, ref, withCreds)
	}
	return im.cached(ctx, e, account, "manifest:"+m.digest.String(), ref.String(), requestTag(req), func() (string, error) {
		p, err := m.plan(ctx, f, im.platform, ref.String())
		if err != nil {
			return "", im.remoteError(ctx, err, ref, withCreds)
		}
		id, err := im.newImage(ctx, e, account, p, "pull")
		return id, im.remoteError(ctx, err, ref, withCreds)
	})
}

// authenticator maps API credentials to go-containerregistry's: empty
// strings mean anonymous; a password without a user name is sent as a
// bearer token (an identity token such as a registry access token).
func authenticator(c *oplog.Credentials) (authn.Authenticator, bool) {
	switch {
	case c == nil || c.Username == "" && c.Password == "":
		return authn.Anonymous, false
	case c.Username == "":
		return authn.FromConfig(authn.AuthConfig{RegistryToken: c.Password}), true
	}
	return &authn.Basic{Username: c.Username, Password: c.Password}, true
}

// requestTag is the tag an import request asks for, or "".
func requestTag(req engine.ImportRequest) string {
	if req.Tag == nil {
		return ""
	}
	return *req.Tag
}

// importUpload imports an uploaded archive.
func (im *Importer) importUpload(ctx context.Context, e *engine.Engine, account, ref, tag string) (string, error) {
	f, rec, err := e.OpenFile(ctx, account, ref)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return im.cached(ctx, e, account, "upload:"+rec.SHA256, "upload://"+ref, tag, func() (string, error) {
		return im.importArchive(ctx, e, account, f, rec.Size, tag)
	})
}

// cached returns an image recorded for key in account if one still exists
// and may carry tag, and otherwise runs build and records its image.
// Concurrent calls for one key run build once.
//
// The engine tags the image an import returns, and an image has one tag,
// so an image is returned again only to an import that asks for no tag, for
// the tag it was imported with (while it still carries that tag or none), or
// for a new tag when it carries none and no other import claimed it. Two
// imports of the same content with different tags get two images; the
// second shares the first one's stored layers (nothing is extracted again
// for layered images), so both tags stay.
func (im *Importer) cached(ctx context.Context, e *engine.Engine, account, key, source, tag string, build func() (string, error)) (string, error) {
	c := im.cache(e.Home())
	lock := im.keyLock(account + "\x00" + key)
	lock.Lock()
	defer lock.Unlock()
	for _, en := range c.lookup(account, key) {
		img, err := e.Image(ctx, account, en.Image)
		if err != nil {
			continue
		}
		switch {
		case tag == "":
		case en.Tag == tag && (img.Tag == tag || img.Tag == ""):
		case en.Tag == "" && (img.Tag == "" || img.Tag == tag):
			// Claim the untagged image for this tag, so that a concurrent
			// import with another tag does not get it too.
			if err := c.remember(account, key, source, tag, en.Image, true); err != nil {
				im.log.WarnContext(ctx, "registry: cannot record import for re-use", "source", source, "image", en.Image, "err", err)
			}
		default:
			continue
		}
		engine.Progress(ctx, oplog.EventDataProgress{Phase: "cached", Done: 1, Total: 1, Unit: "images",
			Message: fmt.Sprintf("%s is unchanged since its import as image %s", source, en.Image)})
		return en.Image, nil
	}
	id, err := build()
	if err != nil {
		return "", err
	}
	if err := c.remember(account, key, source, tag, id, false); err != nil {
		im.log.WarnContext(ctx, "registry: cannot record import for re-use", "source", source, "image", id, "err", err)
	}
	return id, nil
}

func (im *Importer) keyLock(k string) *sync.Mutex {
	im.mu.Lock()
	defer im.mu.Unlock()
	l := im.locks[k]
	if l == nil {
		l = &sync.Mutex{}
		im.locks[k] = l
	}
	return l
}

func (im *Importer) cache(home string) *importCache {
	im.mu.Lock()
	defer im.mu.Unlock()
	c := im.caches[home]
	if c == nil {
		c = &importCache{path: filepath.Join(home, "registry", "index.json")}
		im.caches[home] = c
	}
	return c
}

// importCache is <home>/registry/index.json: what each account imported,
// by manifest digest (registries and OCI layouts), config digest (docker
// save archives) or upload sha256, and with which tag, and the image it
// became. An entry whose image was deleted is simply not used.
type importCache struct {
	path string

	mu      sync.Mutex
	loaded  bool
	entries map[string]cacheEntry // entryKey(account, key, tag)
}

type cacheEntry struct {
	Account string `json:"account"`
	Key     string `json:"key"`
	// Tag is the tag the import asked for ("" for none): the engine gave
	// the image that tag.
	Tag    string    `json:"tag,omitempty"`
	Image  string    `json:"image"`
	Source string    `json:"source"`
	At     time.Time `json:"imported_at"`
}

type cacheFile struct {
	Version int          `json:"version"`
	Imports []cacheEntry `json:"imports"`
}

func entryKey(account, key, tag string) string { return account + "\x00" + key + "\x00" + tag }

func (c *importCache) load() {
	if c.loaded {
		return
	}
	c.loaded = true
	c.entries = map[string]cacheEntry{}
	b, err := os.ReadFile(c.path)
	if err != nil {
		return
	}
	var f cacheFile
	if json.Unmarshal(b, &f) != nil || f.Version != 1 {
		return // an unreadable index only costs a re-pull
	}
	for _, en := range f.Imports {
		c.entries[entryKey(en.Account, en.Key, en.Tag)] = en
	}
}

// lookup returns the entries of (account, key), newest first.
func (c *importCache) lookup(account, key string) []cacheEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.load()
	var out []cacheEntry
	for _, en := range c.entries {
		if en.Account == account && en.Key == key {
			out = append(out, en)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At.After(out[j].At) })
	return out
}

// remember records that importing key with tag gave image. claimed says
// that image was the untagged import of key, whose entry goes.
func (c *importCache) remember(account, key, source, tag, image string, claimed bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.load()
	if claimed {
		delete(c.entries, entryKey(account, key, ""))
	}
	c.entries[entryKey(account, key, tag)] = cacheEntry{Account: account, Key: key, Tag: tag, Image: image, Source: source, At: time.Now().UTC()}
	f := cacheFile{Version: 1, Imports: make([]cacheEntry, 0, len(c.entries))}
	for _, en := range c.entries {
		f.Imports = append(f.Imports, en)
	}
	sort.Slice(f.Imports, func(i, j int) bool {
		a, b := f.Imports[i], f.Imports[j]
		if a.Account != b.Account {
			return a.Account < b.Account
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		return a.Tag < b.Tag
	})
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(c.path, b)
}

// writeFileAtomic writes b to p through a synced temporary file and a
// rename, so readers see the old or the new content, never a mix.
func writeFileAtomic(p string, b []byte) (err error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(b); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), p)
}

// remoteFetcher reads one repository through a Puller, which keeps the
// registry connection and token across requests.
type remoteFetcher struct {
	p   *remote.Puller
	ref name.Reference
}

func (f *remoteFetcher) root(ctx context.Context) (rawManifest, error) {
	d, err := f.p.Get(ctx, f.ref)
	if err != nil {
		return rawManifest{}, err
	}
	if !json.Valid(d.Manifest) {
		// A web server answering every path, not a registry: say no more
		// than for a closed port (see remoteError).
		return rawManifest{}, errNotRegistry{mediaType: string(d.MediaType)}
	}
	return rawManifest{raw: d.Manifest, mediaType: d.MediaType, digest: d.Digest}, nil
}

func (f *remoteFetcher) child(ctx context.Context, desc v1.Descriptor) (rawManifest, error) {
	d, err := f.p.Get(ctx, f.ref.Context().Digest(desc.Digest.String()))
	if err != nil {
		return rawManifest{}, err
	}
	if d.Digest != desc.Digest {
		return rawManifest{}, errdefs.InvalidArgument("registry served manifest %s for %s", d.Digest, desc.Digest)
	}
	return rawManifest{raw: d.Manifest, mediaType: d.MediaType, digest: d.Digest}, nil
}

func (f *remoteFetcher) blob(ctx context.Context, desc v1.Descriptor) (blobReadCloser, error) {
	l, err := f.p.Layer(ctx, f.ref.Context().Digest(desc.Digest.String()))
	if err != nil {
		return nil, err
	}
	return l.Compressed()
}
