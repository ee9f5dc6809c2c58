package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/oplog"
)

// sourceImage builds a two-layer arbor image: a busybox base and a child
// layer written the way an overlay upper directory looks, with a whiteout,
// an opaque directory, odd modes and owners, a symlink, a fifo, hard links,
// an xattr and nanosecond mtimes.
func sourceImage(t *testing.T, e *engine.Engine, im *Importer) string {
	t.Helper()
	ctx := context.Background()
	bb := busyboxTar(t)
	base, err := im.ImportArchive(ctx, e, acct, bytes.NewReader(bb), int64(len(bb)))
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 3<<20)
	_, _ = rand.Read(big[:1<<20]) // part random, part compressible
	child, err := e.NewImage(ctx, acct, base, func(dir string) error {
		p := func(rel string) string { return filepath.Join(dir, rel) }
		steps := []func() error{
			func() error { return os.MkdirAll(p("data/setgid-dir"), 0o755) },
			func() error { return unix.Chmod(p("data/setgid-dir"), 0o2775) },
			func() error { return os.WriteFile(p("data/setuid"), []byte("suid"), 0o755) },
			func() error { return unix.Chmod(p("data/setuid"), 0o4755) },
			func() error { return os.WriteFile(p("data/file"), []byte("round trip\n"), 0o600) },
			func() error { return os.Chown(p("data/file"), 1234, 5678) },
			func() error { return unix.Setxattr(p("data/file"), "user.arbor.test", []byte("kept"), 0) },
			func() error { return os.WriteFile(p("data/exec"), []byte("#!/bin/sh\necho hi\n"), 0o755) },
			func() error { return os.WriteFile(p("data/empty"), nil, 0o644) },
			func() error { return os.WriteFile(p("data/big"), big, 0o644) },
			func() error { return os.WriteFile(p("data/hard1"), []byte("linked"), 0o644) },
			func() error { return os.Link(p("data/hard1"), p("data/hard2")) },
			func() error { return os.Symlink("file", p("data/link")) },
			func() error { return unix.Mkfifo(p("data/fifo"), 0o620) },
			// Whiteout of a base file, and an opaque /etc with one new file.
			func() error { return os.MkdirAll(p("bin"), 0o755) },
			func() error { return unix.Mknod(p("bin/ls"), unix.S_IFCHR, 0) },
			func() error { return os.MkdirAll(p("etc"), 0o755) },
			func() error { return unix.Setxattr(p("etc"), "trusted.overlay.opaque", []byte("y"), 0) },
			func() error { return os.WriteFile(p("etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644) },
		}
		for _, s := range steps {
			if err := s(); err != nil {
				return err
			}
		}
		mt := time.Unix(1712345678, 987654321)
		for _, f := range []string{"data/file", "data/exec", "data/empty", "data/big", "data/hard1", "data/fifo", "etc/passwd"} {
			if err := os.Chtimes(p(f), mt, mt); err != nil {
				return err
			}
		}
		ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p("data/link"), ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetTag(ctx, acct, child, "roundtrip:v1"); err != nil {
		t.Fatal(err)
	}
	return child
}

func TestExportRoundTrip(t *testing.T) {
	e, im := newEngine(t, Options{})
	ctx := context.Background()
	src := sourceImage(t, e, im)
	_, secret, err := e.CreateToken(ctx, acct, "pull", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, otherSecret, err := e.CreateToken(ctx, "other", "pull", 0)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v2/", ExportHandler(e, nil))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	get := func(method, path string, auth func(*http.Request)) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		if auth != nil {
			auth(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	basic := func(pass string) func(*http.Request) { return func(r *http.Request) { r.SetBasicAuth("anyone", pass) } }
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}

	// GET /v2/: 401 with a challenge, 200 with a token either way.
	if r := get("GET", "/v2/", nil); r.StatusCode != 401 || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("GET /v2/ without auth = %d, challenge %q; want 401 with a Basic challenge", r.StatusCode, r.Header.Get("WWW-Authenticate"))
	}
	if r := get("GET", "/v2/", basic("wrong")); r.StatusCode != 401 {
		t.Errorf("GET /v2/ with a wrong token = %d, want 401", r.StatusCode)
	}
	for what, a := range map[string]func(*http.Request){"basic": basic(secret), "bearer": bearer(secret)} {
		if r := get("GET", "/v2/", a); r.StatusCode != 200 || r.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
			t.Errorf("GET /v2/ with %s auth = %d", what, r.StatusCode)
		}
	}
	if r := get("PUT", "/v2/arbor/"+src+"/manifests/latest", basic(secret)); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT manifest = %d, want 405", r.StatusCode)
	}

	// A registry client's view: a valid image.
	ref, err := name.ParseReference(host + "/arbor/roundtrip:v1")
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "u", Password: secret}))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("validate.Image: %v", err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	r := get("HEAD", "/v2/arbor/"+src+"/manifests/latest", basic(secret))
	if r.StatusCode != 200 || r.Header.Get("Docker-Content-Digest") != digest.String() || r.ContentLength <= 0 {
		t.Errorf("HEAD by uuid = %d, digest %q, length %d; want 200, %s", r.StatusCode, r.Header.Get("Docker-Content-Digest"), r.ContentLength, digest)
	}
	if r := get("GET", "/v2/arbor/whatever/manifests/"+digest.String(), bearer(secret)); r.StatusCode != 200 {
		t.Errorf("GET manifest by digest = %d", r.StatusCode)
	}
	var tags struct{ Tags []string }
	if r := get("GET", "/v2/arbor/roundtrip/tags/list", basic(secret)); r.StatusCode != 200 || json.NewDecoder(r.Body).Decode(&tags) != nil || len(tags.Tags) != 1 || tags.Tags[0] != "v1" {
		t.Errorf("tags/list = %d %v, want [v1]", r.StatusCode, tags.Tags)
	}

	// Another account sees none of it.
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	for _, p := range []string{"/arbor/" + src + "/manifests/latest", "/arbor/roundtrip/manifests/v1", "/arbor/x/manifests/" + digest.String(), "/arbor/x/blobs/" + ld.String()} {
		if r := get("GET", "/v2"+p, basic(otherSecret)); r.StatusCode != 404 {
			t.Errorf("GET %s as another account = %d, want 404", p, r.StatusCode)
		}
	}
	if r := get("GET", "/v2/arbor/x/blobs/"+ld.String(), basic(secret)); r.StatusCode != 200 || r.Header.Get("Docker-Content-Digest") != ld.String() {
		t.Errorf("GET layer blob = %d", r.StatusCode)
	}

	// Pull it back into arbor: the same files.
	creds := &oplog.Credentials{Username: "anyone", Password: secret}
	back, err := im.ImportRegistry(ctx, e, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: host + "/arbor/" + src, Credentials: creds}})
	if err != nil {
		t.Fatal(err)
	}
	diffTrees(t, tree(t, e, src), tree(t, e, back))
	backTree := tree(t, e, back)
	for p, want := range map[string]string{"/data/file": " 600 1234:5678", "/data/setgid-dir": " 2775 ", "/data/setuid": " 4755 ", "/data/fifo": "p"} {
		if got := backTree[p]; !strings.Contains(got, want) {
			t.Errorf("%s after the round trip: %q, want it to contain %q", p, got, want)
		}
	}
	if got := backTree["/data/file"]; !strings.Contains(got, "xattr=kept") {
		t.Errorf("/data/file lost its xattr: %s", got)
	}
	for _, p := range []string{"/bin/ls", "/etc/hostname"} {
		if got, ok := backTree[p]; ok {
			t.Errorf("%s survived the round trip (%s), want it deleted", p, got)
		}
	}
	if out := runShell(t, e, back, "cat /data/file; ls /etc; test -e /bin/ls || echo no-ls"); out != "round trip\npasswd\nno-ls\n" {
		t.Errorf("run on the re-imported image = %q", out)
	}
	if byTag, err := im.ImportRegistry(ctx, e, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: "docker://" + host + "/arbor/roundtrip:v1", Credentials: creds}}); err != nil || byTag != back {
		t.Errorf("import by tag = %q, %v, want the same image %s (same manifest)", byTag, err, back)
	}

	// Deterministic: regenerated from scratch, the digests are the same.
	for _, d := range []string{"blobs", "exports"} {
		if err := os.RemoveAll(filepath.Join(e.Home(), "registry", d)); err != nil {
			t.Fatal(err)
		}
	}
	srv.Config.Handler = ExportHandler(e, TokenAuth(e))
	r = get("HEAD", "/v2/arbor/roundtrip/manifests/v1", basic(secret))
	if got := r.Header.Get("Docker-Content-Digest"); got != digest.String() {
		t.Errorf("regenerated manifest digest = %q, want %s", got, digest)
	}

	// Prune drops the exports of deleted images.
	x := ExportHandler(e, nil)
	srv.Config.Handler = x
	if r := get("GET", "/v2/arbor/"+back+"/manifests/latest", basic(secret)); r.StatusCode != 200 {
		t.Fatalf("export of the re-imported image = %d", r.StatusCode)
	}
	if err := e.DeleteImage(ctx, acct, back); err != nil {
		t.Fatal(err)
	}
	if err := x.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.Home(), "registry", "exports", back+".json")); !os.IsNotExist(err) {
		t.Errorf("export record of a deleted image survived Prune: %v", err)
	}
	if r := get("GET", "/v2/arbor/"+back+"/manifests/latest", basic(secret)); r.StatusCode != 404 {
		t.Errorf("manifest of a deleted image = %d, want 404", r.StatusCode)
	}
	if r := get("GET", "/v2/arbor/roundtrip/manifests/v1", basic(secret)); r.StatusCode != 200 {
		t.Errorf("manifest of a live image after Prune = %d", r.StatusCode)
	} else if b, _ := io.ReadAll(r.Body); !bytes.Contains(b, []byte(src)) {
		t.Errorf("manifest does not name its arbor image: %s", b)
	}
}

