package registry

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/arborsh/arbor/internal/bearer"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
)

// Exporter serves an engine's images read-only over the OCI distribution
// API, so docker, crane or skopeo can pull any image or checkpoint. Mount
// it at /v2/ (outside any gzip middleware: blobs are already compressed).
//
// # Names
//
//	HOST/arbor/<image uuid>:latest   any image of the account, by uuid
//	HOST/arbor/<name>:<t>            the image tagged "<name>:<t>"
//	HOST/arbor/<name>:latest         the image tagged "<name>:latest", else "<name>"
//	HOST/arbor/…@sha256:…            a manifest this exporter generated
//	HOST/arbor-layers/…              the same names, with the image's layers kept
//
// GET /v2/_catalog lists these repositories for the caller's account (see
// serveCatalog).
//
// Docker references are lower case, so images whose tag has capitals are
// pulled by uuid.
//
// # Content
//
// Under arbor/ each image is exported flattened: one gzip-compressed layer
// holding its merged filesystem (whiteouts applied), written
// deterministically (lexical order, no access times) by layerfs, and a
// config with the image's preserved environment.
//
// Under arbor-layers/ an image is exported with its layers kept: one OCI
// layer per layer of its chain, bottom first, as written by
// layerfs.WriteLayerTar (overlay whiteouts become ".wh.<name>" files and
// opaque directories get a ".wh..wh..opq" marker). A chain that was squashed
// starts with the squashed layer; a chain deeper than maxExportLayers has
// its bottom layers merged into one. Layer blobs are cached per layer
// directory (<home>/registry/layers/<layer id>.json), so images that share
// layers — a run's checkpoints and their parent, images imported from the
// same base — share the blobs and their digests, and a client pulls a
// shared layer once.
//
// The first request for an image generates its blobs into
// <home>/registry/blobs/sha256/<hex> and records them in
// <home>/registry/exports/<uuid>.json (<uuid>.layers.json for the layered
// form); images are immutable, so later requests, and manifests and blobs
// requested separately, always agree. Deleting an image removes its exports
// and the blobs no other export uses; [Exporter.Prune] (run when the daemon
// starts) removes whatever deleted images left behind otherwise.
//
// # Authentication
//
// Every request, GET /v2/ included, needs an arbor API token of the account
// whose images it reads: "Authorization: Bearer <token>", or Basic auth
// with the token as password (what docker login and crane auth login send;
// the user name is ignored). Without one the answer is 401 with a Basic
// challenge.
type Exporter struct {
	e    *engine.Engine
	auth func(*http.Request) (string, error)
	dir  string
	log  *slog.Logger

	mu      sync.Mutex
	loaded  bool
	records map[string]*exportRecord   // by record key (recKey)
	byBlob  map[string]map[string]bool // digest → record keys whose export includes it
	locks   map[string]*sync.Mutex     // by record key or layer: one generation at a time
}

// Repository namespaces: flattened images, and images with their layers kept.
const (
	flatRepo    = "arbor/"
	layeredRepo = "arbor-layers/"
)

// variantLayers marks the export records of images with their layers kept.
const variantLayers = "layers"

// maxExportLayers bounds the layers of a layered export: the bottom of a
// deeper chain is merged into one layer (the engine squashes chains past
// its SquashDepth anyway).
const maxExportLayers = 100

// exportRecord is <home>/registry/exports/<uuid>.json.
type exportRecord struct {
	Version      int    `json:"version"`
	Account      string `json:"account"`
	Image        string `json:"image"`
	Manifest     string `json:"manifest"`
	ManifestSize int64  `json:"manifest_size"`
	Config       string `json:"config"`
	Layer        string `json:"layer,omitempty"`
	LayerSize    int64  `json:"layer_size,omitempty"`
	DiffID       string `json:"diff_id,omitempty"`
	// Variant is "" for a flattened export (Layer) and "layers" for one
	// with its layers kept (Layers, bottom first).
	Variant string        `json:"variant,omitempty"`
	Layers  []exportLayer `json:"layers,omitempty"`
}

