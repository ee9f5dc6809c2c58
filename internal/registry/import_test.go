package registry

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
)

// testImage is a four-layer image: busybox (gzip), files (zstd), more files
// (uncompressed, one with an absolute name), then whiteouts and an opaque
// directory (gzip).
func testImage(t *testing.T) v1.Image {
	t.Helper()
	l1 := layer(t, busyboxTar(t))
	l2 := layer(t, tarBytes(t,
		dir("opq"), file("opq/a", "a"), file("opq/b", "b"),
		file("gone.txt", "to be deleted"),
		dir("keep"), file("keep/k", "k"),
		fileMode("hello.txt", "hello from layer 2\n", 0o640, 1000, 1000),
		symlink("link-to-hello", "hello.txt"),
		hardlink("hello-hard", "hello.txt"),
		fileMode("bin/setuid-tool", "#!/bin/sh\n", 0o4755, 0, 0),
	), tarball.WithCompression(compression.ZStd))
	l3 := static.NewLayer(tarBytes(t, dir("docs"), file("docs/readme", "read me\n"), file("/abs/inside.txt", "absolute names stay in the image\n")), types.OCIUncompressedLayer)
	l4 := layerOf(t,
		file(".wh.gone.txt", ""),
		file("opq/.wh..wh..opq", ""), file("opq/c", "c"),
		file("etc/.wh.hostname", ""),
	)
	return image(t, "amd64", l1, l2, l3, l4)
}

func TestImportRegistry(t *testing.T) {
	e, im := newEngine(t, Options{})
	reg := newRegistry(t)
	img := testImage(t)
	arm := image(t, "arm64", layer(t, busyboxTar(t)), layerOf(t, file("arch.txt", "arm64")))
	idx := index(t, map[string]v1.Image{"amd64": img, "arm64": arm})
	reg.pushIndex(t, "test/multi:v1", idx)
	reg.pushIndex(t, "test/multi:latest", idx)

	o := importOp(t, e, "docker://"+reg.host+"/test/multi:v1", &oplog.Credentials{}, "multi:v1")
	if o.Status != apitypes.StatusSuccess {
		t.Fatalf("import: %s: %s", o.Status, o.Error)
	}
	id := o.ResultImageUUID
	if o.ResultTag != "multi:v1" {
		t.Errorf("result tag = %q, want multi:v1", o.ResultTag)
	}

	// The layers were applied in order, with whiteouts and opaque dirs.
	for p, want := range map[string]string{
		"/hello.txt":        "hello from layer 2\n",
		"/link-to-hello":    "hello from layer 2\n",
		"/hello-hard":       "hello from layer 2\n",
		"/keep/k":           "k",
		"/opq/c":            "c",
		"/docs/readme":      "read me\n",
		"/abs/inside.txt":   "absolute names stay in the image\n",
		"/bin/setuid-tool":  "#!/bin/sh\n",
		"/etc/os-release":   "NAME=\"arbor busybox\"\nID=busybox\n",
		"/gone.txt":         "",
		"/opq/a":            "",
		"/etc/hostname":     "",
		"/arch.txt":         "",
		"/opq/.wh..wh..opq": "",
	} {
		got, err := readImageFile(t, e, id, p)
		if want == "" {
			if err == nil {
				t.Errorf("%s exists (%q), want it deleted or absent", p, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%s = %q, %v, want %q", p, got, err, want)
		}
	}
	tr := tree(t, e, id)
	if got := tr["/bin/setuid-tool"]; !strings.Contains(got, " 4755 0:0") {
		t.Errorf("setuid tool = %s, want mode 4755", got)
	}
	if got := tr["/hello.txt"]; !strings.Contains(got, " 640 1000:1000") {
		t.Errorf("hello.txt = %s, want mode 640 owned by 1000:1000", got)
	}

	// Progress: layers and bytes.
	var layers, bytesDone bool
	for _, p := range progressEvents(t, e, o.UUID) {
		layers = layers || p.Phase == "layers" && p.Total == 4 && p.Done == 4
		bytesDone = bytesDone || p.Phase == "pull" && p.Unit == "bytes" && p.Done > 0 && p.Done == p.Total
	}
	if !layers || !bytesDone {
		t.Errorf("progress events lack the finished layer count (%v) or byte count (%v): %+v", layers, bytesDone, progressEvents(t, e, o.UUID))
	}

	// The image boots.
	out := runShell(t, e, id, "cat /hello.txt; ls /opq; test -e /gone.txt || echo gone")
	if out != "hello from layer 2\nc\ngone\n" {
		t.Errorf("run output = %q", out)
	}

	// Re-imports of the same image, under any spelling, are no-ops that
	// return the same image.
	for _, url := range []string{
		"docker://" + reg.host + "/test/multi:v1",
		reg.host + "/test/multi:v1",
		"oci://" + reg.host + "/test/multi:v1",
		reg.host + "/test/multi",
	} {
		start := time.Now()
		o2 := importOp(t, e, url, nil, "")
		if o2.Status != apitypes.StatusSuccess || o2.ResultImageUUID != id {
			t.Errorf("re-import %s = %s %s (%s), want image %s", url, o2.Status, o2.ResultImageUUID, o2.Error, id)
			continue
		}
		cached := false
		for _, p := range progressEvents(t, e, o2.UUID) {
			cached = cached || p.Phase == "cached"
		}
		if !cached {
			t.Errorf("re-import %s pulled again", url)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("re-import %s took %s", url, d)
		}
	}
	if n := imageCount(t, e); n != 1 {
		t.Errorf("%d images after re-imports, want 1", n)
	}

	// A deleted image is imported again.
	if err := e.DeleteImage(context.Background(), acct, id); err != nil {
		t.Fatal(err)
	}
	o3 := importOp(t, e, reg.host+"/test/multi:v1", nil, "")
	if o3.Status != apitypes.StatusSuccess || o3.ResultImageUUID == id || o3.ResultImageUUID == "" {
		t.Errorf("import after delete = %s %q (%s), want a new image", o3.Status, o3.ResultImageUUID, o3.Error)
	}

	// Another platform picks the other image of the index.
	imArm, err := New(loopback(Options{Platform: "linux/arm64"}))
	if err != nil {
		t.Fatal(err)
	}
	armID, err := imArm.ImportRegistry(context.Background(), e, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: reg.host + "/test/multi:v1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readImageFile(t, e, armID, "/arch.txt"); err != nil || got != "arm64" {
		t.Errorf("arm64 import: /arch.txt = %q, %v", got, err)
	}
	_ = im
}

// basicAuth wraps a registry with a Basic auth check.
func basicAuth(user, pass string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				writeRegError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
				return
			}
			h.ServeHTTP(w, r)
		})
	}
}

