package registry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
)

// tarDir archives a directory tree (regular files and directories).
func tarDir(t *testing.T, root string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func dockerSave(t *testing.T, img v1.Image, tag string) []byte {
	t.Helper()
	var buf bytes.Buffer
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.Write(ref, img, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func importBytes(t *testing.T, e *engine.Engine, im *Importer, b []byte) (string, error) {
	t.Helper()
	return im.ImportArchive(context.Background(), e, acct, bytes.NewReader(b), int64(len(b)))
}

func TestImportArchives(t *testing.T) {
	img := testImage(t)
	arm := image(t, "arm64", layerOf(t, file("arch.txt", "arm64")))

	// The reference: the same image pulled from a registry.
	eRef, imRef := newEngine(t, Options{})
	reg := newRegistry(t)
	reg.push(t, "test/img:v1", img)
	refID, err := imRef.ImportRegistry(context.Background(), eRef, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: reg.host + "/test/img:v1"}})
	if err != nil {
		t.Fatal(err)
	}
	want := tree(t, eRef, refID)

	e, im := newEngine(t, Options{})
	check := func(what, id string) {
		t.Helper()
		diffTrees(t, want, tree(t, e, id))
		if t.Failed() {
			t.Fatalf("%s: the imported tree differs from the registry pull", what)
		}
	}

	// docker save, plain and gzip-compressed (the same config: the same
	// image comes back).
	save := dockerSave(t, img, "example.com/test/img:v1")
	saveID, err := importBytes(t, e, im, save)
	if err != nil {
		t.Fatalf("docker save archive: %v", err)
	}
	check("docker save", saveID)
	if id, err := importBytes(t, e, im, gzipped(t, save)); err != nil || id != saveID {
		t.Errorf("gzipped docker save archive = %q, %v, want the earlier image %s", id, err, saveID)
	}
	// Through an upload, as the API imports it.
	up, err := e.PutFile(context.Background(), acct, bytes.NewReader(save), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := im.ImportRegistry(context.Background(), e, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: "upload://" + up.UUID}}); err != nil || id != saveID {
		t.Errorf("upload://%s = %q, %v, want the earlier image %s", up.UUID, id, err, saveID)
	}

	// An OCI layout with an index of two platforms, as a tarball and as a
	// directory.
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(arm, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatal(err)
	}
	layoutID, err := importBytes(t, e, im, tarDir(t, dir))
	if err != nil {
		t.Fatalf("OCI layout tarball: %v", err)
	}
	check("OCI layout tarball", layoutID)
	e2, im2 := newEngine(t, Options{})
	dirID, err := im2.ImportPath(context.Background(), e2, acct, dir)
	if err != nil {
		t.Fatalf("OCI layout directory: %v", err)
	}
	diffTrees(t, want, tree(t, e2, dirID))

	// A plain root filesystem: ".wh." names are ordinary files there.
	rootfs := tarBytes(t, dir_("etc"), file("etc/issue", "plain\n"), file("a/.wh.b", "not a whiteout"))
	rootID, err := importBytes(t, e, im, gzipped(t, rootfs))
	if err != nil {
		t.Fatalf("plain rootfs: %v", err)
	}
	for p, wantBody := range map[string]string{"/etc/issue": "plain\n", "/a/.wh.b": "not a whiteout"} {
		if got, err := readImageFile(t, e, rootID, p); err != nil || got != wantBody {
			t.Errorf("rootfs %s = %q, %v, want %q", p, got, err, wantBody)
		}
	}
}

// dir_ is dir for files that also declare a variable named dir.
var dir_ = dir

func TestImportArchiveBadInput(t *testing.T) {
	e, im := newEngine(t, Options{})
	img := image(t, "amd64", layerOf(t, file("a", "a")), layerOf(t, file("b", strings.Repeat("b", 5000))))
	save := dockerSave(t, img, "example.com/x:v1")

	// A hand-made docker save archive whose config lies about its layer.
	cfg := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}}}}
	cb, _ := json.Marshal(cfg)
	mb, _ := json.Marshal(tarball.Manifest{{Config: "config.json", RepoTags: []string{"x:v1"}, Layers: []string{"layer.tar"}}})
	lying := tarBytes(t, file("manifest.json", string(mb)), file("config.json", string(cb)), file("layer.tar", string(tarBytes(t, file("f", "x")))))
	missing := tarBytes(t, file("manifest.json", string(mb)), file("config.json", string(cb)))

	// Two images in one archive.
	var two bytes.Buffer
	if err := tarball.MultiWrite(map[name.Tag]v1.Image{name.MustParseReference("x:1").(name.Tag): img, name.MustParseReference("y:1").(name.Tag): testImageSmall(t)}, &two); err != nil {
		t.Fatal(err)
	}

	// An OCI layout whose second layer blob is damaged in place.
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	ls, _ := img.Layers()
	d, _ := ls[1].Digest()
	blob := filepath.Join(dir, "blobs", "sha256", d.Hex)
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	damaged := tarDir(t, dir)

	bombLayer := layerOf(t, file("zeros", string(make([]byte, 32<<20))))
	bomb := dockerSave(t, image(t, "amd64", bombLayer), "example.com/bomb:v1")

	tests := []struct {
		name  string
		in    []byte
		opts  *Options
		class error
		msg   string
	}{
		{"not a tar", bytes.Repeat([]byte("garbage!"), 300), nil, errdefs.ErrInvalidArgument, "not a valid tar"},
		{"truncated docker save", save[:len(save)/2], nil, errdefs.ErrInvalidArgument, ""},
		{"config lies about the layer", lying, nil, errdefs.ErrInvalidArgument, "image config lists sha256:1111"},
		{"layer missing", missing, nil, errdefs.ErrInvalidArgument, "missing from the archive"},
		{"two images", two.Bytes(), nil, errdefs.ErrInvalidArgument, "holds 2 images"},
		{"damaged OCI layout blob", damaged, nil, errdefs.ErrInvalidArgument, "does not match its digest"},
		{"decompression bomb", bomb, &Options{MaxBytes: 4 << 20}, errdefs.ErrTooLarge, "4194304"},
		{"plain rootfs bomb", gzipped(t, tarBytes(t, file("zeros", string(make([]byte, 32<<20))))), &Options{MaxBytes: 4 << 20}, errdefs.ErrTooLarge, "4194304"},
		{"plain rootfs with dotdot", tarBytes(t, file("../x", "x")), nil, errdefs.ErrInvalidArgument, "outside the image root"},
	}
	before := imageCount(t, e)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			imp := im
			if tc.opts != nil {
				var err error
				if imp, err = New(loopback(*tc.opts)); err != nil {
					t.Fatal(err)
				}
			}
			_, err := importBytes(t, e, imp, tc.in)
			t.Logf("error: %v", err)
			wantErr(t, err, tc.class, tc.msg)
			if n := imageCount(t, e); n != before {
				t.Errorf("%d images after a failed import, want %d", n, before)
			}
			assertNoStaging(t, e)
		})
	}
	if _, err := im.ImportPath(context.Background(), e, acct, t.TempDir()); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ImportPath(empty dir) = %v, want an invalid-argument error", err)
	}
	// The gzip temporary files are gone.
	if ents, _ := os.ReadDir(filepath.Join(e.Home(), "registry", "tmp")); len(ents) > 0 {
		t.Errorf("%d temporary files left in registry/tmp", len(ents))
	}
}

func testImageSmall(t *testing.T) v1.Image {
	return image(t, "amd64", layerOf(t, file("small", "s")))
}