// exportLayer is one layer blob of a layered export, and the cache entry
// <home>/registry/layers/<layer id>.json.
type exportLayer struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	DiffID string `json:"diff_id"`
	// Inodes are the layer directories' inode numbers when the blob was
	// written: a directory collected and stored again (a content-addressed
	// import layer) is a new one, and its blob is written again.
	Inodes []uint64 `json:"inodes,omitempty"`
}

func (r *exportRecord) blobs() []string {
	out := []string{r.Manifest, r.Config}
	if r.Layer != "" {
		out = append(out, r.Layer)
	}
	for _, l := range r.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// recKey names an export record: the image uuid, with ".layers" for the
// layered form.
func recKey(image, variant string) string {
	if variant != "" {
		return image + "." + variant
	}
	return image
}

func (r *exportRecord) key() string { return recKey(r.Image, r.Variant) }

// ExportHandler returns the read-only OCI registry of e's images, and
// removes an image's exports and the blobs no other export uses when the
// image is deleted. auth maps
// a request to its account; nil means [TokenAuth](e). Basic credentials are
// presented to auth as "Authorization: Bearer <password>", so any bearer
// token check works for docker and crane too.
func ExportHandler(e *engine.Engine, auth func(r *http.Request) (account string, err error)) *Exporter {
	if auth == nil {
		auth = TokenAuth(e)
	}
	x := &Exporter{e: e, auth: auth, dir: filepath.Join(e.Home(), "registry"), log: slog.New(slog.DiscardHandler),
		records: map[string]*exportRecord{}, byBlob: map[string]map[string]bool{}, locks: map[string]*sync.Mutex{}}
	e.OnImageDeleted(x.imageDeleted)
	e.AddStoredBytes(x.accountBytes)
	e.AddFreedBytes(x.freedBytes)
	return x
}

// accountBytes is what account's exports store: each blob once, at its
// recorded size (the config, a few hundred bytes, is not recorded).
func (x *Exporter) accountBytes(account string) int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.loadLocked()
	seen := map[string]bool{}
	var n int64
	add := func(digest string, size int64) {
		if digest != "" && !seen[digest] {
			seen[digest] = true
			n += size
		}
	}
	for _, rec := range x.records {
		if rec.Account != account {
			continue
		}
		add(rec.Manifest, rec.ManifestSize)
		add(rec.Layer, rec.LayerSize)
		for _, l := range rec.Layers {
			add(l.Digest, l.Size)
		}
	}
	return n
}

// TokenAuth authenticates with arbor API tokens sent as a bearer token or
// as the password of Basic auth.
func TokenAuth(e *engine.Engine) func(r *http.Request) (string, error) {
	return func(r *http.Request) (string, error) {
		secret, ok := bearer.FromRequest(r)
		if !ok {
			return "", errdefs.Unauthorized("missing token: log in with an arbor API token as the password")
		}
		tok, err := e.Authenticate(r.Context(), secret)
		if err != nil {
			return "", err
		}
		return tok.Account, nil
	}
}

// Media types of exported images.
const (
	exportManifestType = types.OCIManifestSchema1
	exportConfigType   = types.OCIConfigJSON
	exportLayerType    = types.OCILayer
)