// corrupting wraps a registry so that the blob digest comes back with one
// byte flipped in its middle.
func corrupting(digest v1.Hash) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(r.URL.Path, "/blobs/"+digest.String()) || r.Method != http.MethodGet {
				h.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			b := rec.Body.Bytes()
			if len(b) > 0 {
				b[len(b)/2] ^= 0x5a
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(b)
		})
	}
}

func TestImportRegistryBadInput(t *testing.T) {
	e, im := newEngine(t, Options{})
	reg := newRegistry(t)
	good := image(t, "amd64", layerOf(t, file("a", "a")), layerOf(t, file("b", strings.Repeat("payload ", 20000))))
	reg.push(t, "test/good:v1", good)
	goodLayers, err := good.Layers()
	if err != nil {
		t.Fatal(err)
	}
	corruptDigest, err := goodLayers[1].Digest()
	if err != nil {
		t.Fatal(err)
	}
	authHost := reg.serve(t, basicAuth("user", "secret"))
	corruptHost := reg.serve(t, corrupting(corruptDigest))
	hostDir := t.TempDir() // the target of escape attempts; must stay empty

	pushed := func(repo string, layers ...v1.Layer) string {
		reg.push(t, repo, image(t, "amd64", layers...))
		return reg.host + "/" + repo
	}
	zeros := func(name string, n int) ent { return file(name, string(make([]byte, n))) }
	tests := []struct {
		name  string
		url   string
		creds *oplog.Credentials
		opts  *Options
		class error
		msg   string
	}{
		{name: "missing tag", url: reg.host + "/test/good:nope", class: errdefs.ErrNotFound, msg: "not found"},
		{name: "missing repository", url: reg.host + "/no/such:v1", class: errdefs.ErrNotFound, msg: "not found"},
		{name: "missing digest", url: reg.host + "/test/good@sha256:" + strings.Repeat("0", 64), class: errdefs.ErrNotFound, msg: "not found"},
		{name: "unreachable registry", url: "docker://" + closedPort(t) + "/test/good:v1", class: errdefs.ErrUnavailable, msg: "no registry answered"},
		{name: "wrong credentials", url: authHost + "/test/good:v1", creds: &oplog.Credentials{Username: "user", Password: "wrong"}, class: errdefs.ErrUnauthorized, msg: "rejected the credentials"},
		{name: "anonymous pull of a private image", url: authHost + "/test/good:v1", creds: &oplog.Credentials{}, class: errdefs.ErrUnauthorized, msg: "anonymous"},
		{name: "corrupt layer", url: corruptHost + "/test/good:v1", class: errdefs.ErrInvalidArgument, msg: "does not match its digest"},
		{name: "bad reference", url: "docker://Registry/UPPER/case:v1", class: errdefs.ErrInvalidArgument, msg: "not a valid image reference"},
		{name: "unsupported scheme", url: "https://" + reg.host + "/test/good:v1", class: errdefs.ErrInvalidArgument, msg: "scheme"},
		{name: "dotdot entry", url: pushed("bad/dotdot:v1", layerOf(t, file("ok", "x")), layerOf(t, file("../escape", "x"))), class: errdefs.ErrInvalidArgument, msg: "outside the image root"},
		{name: "absolute dotdot entry", url: pushed("bad/absdotdot:v1", layerOf(t, file("/../../"+filepath.Base(hostDir)+"/escape", "x"))), class: errdefs.ErrInvalidArgument, msg: "outside the image root"},
		{name: "symlink then write through it", url: pushed("bad/symlink:v1", layerOf(t, symlink("esc", hostDir), file("esc/pwned", "x"))), class: errdefs.ErrInvalidArgument, msg: "symlink"},
		{name: "hard link across layers", url: pushed("bad/hardlink:v1", layerOf(t, file("a", "x")), layerOf(t, hardlink("b", "a"))), class: errdefs.ErrInvalidArgument, msg: "hard link"},
		{name: "decompression bomb", url: pushed("bad/bomb:v1", layerOf(t, zeros("zeros", 64<<20))), opts: &Options{MaxBytes: 8 << 20}, class: errdefs.ErrTooLarge, msg: "8388608"},
		{name: "bomb spread over layers", url: pushed("bad/bombs:v1", layerOf(t, zeros("z1", 3<<20)), layerOf(t, zeros("z2", 3<<20)), layerOf(t, zeros("z3", 3<<20))), opts: &Options{MaxBytes: 8 << 20}, class: errdefs.ErrTooLarge, msg: "8388608"},
	}
	// An index without a linux/amd64 image, and a single arm64 image.
	reg.pushIndex(t, "bad/armonly:v1", index(t, map[string]v1.Image{"arm64": image(t, "arm64", layerOf(t, file("x", "x")))}))
	reg.push(t, "bad/armsingle:v1", image(t, "arm64", layerOf(t, file("x", "x"))))
	tests = append(tests,
		struct {
			name  string
			url   string
			creds *oplog.Credentials
			opts  *Options
			class error
			msg   string
		}{name: "index without the platform", url: reg.host + "/bad/armonly:v1", class: errdefs.ErrNotFound, msg: "no linux/amd64 image (it has linux/arm64)"},
		struct {
			name  string
			url   string
			creds *oplog.Credentials
			opts  *Options
			class error
			msg   string
		}{name: "image for another architecture", url: reg.host + "/bad/armsingle:v1", class: errdefs.ErrInvalidArgument, msg: "linux/arm64 image"},
	)

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
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := imp.ImportRegistry(ctx, e, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: tc.url, Credentials: tc.creds}})
			t.Logf("error: %v", err)
			wantErr(t, err, tc.class, tc.msg)
			if n := imageCount(t, e); n != before {
				t.Errorf("%d images after a failed import, want %d", n, before)
			}
			assertNoStaging(t, e)
			if ents, _ := os.ReadDir(hostDir); len(ents) > 0 {
				t.Fatalf("an import wrote %s on the host", filepath.Join(hostDir, ents[0].Name()))
			}
		})
	}

	// Each layer is extracted into a directory of its own, so a symlink of
	// a lower layer is never followed: a later layer's path through it
	// makes a directory that shadows the symlink, as with docker's and
	// containerd's overlay snapshotters, and nothing reaches the host.
	cross, err := im.ImportRegistry(context.Background(), e, acct, engine.ImportRequest{Registry: oplog.ImportSource{
		URL: pushed("bad/symlink-layers:v1", layerOf(t, symlink("esc", hostDir)), layerOf(t, file("esc/pwned", "x")))}})
	if err != nil {
		t.Fatalf("symlink in one layer, a path through it in the next: %v", err)
	}
	if got := tree(t, e, cross)["/esc"]; !strings.HasPrefix(got, "d") {
		t.Errorf("/esc = %s, want the upper layer's directory", got)
	}
	if got, err := readImageFile(t, e, cross, "/esc/pwned"); err != nil || got != "x" {
		t.Errorf("/esc/pwned = %q, %v", got, err)
	}
	if ents, _ := os.ReadDir(hostDir); len(ents) > 0 {
		t.Fatalf("an import wrote %s on the host", filepath.Join(hostDir, ents[0].Name()))
	}

	// The failure of an operation reads well in its record.
	o := importOp(t, e, corruptHost+"/test/good:v1", nil, "")
	if o.Status != apitypes.StatusFailed || !strings.Contains(o.Error, "does not match its digest") || !strings.Contains(o.Error, "layer 2 of 2") {
		t.Errorf("corrupt import operation = %s %q, want FAILED naming the layer and the digest", o.Status, o.Error)
	}
	// The right credentials work.
	if _, err := im.ImportRegistry(context.Background(), e, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: authHost + "/test/good:v1", Credentials: &oplog.Credentials{Username: "user", Password: "secret"}}}); err != nil {
		t.Errorf("import with the right credentials: %v", err)
	}
}

