package registry

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/layerfs"
)

// generateLayered writes the config and manifest of im with one layer per
// layer directory of its chain, reusing cached layer blobs.
func (x *Exporter) generateLayered(ctx context.Context, account string, im engine.Image) (*exportRecord, error) {
	paths, release, err := x.e.ImageLayers(ctx, account, im.UUID)
	if err != nil {
		return nil, err
	}
	defer release()
	slices.Reverse(paths) // bottom first
	var groups [][]string
	if n := len(paths); n > maxExportLayers {
		groups = append(groups, paths[:n-maxExportLayers+1])
		paths = paths[n-maxExportLayers+1:]
	}
	for _, p := range paths {
		groups = append(groups, []string{p})
	}
	layers := make([]exportLayer, len(groups))
	for i, g := range groups {
		if layers[i], err = x.layerBlob(ctx, g); err != nil {
			return nil, err
		}
	}

	created := v1.Time{Time: im.CreatedAt.UTC()}
	cfg := v1.ConfigFile{
		Architecture: goruntime.GOARCH,
		OS:           "linux",
		Created:      created,
		Config:       v1.Config{Env: exportEnv(im.Env), Cmd: []string{"/bin/sh"}},
		RootFS:       v1.RootFS{Type: "layers"},
	}
	man := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     exportManifestType,
		Annotations: map[string]string{
			"org.opencontainers.image.created": im.CreatedAt.UTC().Format(time.RFC3339),
			"sh.arbor.image":                   im.UUID,
			"sh.arbor.export":                  variantLayers,
		},
	}
	for i, l := range layers {
		d, err := v1.NewHash(l.DiffID)
		if err != nil {
			return nil, err
		}
		dg, err := v1.NewHash(l.Digest)
		if err != nil {
			return nil, err
		}
		ids := make([]string, len(groups[i]))
		for j, p := range groups[i] {
			ids[j] = filepath.Base(p)
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, d)
		cfg.History = append(cfg.History, v1.History{Created: created, CreatedBy: "arbor layer " + strings.Join(ids, "+")})
		man.Layers = append(man.Layers, v1.Descriptor{MediaType: exportLayerType, Digest: dg, Size: l.Size})
	}
	cfg.History[len(cfg.History)-1].Comment = "arbor image " + im.UUID + ", layers kept"
	config, csize, err := x.writeJSONBlob(cfg)
	if err != nil {
		return nil, err
	}
	man.Config = v1.Descriptor{MediaType: exportConfigType, Digest: config, Size: csize}
	manifest, msize, err := x.writeJSONBlob(man)
	if err != nil {
		return nil, err
	}
	for i := range layers {
		layers[i].Inodes = nil // cache detail, not part of the record
	}
	return &exportRecord{Version: 1, Account: account, Image: im.UUID, Variant: variantLayers, Manifest: manifest.String(), ManifestSize: msize,
		Config: config.String(), Layers: layers}, nil
}

// layerBlob returns the blob of one OCI layer made of the layer directories
// group (bottom first): one directory as a changeset with OCI whiteouts, or
// several merged. Blobs are cached by the directories' names, which never
// change meaning while the directories exist.
func (x *Exporter) layerBlob(ctx context.Context, group []string) (exportLayer, error) {
	ids := make([]string, len(group))
	inodes := make([]uint64, len(group))
	for i, p := range group {
		ids[i] = filepath.Base(p)
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return exportLayer{}, &os.PathError{Op: "stat", Path: p, Err: err}
		}
		inodes[i] = st.Ino
	}
	key := ids[0]
	if len(ids) > 1 {
		s := sha256.Sum256([]byte(strings.Join(ids, "\n")))
		key = "merged-" + hex.EncodeToString(s[:])
	}
	lock := x.imageLock("layer:" + key)
	lock.Lock()
	defer lock.Unlock()
	cachePath := filepath.Join(x.dir, "layers", key+".json")
	if b, err := os.ReadFile(cachePath); err == nil {
		var l exportLayer
		if json.Unmarshal(b, &l) == nil && slices.Equal(l.Inodes, inodes) {
			if _, err := os.Stat(x.blobPath(l.Digest)); err == nil {
				return l, nil
			}
		}
	}
	diff := sha256.New()
	digest, size, err := x.writeBlob(func(w io.Writer) error {
		zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
		if err != nil {
			return err
		}
		out := io.MultiWriter(zw, diff)
		if len(group) == 1 {
			err = layerfs.WriteLayerTar(ctx, out, group[0])
		} else {
			top := slices.Clone(group)
			slices.Reverse(top)
			err = layerfs.New(top).WriteTar(ctx, out, "/")
		}
		if err != nil {
			return err
		}
		return zw.Close()
	})
	if err != nil {
		return exportLayer{}, fmt.Errorf("layer %s: %w", key, err)
	}
	l := exportLayer{Digest: digest.String(), Size: size, DiffID: "sha256:" + hex.EncodeToString(diff.Sum(nil)), Inodes: inodes}
	b, _ := json.MarshalIndent(l, "", "  ")
	if err := writeFileAtomic(cachePath, b); err != nil {
		x.log.Warn("registry export: cannot cache a layer blob", "layer", key, "err", err)
	}
	return l, nil
}

// pruneLayerCache drops cached layer blobs whose blob is gone.
func (x *Exporter) pruneLayerCache() error {
	dir := filepath.Join(x.dir, "layers")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, en := range ents {
		if !strings.HasSuffix(en.Name(), ".json") {
			continue
		}
		p := filepath.Join(dir, en.Name())
		var l exportLayer
		b, err := os.ReadFile(p)
		if err == nil && json.Unmarshal(b, &l) == nil {
			if _, err := os.Stat(x.blobPath(l.Digest)); err == nil {
				continue
			}
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