func (x *Exporter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok && r.URL.Path != "/v2" {
		writeRegError(w, http.StatusNotFound, "NOT_FOUND", "not a registry path: "+r.URL.Path)
		return
	}
	account, err := x.authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="arbor"`)
		writeRegError(w, http.StatusUnauthorized, "UNAUTHORIZED", err.Error())
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeRegError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "arbor's registry is read-only: "+r.Method+" is not supported")
		return
	}
	ctx := r.Context()
	switch {
	case rest == "":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
	case rest == "_catalog":
		x.serveCatalog(ctx, w, r, account)
	case strings.Contains(rest, "/manifests/"):
		i := strings.LastIndex(rest, "/manifests/")
		x.serveManifest(ctx, w, r, account, rest[:i], rest[i+len("/manifests/"):])
	case strings.Contains(rest, "/blobs/"):
		i := strings.LastIndex(rest, "/blobs/")
		x.serveBlob(ctx, w, r, account, rest[i+len("/blobs/"):])
	case strings.HasSuffix(rest, "/tags/list"):
		x.serveTags(ctx, w, account, strings.TrimSuffix(rest, "/tags/list"))
	default:
		writeRegError(w, http.StatusNotFound, "NOT_FOUND", "unknown registry endpoint "+r.URL.Path)
	}
}

// authenticate presents Basic credentials to x.auth as a bearer token.
func (x *Exporter) authenticate(r *http.Request) (string, error) {
	if _, pass, ok := r.BasicAuth(); ok {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+pass)
	}
	account, err := x.auth(r)
	if err == nil && account == "" {
		err = errdefs.Unauthorized("no account")
	}
	return account, err
}

var digestRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)

func (x *Exporter) serveManifest(ctx context.Context, w http.ResponseWriter, r *http.Request, account, repo, ref string) {
	var rec *exportRecord
	var err error
	if strings.Contains(ref, ":") {
		if !digestRE.MatchString(ref) {
			writeRegError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("unsupported digest %q: use sha256:<64 hex>", ref))
			return
		}
		rec, err = x.recordFor(ctx, account, ref, func(rec *exportRecord) bool { return rec.Manifest == ref })
	} else {
		var im engine.Image
		var variant string
		if im, variant, err = x.resolveName(ctx, account, repo, ref); err == nil {
			rec, err = x.export(ctx, account, im, variant)
		}
	}
	if err != nil {
		x.writeError(w, err, "MANIFEST_UNKNOWN")
		return
	}
	w.Header().Set("Content-Type", string(exportManifestType))
	x.serveFile(ctx, w, r, rec, rec.Manifest)
}

func (x *Exporter) serveBlob(ctx context.Context, w http.ResponseWriter, r *http.Request, account, digest string) {
	if !digestRE.MatchString(digest) {
		writeRegError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("unsupported digest %q: use sha256:<64 hex>", digest))
		return
	}
	rec, err := x.recordFor(ctx, account, digest, func(*exportRecord) bool { return true })
	if err != nil {
		x.writeError(w, err, "BLOB_UNKNOWN")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	x.serveFile(ctx, w, r, rec, digest)
}

// serveFile serves a cached blob of rec (HEAD, Range and conditional
// requests included), regenerating the export if the cache lost it.
func (x *Exporter) serveFile(ctx context.Context, w http.ResponseWriter, r *http.Request, rec *exportRecord, digest string) {
	f, err := os.Open(x.blobPath(digest))
	if errors.Is(err, os.ErrNotExist) {
		x.forget(rec.key())
		var im engine.Image
		if im, err = x.e.Image(ctx, rec.Account, rec.Image); err == nil {
			if _, err = x.export(ctx, rec.Account, im, rec.Variant); err == nil {
				f, err = os.Open(x.blobPath(digest))
			}
		}
	}
	if err != nil {
		x.writeError(w, err, "BLOB_UNKNOWN")
		return
	}
	defer f.Close()
	w.Header().Set("Docker-Content-Digest", digest)
	w.Header().Set("Etag", `"`+digest+`"`)
	http.ServeContent(w, r, "", time.Time{}, f)
}

// repoName splits a repository into the image name and the export variant.
func repoName(repo string) (name, variant string, ok bool) {
	if name, ok := strings.CutPrefix(repo, layeredRepo); ok && name != "" {
		return name, variantLayers, true
	}
	name, ok = strings.CutPrefix(repo, flatRepo)
	return name, "", ok && name != ""
}

// resolveName maps a repository name and tag to an image of account and
// the export variant.
func (x *Exporter) resolveName(ctx context.Context, account, repo, ref string) (engine.Image, string, error) {
	name, variant, ok := repoName(repo)
	if !ok {
		return engine.Image{}, "", errdefs.NotFound("repository %q does not exist: arbor serves arbor/<image uuid> and arbor/<tag name>, flattened, and the same under arbor-layers/ with the layers kept", repo)
	}
	im, err := x.resolveImage(ctx, account, name, ref)
	return im, variant, err
}

func (x *Exporter) resolveImage(ctx context.Context, account, name, ref string) (engine.Image, error) {
	if engine.IsUUID(name) {
		if ref != "latest" {
			return engine.Image{}, errdefs.NotFound("%s has only the tag latest", name)
		}
		return x.e.Image(ctx, account, name)
	}
	cands := []string{name + ":" + ref}
	if ref == "latest" {
		cands = append(cands, name)
	}
	for _, tag := range cands {
		im, err := x.e.ResolveImage(ctx, account, "tag:"+tag)
		if err == nil {
			return im, nil
		}
		if !errdefs.IsNotFound(err) {
			return engine.Image{}, err
		}
	}
	return engine.Image{}, errdefs.NotFound("no image is tagged %s", strings.Join(cands, " or "))
}

var dockerTagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

func (x *Exporter) serveTags(ctx context.Context, w http.ResponseWriter, account, repo string) {
	name, _, ok := repoName(repo)
	var tags []string
	switch {
	case !ok:
	case engine.IsUUID(name):
		if _, err := x.e.Image(ctx, account, name); err == nil {
			tags = []string{"latest"}
		}
	default:
		ims, err := x.e.ListImages(ctx, engine.ImageFilter{Account: account, TagPrefix: name, Limit: 1000})
		if err != nil {
			x.writeError(w, err, "NAME_UNKNOWN")
			return
		}
		seen := map[string]bool{}
		for _, im := range ims {
			t := ""
			if im.Tag == name {
				t = "latest"
			} else if s, ok := strings.CutPrefix(im.Tag, name+":"); ok && dockerTagRE.MatchString(s) {
				t = s
			}
			if t != "" && !seen[t] {
				seen[t] = true
				tags = append(tags, t)
			}
		}
		sort.Strings(tags)
	}
	if len(tags) == 0 {
		writeRegError(w, http.StatusNotFound, "NAME_UNKNOWN", fmt.Sprintf("repository %q does not exist: arbor serves arbor/<image uuid> and arbor/<tag name>, flattened, and the same under arbor-layers/ with the layers kept", repo))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"name": repo, "tags": tags})
}

// recordFor finds an export of an existing image of account that includes
// digest and satisfies ok.
func (x *Exporter) recordFor(ctx context.Context, account, digest string, ok func(*exportRecord) bool) (*exportRecord, error) {
	x.mu.Lock()
	x.loadLocked()
	var cands []*exportRecord
	for k := range x.byBlob[digest] {
		if rec := x.records[k]; rec != nil && rec.Account == account && ok(rec) {
			cands = append(cands, rec)
		}
	}
	x.mu.Unlock()
	for _, rec := range cands {
		if _, err := x.e.Image(ctx, account, rec.Image); err == nil {
			return rec, nil
		}
	}
	return nil, errdefs.NotFound("%s is not part of any image of this account exported here: pull by name (arbor/<image uuid> or arbor/<tag>) first", digest)
}

// export returns the export of im in variant, generating it on first use.
func (x *Exporter) export(ctx context.Context, account string, im engine.Image, variant string) (*exportRecord, error) {
	key := recKey(im.UUID, variant)
	lock := x.imageLock(key)
	lock.Lock()
	defer lock.Unlock()
	x.mu.Lock()
	x.loadLocked()
	rec := x.records[key]
	x.mu.Unlock()
	if rec != nil && rec.Account == account && x.haveBlobs(rec) {
		return rec, nil
	}
	// A client that hangs up should not waste the work: the next request
	// would only start again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Hour)
	defer cancel()
	gen := x.generate
	if variant == variantLayers {
		gen = x.generateLayered
	}
	rec, err := gen(ctx, account, im)
	if err != nil {
		return nil, fmt.Errorf("export image %s: %w", im.UUID, err)
	}
	b, _ := json.MarshalIndent(rec, "", "  ")
	if err := writeFileAtomic(filepath.Join(x.dir, "exports", key+".json"), b); err != nil {
		return nil, err
	}
	x.mu.Lock()
	x.addLocked(rec)
	x.mu.Unlock()
	return rec, nil
}

// generate writes the layer, config and manifest blobs of im.
func (x *Exporter) generate(ctx context.Context, account string, im engine.Image) (*exportRecord, error) {
	fsys, release, err := x.e.ImageFS(ctx, account, im.UUID)
	if err != nil {
		return nil, err
	}
	defer release()
	diff := sha256.New()
	layer, size, err := x.writeBlob(func(w io.Writer) error {
		zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
		if err != nil {
			return err
		}
		if err := fsys.WriteTar(ctx, io.MultiWriter(zw, diff), "/"); err != nil {
			return err
		}
		return zw.Close()
	})
	if err != nil {
		return nil, err
	}
	diffID := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diff.Sum(nil))}
	cfg := v1.ConfigFile{
		Architecture: goruntime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: im.CreatedAt.UTC()},
		Config:       v1.Config{Env: exportEnv(im.Env), Cmd: []string{"/bin/sh"}},
		RootFS:       v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{diffID}},
		History:      []v1.History{{Created: v1.Time{Time: im.CreatedAt.UTC()}, CreatedBy: "arbor image " + im.UUID, Comment: "flattened export"}},
	}
	config, csize, err := x.writeJSONBlob(cfg)
	if err != nil {
		return nil, err
	}
	man := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     exportManifestType,
		Config:        v1.Descriptor{MediaType: exportConfigType, Digest: config, Size: csize},
		Layers:        []v1.Descriptor{{MediaType: exportLayerType, Digest: layer, Size: size}},
		Annotations: map[string]string{
			"org.opencontainers.image.created": im.CreatedAt.UTC().Format(time.RFC3339),
			"sh.arbor.image":                   im.UUID,
		},
	}
	manifest, msize, err := x.writeJSONBlob(man)
	if err != nil {
		return nil, err
	}
	return &exportRecord{Version: 1, Account: account, Image: im.UUID, Manifest: manifest.String(), ManifestSize: msize,
		Config: config.String(), Layer: layer.String(), LayerSize: size, DiffID: diffID.String()}, nil
}

// writeJSONBlob stores v, JSON-encoded, as a blob (configs, manifests).
func (x *Exporter) writeJSONBlob(v any) (v1.Hash, int64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	return x.writeBlob(func(w io.Writer) error { _, err := w.Write(b); return err })
}

// writeBlob stores what fill writes as a content-addressed blob: a synced
// temporary file renamed to its digest.
func (x *Exporter) writeBlob(fill func(io.Writer) error) (v1.Hash, int64, error) {
	dir := filepath.Join(x.dir, "blobs", "sha256")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return v1.Hash{}, 0, err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return v1.Hash{}, 0, err
	}
	defer os.Remove(f.Name()) // after a successful rename, a no-op
	h := &hashCounter{h: sha256.New()}
	err = fill(io.MultiWriter(f, h))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return v1.Hash{}, 0, err
	}
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.h.Sum(nil))}
	if err := os.Rename(f.Name(), x.blobPath(d.String())); err != nil {
		return v1.Hash{}, 0, err
	}
	return d, h.n, nil
}

type hashCounter struct {
	h hash.Hash
	n int64
}

func (c *hashCounter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

func (x *Exporter) blobPath(digest string) string {
	return filepath.Join(x.dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

func (x *Exporter) haveBlobs(rec *exportRecord) bool {
	for _, d := range rec.blobs() {
		if _, err := os.Stat(x.blobPath(d)); err != nil {
			return false
		}
	}
	return true
}

func (x *Exporter) imageLock(id string) *sync.Mutex {
	x.mu.Lock()
	defer x.mu.Unlock()
	l := x.locks[id]
	if l == nil {
		l = &sync.Mutex{}
		x.locks[id] = l
	}
	return l
}

// loadLocked reads the export records once.
func (x *Exporter) loadLocked() {
	if x.loaded {
		return
	}
	x.loaded = true
	ents, _ := os.ReadDir(filepath.Join(x.dir, "exports"))
	for _, en := range ents {
		if !strings.HasSuffix(en.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(x.dir, "exports", en.Name()))
		if err != nil {
			continue
		}
		var rec exportRecord
		if json.Unmarshal(b, &rec) == nil && rec.Version == 1 && rec.key()+".json" == en.Name() {
			x.addLocked(&rec)
		}
	}
}

func (x *Exporter) addLocked(rec *exportRecord) {
	if old := x.records[rec.key()]; old != nil {
		x.dropLocked(old)
	}
	x.records[rec.key()] = rec
	for _, d := range rec.blobs() {
		if x.byBlob[d] == nil {
			x.byBlob[d] = map[string]bool{}
		}
		x.byBlob[d][rec.key()] = true
	}
}

func (x *Exporter) dropLocked(rec *exportRecord) {
	delete(x.records, rec.key())
	for _, d := range rec.blobs() {
		delete(x.byBlob[d], rec.key())
		if len(x.byBlob[d]) == 0 {
			delete(x.byBlob, d)
		}
	}
}

func (x *Exporter) forget(key string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if rec := x.records[key]; rec != nil {
		x.dropLocked(rec)
	}
}

// Prune removes the exports of images that no longer exist and the blobs
// no remaining export uses. Call it now and then (for instance after
// garbage collection); pulls running meanwhile may have to regenerate.
func (x *Exporter) Prune(ctx context.Context) error {
	x.mu.Lock()
	x.loadLocked()
	recs := make([]*exportRecord, 0, len(x.records))
	for _, rec := range x.records {
		recs = append(recs, rec)
	}
	x.mu.Unlock()
	for _, rec := range recs {
		if _, err := x.e.Image(ctx, rec.Account, rec.Image); errdefs.IsNotFound(err) || errdefs.IsInvalidArgument(err) {
			x.forget(rec.key())
			if err := os.Remove(filepath.Join(x.dir, "exports", rec.key()+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	ents, err := os.ReadDir(filepath.Join(x.dir, "blobs", "sha256"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, en := range ents {
		if strings.HasPrefix(en.Name(), ".tmp-") || len(x.byBlob["sha256:"+en.Name()]) > 0 {
			continue
		}
		if err := os.Remove(filepath.Join(x.dir, "blobs", "sha256", en.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return x.pruneLayerCache()
}

// imageDeleted removes the exports of a deleted image and the blobs that no
// other export uses (blobs shared with another image's export stay).
func (x *Exporter) imageDeleted(ctx context.Context, account, image string) {
	x.mu.Lock()
	x.loadLocked()
	var gone []string
	for _, variant := range []string{"", variantLayers} {
		rec := x.records[recKey(image, variant)]
		if rec == nil || rec.Account != account {
			continue
		}
		x.dropLocked(rec)
		if err := os.Remove(filepath.Join(x.dir, "exports", rec.key()+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
			x.log.WarnContext(ctx, "registry export: remove the record of a deleted image", "image", image, "err", err)
		}
		gone = append(gone, rec.blobs()...)
	}
	removed := 0
	for _, d := range gone {
		if len(x.byBlob[d]) > 0 {
			continue
		}
		if err := os.Remove(x.blobPath(d)); err == nil {
			removed++
		} else if !errors.Is(err, os.ErrNotExist) {
			x.log.WarnContext(ctx, "registry export: remove a blob of a deleted image", "blob", d, "err", err)
		}
	}
	x.mu.Unlock()
	if removed > 0 {
		if err := x.pruneLayerCache(); err != nil {
			x.log.WarnContext(ctx, "registry export: prune the layer cache", "err", err)
		}
	}
}

// exportEnv turns an image's preserved environment (a JSON object) into a
// sorted config Env, with a default PATH.
func exportEnv(js string) []string {
	env := map[string]string{}
	if js != "" {
		_ = json.Unmarshal([]byte(js), &env)
	}
	if _, ok := env["PATH"]; !ok {
		env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func (x *Exporter) writeError(w http.ResponseWriter, err error, notFoundCode string) {
	switch {
	case errdefs.IsNotFound(err):
		writeRegError(w, http.StatusNotFound, notFoundCode, err.Error())
	case errdefs.IsInvalidArgument(err):
		writeRegError(w, http.StatusBadRequest, "NAME_INVALID", err.Error())
	case errors.Is(err, errdefs.ErrUnauthorized):
		writeRegError(w, http.StatusUnauthorized, "UNAUTHORIZED", err.Error())
	default:
		x.log.Error("registry export", "err", err)
		writeRegError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
	}
}

// writeRegError writes an error in the distribution API's format.
func writeRegError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}