func TestParseReference(t *testing.T) {
	tests := []struct {
		in, name, scheme string
	}{
		{"python:3.12-slim", "index.docker.io/library/python:3.12-slim", "https"},
		{"docker://docker.io/library/busybox:latest", "index.docker.io/library/busybox:latest", "https"},
		{"ubuntu", "index.docker.io/library/ubuntu:latest", "https"},
		{"oci://ghcr.io/owner/image:tag", "ghcr.io/owner/image:tag", "https"},
		{"DOCKER://ghcr.io/owner/image", "ghcr.io/owner/image:latest", "https"},
		{"127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b:c", "http"},
		{"127.1.2.3:5000/a/b", "127.1.2.3:5000/a/b:latest", "http"},
		{"localhost:5000/a", "localhost:5000/a:latest", "http"},
		{"reg.localhost/a", "reg.localhost/a:latest", "http"},
		{"[::1]:5000/a", "[::1]:5000/a:latest", "http"},
		{"10.0.0.1:5000/a", "10.0.0.1:5000/a:latest", "https"},
		{"example.com/a@sha256:" + strings.Repeat("a", 64), "example.com/a@sha256:" + strings.Repeat("a", 64), "https"},
	}
	for _, tc := range tests {
		ref, err := ParseReference(tc.in)
		if err != nil {
			t.Errorf("ParseReference(%q) = %v", tc.in, err)
			continue
		}
		scheme := ref.Context().Scheme()
		if tc.scheme == "https" && strings.HasPrefix(tc.in, "10.") {
			scheme = "https" // go-containerregistry would try http too; tlsPolicy refuses it
		}
		if ref.Name() != tc.name || scheme != tc.scheme {
			t.Errorf("ParseReference(%q) = %s (%s), want %s (%s)", tc.in, ref.Name(), scheme, tc.name, tc.scheme)
		}
	}
	for _, bad := range []string{"", "docker://", "http://example.com/a", "upload://x", "UPPER/case", "a:b:c:d"} {
		if ref, err := ParseReference(bad); err == nil || !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseReference(%q) = %v, %v, want an invalid-argument error", bad, ref, err)
		}
	}
}