// TestExportBlobsGoWithTheirImage: deleting an image removes its export
// records and the blobs no other image's export uses, flattened and
// layered; blobs shared with a live image's export stay and still serve.
func TestExportBlobsGoWithTheirImage(t *testing.T) {
	e, im := newEngine(t, Options{})
	ctx := context.Background()
	base, err := im.ImportArchive(ctx, e, acct, bytes.NewReader(busyboxTar(t)), int64(len(busyboxTar(t))))
	if err != nil {
		t.Fatal(err)
	}
	child, err := e.NewImage(ctx, acct, base, func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "child"), []byte("only in the child"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	x := ExportHandler(e, nil)
	blobs := func() map[string]bool {
		ents, err := os.ReadDir(filepath.Join(e.Home(), "registry", "blobs", "sha256"))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, en := range ents {
			out["sha256:"+en.Name()] = true
		}
		return out
	}
	recs := map[string]*exportRecord{}
	for _, id := range []string{base, child} {
		img, err := e.Image(ctx, acct, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"", variantLayers} {
			rec, err := x.export(ctx, acct, img, v)
			if err != nil {
				t.Fatal(err)
			}
			recs[recKey(id, v)] = rec
		}
	}
	keep := map[string]bool{}
	for _, v := range []string{"", variantLayers} {
		for _, d := range recs[recKey(base, v)].blobs() {
			keep[d] = true
		}
	}
	var childOnly []string
	for _, v := range []string{"", variantLayers} {
		for _, d := range recs[recKey(child, v)].blobs() {
			if !keep[d] {
				childOnly = append(childOnly, d)
			}
		}
	}
	if len(childOnly) == 0 || len(keep) == 0 {
		t.Fatalf("child-only blobs %d, shared or base blobs %d: the test needs both", len(childOnly), len(keep))
	}
	before := blobs()
	if err := e.DeleteImage(ctx, acct, child); err != nil {
		t.Fatal(err)
	}
	after := blobs()
	for _, d := range childOnly {
		if !before[d] || after[d] {
			t.Errorf("blob %s of the deleted image: before %v, after %v; want it gone", d, before[d], after[d])
		}
	}
	for d := range keep {
		if !after[d] {
			t.Errorf("blob %s of the live image was removed", d)
		}
	}
	for _, v := range []string{"", variantLayers} {
		if _, err := os.Stat(filepath.Join(e.Home(), "registry", "exports", recKey(child, v)+".json")); !os.IsNotExist(err) {
			t.Errorf("export record %s of the deleted image: %v, want it gone", recKey(child, v), err)
		}
	}
	// The live image still serves from the blobs that stayed.
	img, _ := e.Image(ctx, acct, base)
	if rec, err := x.export(ctx, acct, img, variantLayers); err != nil || !x.haveBlobs(rec) {
		t.Errorf("export of the live image after the delete: %v", err)
	}
}

// TestExportBlobsCountInUsage: an image's export blobs are charged to the
// account that exported it (each blob once), so they count in its usage
// and storage quota, and stop counting when the image is deleted.
func TestExportBlobsCountInUsage(t *testing.T) {
	e, im := newEngine(t, Options{})
	ctx := context.Background()
	tar := busyboxTar(t)
	base, err := im.ImportArchive(ctx, e, acct, bytes.NewReader(tar), int64(len(tar)))
	if err != nil {
		t.Fatal(err)
	}
	child, err := e.NewImage(ctx, acct, base, func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "child"), []byte("only in the child"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	stored := func() int64 {
		u, err := e.Usage(ctx, acct)
		if err != nil {
			t.Fatal(err)
		}
		return u.StoredBytes
	}
	before := stored()
	x := ExportHandler(e, nil)
	img, err := e.Image(ctx, acct, child)
	if err != nil {
		t.Fatal(err)
	}
	flat, err := x.export(ctx, acct, img, "")
	if err != nil {
		t.Fatal(err)
	}
	layered, err := x.export(ctx, acct, img, variantLayers)
	if err != nil {
		t.Fatal(err)
	}
	want := flat.ManifestSize + flat.LayerSize + layered.ManifestSize
	for _, l := range layered.Layers {
		want += l.Size
	}
	if flat.LayerSize < 1<<20 {
		t.Fatalf("flattened busybox layer is %d bytes: too small for the test", flat.LayerSize)
	}
	if got := stored() - before; got != want {
		t.Errorf("exports added %d bytes to the account's usage, want %d (manifests and layers)", got, want)
	}
	if other, err := e.Usage(ctx, "someone-else"); err != nil || other.StoredBytes != 0 {
		t.Errorf("another account's usage = %+v, %v; want 0", other, err)
	}
	if err := e.DeleteImage(ctx, acct, child); err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteImage(ctx, acct, base); err != nil {
		t.Fatal(err)
	}
	if got := stored(); got != 0 {
		t.Errorf("usage after deleting every image = %d, want 0", got)
	}
}
