package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/arborsh/arbor/internal/errdefs"
)

// blobReadCloser is a blob's content as stored (compressed for layers).
type blobReadCloser = io.ReadCloser

// rawManifest is a manifest or index as fetched.
type rawManifest struct {
	raw       []byte
	mediaType types.MediaType // as the source labelled it; may be empty
	digest    v1.Hash
}

// fetcher reads the manifests and blobs of one image source: a registry
// repository or an OCI image layout.
type fetcher interface {
	// root returns the manifest or index the source is named by.
	root(ctx context.Context) (rawManifest, error)
	// child returns the manifest desc names, verified against its digest.
	child(ctx context.Context, desc v1.Descriptor) (rawManifest, error)
	// blob opens the blob desc names. Its content is not yet verified:
	// readers check digest and size as they go.
	blob(ctx context.Context, desc v1.Descriptor) (blobReadCloser, error)
}

// Bounds for JSON documents read into memory.
const (
	maxManifestBytes = 4 << 20
	maxConfigBytes   = 16 << 20
)

// imageManifest is the image manifest chosen for the platform.
type imageManifest struct {
	digest   v1.Hash
	manifest *v1.Manifest
}

// resolveManifest follows indexes from the source's root to the image
// manifest for platform.
func resolveManifest(ctx context.Context, f fetcher, platform v1.Platform, source string) (*imageManifest, error) {
	m, err := f.root(ctx)
	if err != nil {
		return nil, err
	}
	for depth := 0; ; depth++ {
		switch manifestKind(m) {
		case kindIndex:
			if depth >= 4 {
				return nil, errdefs.InvalidArgument("%s: indexes nested more than 4 deep", source)
			}
			idx, err := v1.ParseIndexManifest(bytes.NewReader(m.raw))
			if err != nil {
				return nil, errdefs.InvalidArgument("%s: index %s is not valid JSON: %v", source, m.digest, err)
			}
			d, err := choosePlatform(idx, platform, source)
			if err != nil {
				return nil, err
			}
			if m, err = f.child(ctx, d); err != nil {
				return nil, err
			}
		case kindImage:
			man, err := v1.ParseManifest(bytes.NewReader(m.raw))
			if err != nil {
				return nil, errdefs.InvalidArgument("%s: manifest %s is not valid JSON: %v", source, m.digest, err)
			}
			return &imageManifest{digest: m.digest, manifest: man}, nil
		case kindSchema1:
			return nil, errdefs.InvalidArgument("%s uses Docker's manifest schema 1, deprecated since 2017 and not supported: push it again with a current docker or crane", source)
		default:
			return nil, errdefs.InvalidArgument("%s: %s is not an image manifest or index (media type %q)", source, m.digest, m.mediaType)
		}
	}
}

type manifestKindT int

const (
	kindUnknown manifestKindT = iota
	kindIndex
	kindImage
	kindSchema1
)

// manifestKind classifies by media type, or by shape when the source gave
// none (registries serving octet-stream, bare OCI layout blobs).
func manifestKind(m rawManifest) manifestKindT {
	mt := m.mediaType
	if mt == "" || !strings.Contains(string(mt), "manifest") {
		var probe struct {
			MediaType     types.MediaType `json:"mediaType"`
			SchemaVersion int             `json:"schemaVersion"`
			Manifests     json.RawMessage `json:"manifests"`
			Layers        json.RawMessage `json:"layers"`
			FSLayers      json.RawMessage `json:"fsLayers"`
		}
		if json.Unmarshal(m.raw, &probe) != nil {
			return kindUnknown
		}
		switch {
		case probe.MediaType != "":
			mt = probe.MediaType
		case probe.SchemaVersion == 1 || probe.FSLayers != nil:
			return kindSchema1
		case probe.Manifests != nil:
			return kindIndex
		case probe.Layers != nil:
			return kindImage
		}
	}
	switch mt {
	case types.OCIImageIndex, types.DockerManifestList:
		return kindIndex
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		return kindImage
	case types.DockerManifestSchema1, types.DockerManifestSchema1Signed:
		return kindSchema1
	}
	return kindUnknown
}