func TestTLSPolicyRefusesPlainHTTPOffLoopback(t *testing.T) {
	called := 0
	next := roundTripFunc(func(*http.Request) (*http.Response, error) { called++; return nil, fmt.Errorf("sent") })
	p := tlsPolicy{next}
	for _, u := range []string{"http://10.1.2.3/v2/", "http://192.168.1.1:5000/v2/", "http://registry.example/v2/"} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if _, err := p.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "refusing plain HTTP") {
			t.Errorf("RoundTrip(%s) = %v, want a refusal", u, err)
		}
	}
	if called != 0 {
		t.Fatalf("%d requests went out", called)
	}
	for _, u := range []string{"http://127.0.0.1:1/v2/", "http://[::1]:1/v2/", "http://localhost:1/v2/", "https://10.1.2.3/v2/"} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if _, err := p.RoundTrip(req); err == nil || err.Error() != "sent" {
			t.Errorf("RoundTrip(%s) = %v, want it passed on", u, err)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestBlobReader(t *testing.T) {
	data := []byte("some blob content")
	good := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256Sum(data))}
	read := func(r *blobReader) error {
		_, err := bytes.NewBuffer(nil).ReadFrom(r)
		if err == nil {
			err = r.check()
		}
		return err
	}
	if err := read(newBlobReader(bytes.NewReader(data), good, int64(len(data)), nil)); err != nil {
		t.Errorf("good blob: %v", err)
	}
	if err := read(newBlobReader(bytes.NewReader(data), good, -1, nil)); err != nil {
		t.Errorf("good blob, size unknown: %v", err)
	}
	bad := bytes.Clone(data)
	bad[3] ^= 1
	if err := read(newBlobReader(bytes.NewReader(bad), good, int64(len(data)), nil)); err == nil || !strings.Contains(err.Error(), "does not match its digest") {
		t.Errorf("damaged blob: %v", err)
	}
	if err := read(newBlobReader(bytes.NewReader(data[:5]), good, int64(len(data)), nil)); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("short blob: %v", err)
	}
	if err := read(newBlobReader(bytes.NewReader(append(bytes.Clone(data), 'x')), good, int64(len(data)), nil)); err == nil || !strings.Contains(err.Error(), "longer") {
		t.Errorf("long blob: %v", err)
	}
}

// TestConcurrentImportsPullOnce checks that simultaneous imports of one
// image fetch its layers once and all return the same image.
func TestConcurrentImportsPullOnce(t *testing.T) {
	e, im := newEngine(t, Options{})
	reg := newRegistry(t)
	img := image(t, "amd64", layerOf(t, file("a", strings.Repeat("a", 1<<20))))
	reg.push(t, "test/once:v1", img)
	var mu sync.Mutex
	blobGets := 0
	host := reg.serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
				mu.Lock()
				blobGets++
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	})
	const n = 4
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], errs[i] = im.ImportRegistry(context.Background(), e, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: host + "/test/once:v1"}})
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Errorf("import %d = %q, %v, want %q", i, ids[i], errs[i], ids[0])
		}
	}
	if blobGets != 2 { // the config and the one layer
		t.Errorf("%d blob downloads for %d concurrent imports, want 2", blobGets, n)
	}
	if c := imageCount(t, e); c != 1 {
		t.Errorf("%d images, want 1", c)
	}
	// The index survives a restart of the importer.
	im2, err := New(loopback(Options{}))
	if err != nil {
		t.Fatal(err)
	}
	if id, err := im2.ImportRegistry(context.Background(), e, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: host + "/test/once:v1"}}); err != nil || id != ids[0] || blobGets != 2 {
		t.Errorf("import by a new Importer = %q, %v after %d blob downloads; want %q from the index without downloads", id, err, blobGets, ids[0])
	}
	// Another account gets its own image.
	other, err := im.ImportRegistry(context.Background(), e, "other", engine.ImportRequest{Registry: oplog.ImportSource{URL: host + "/test/once:v1"}})
	if err != nil || other == ids[0] {
		t.Errorf("import by another account = %q, %v, want a separate image", other, err)
	}
}