// choosePlatform picks the index entry for want. Entries without a
// platform are taken only when they are the index's single image (OCI
// layouts and docker save archives often omit it); attestation manifests
// (platform unknown/unknown) are never taken.
func choosePlatform(idx *v1.IndexManifest, want v1.Platform, source string) (v1.Descriptor, error) {
	var match, bare []v1.Descriptor
	have := map[string]bool{}
	for _, d := range idx.Manifests {
		p := d.Platform
		if p == nil || p.OS == "" {
			bare = append(bare, d)
			continue
		}
		if p.OS == "unknown" {
			continue
		}
		have[p.String()] = true
		if p.OS == want.OS && p.Architecture == want.Architecture && (want.Variant == "" || p.Variant == want.Variant) {
			match = append(match, d)
		}
	}
	if len(match) > 0 {
		return match[0], nil
	}
	if len(have) == 0 && len(bare) == 1 {
		return bare[0], nil
	}
	if len(have) == 0 && len(bare) > 1 {
		var names []string
		for _, d := range bare {
			n := d.Annotations["io.containerd.image.name"]
			if n == "" {
				n = d.Annotations[v1AnnotationRefName]
			}
			if n == "" {
				n = d.Digest.String()
			}
			names = append(names, n)
		}
		return v1.Descriptor{}, errdefs.InvalidArgument("%s holds %d images without platform labels (%s): import one image at a time", source, len(bare), strings.Join(names, ", "))
	}
	list := make([]string, 0, len(have))
	for p := range have {
		list = append(list, p)
	}
	sort.Strings(list)
	return v1.Descriptor{}, errdefs.NotFound("%s has no %s image (it has %s)", source, want.String(), strings.Join(list, ", "))
}

const v1AnnotationRefName = "org.opencontainers.image.ref.name"

// plan reads the image's config and checks it describes a runnable image
// for platform, then lists its layers.
func (m *imageManifest) plan(ctx context.Context, f fetcher, platform v1.Platform, source string) (*plan, error) {
	man := m.manifest
	switch man.Config.MediaType {
	case types.OCIConfigJSON, types.DockerConfigJSON, "":
	default:
		return nil, errdefs.InvalidArgument("%s is not a container image: its config has media type %q (an artifact such as a chart or signature?)", source, man.Config.MediaType)
	}
	rc, err := f.blob(ctx, man.Config)
	if err != nil {
		return nil, err
	}
	raw, err := readVerified(rc, man.Config, maxConfigBytes, "config of "+source)
	rc.Close()
	if err != nil {
		return nil, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, errdefs.InvalidArgument("%s: image config is not valid JSON: %v", source, err)
	}
	if err := checkConfigPlatform(cfg, platform, source); err != nil {
		return nil, err
	}
	if len(cfg.RootFS.DiffIDs) != len(man.Layers) {
		return nil, errdefs.InvalidArgument("%s: the manifest lists %d layers but the config %d diff_ids: the image is inconsistent", source, len(man.Layers), len(cfg.RootFS.DiffIDs))
	}
	p := &plan{source: source, config: cfg}
	for i, d := range man.Layers {
		if err := checkLayerType(d, i, len(man.Layers), source); err != nil {
			return nil, err
		}
		d := d
		p.layers = append(p.layers, layerSource{
			digest: d.Digest, diffID: cfg.RootFS.DiffIDs[i], size: d.Size,
			open: func(ctx context.Context) (io.ReadCloser, error) { return f.blob(ctx, d) },
		})
	}
	return p, nil
}

func checkConfigPlatform(cfg *v1.ConfigFile, want v1.Platform, source string) error {
	if (cfg.OS != "" && cfg.OS != want.OS) || (cfg.Architecture != "" && cfg.Architecture != want.Architecture) {
		return errdefs.InvalidArgument("%s is a %s/%s image, and this server runs %s sandboxes", source, cfg.OS, cfg.Architecture, want.String())
	}
	return nil
}

// checkLayerType accepts tar layers, plain, gzip or zstd compressed.
func checkLayerType(d v1.Descriptor, i, n int, source string) error {
	mt := string(d.MediaType)
	switch {
	case strings.Contains(mt, "encrypted"):
		return errdefs.InvalidArgument("%s: layer %d of %d is encrypted (%s), which is not supported", source, i+1, n, mt)
	case d.MediaType == types.DockerForeignLayer || len(d.URLs) > 0:
		return errdefs.InvalidArgument("%s: layer %d of %d is a foreign layer fetched from %v (Windows base layers): not supported", source, i+1, n, d.URLs)
	case mt == "", strings.HasSuffix(mt, "tar"), strings.HasSuffix(mt, "tar+gzip"), strings.HasSuffix(mt, "tar.gzip"), strings.HasSuffix(mt, "tar+zstd"):
		return nil
	}
	return errdefs.InvalidArgument("%s: layer %d of %d has media type %q, which is not a filesystem layer", source, i+1, n, mt)
}

// readVerified reads a small blob whole and checks its digest and size.
func readVerified(rc io.Reader, d v1.Descriptor, max int64, what string) ([]byte, error) {
	if d.Size > max {
		return nil, errdefs.TooLarge("%s is %d bytes, over the limit of %d", what, d.Size, max)
	}
	br := newBlobReader(rc, d.Digest, d.Size, nil)
	b, err := io.ReadAll(io.LimitReader(br, max+1))
	if err != nil {
		return nil, blobError(err, what)
	}
	if int64(len(b)) > max {
		return nil, errdefs.TooLarge("%s is over the limit of %d bytes", what, max)
	}
	if err := br.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}
