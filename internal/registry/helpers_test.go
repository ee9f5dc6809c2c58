package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/layerfs"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/testutil"
)

const acct = "test"

// loopback opts in to the test registries, which listen on loopback:
// imports reach public addresses only unless the operator allows others.
func loopback(opts Options) Options {
	opts.AllowRegistries = append(opts.AllowRegistries, "127.0.0.0/8")
	return opts
}

// newEngine starts an engine (runc) on a fresh home with an Importer
// installed, allowed to reach registries on loopback.
func newEngine(t *testing.T, opts Options) (*engine.Engine, *Importer) {
	t.Helper()
	testutil.RequiresRoot(t)
	e, err := engine.New(context.Background(), engine.Config{Home: testutil.Home(t), Runtime: "runc"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	im, err := Install(e, loopback(opts))
	if err != nil {
		t.Fatal(err)
	}
	return e, im
}

// testRegistry is go-containerregistry's in-process registry on loopback.
type testRegistry struct {
	handler http.Handler
	host    string // 127.0.0.1:port, plain
}

func newRegistry(t *testing.T) *testRegistry {
	t.Helper()
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return &testRegistry{handler: h, host: strings.TrimPrefix(s.URL, "http://")}
}

// serve serves the same registry content through wrap on another port.
func (r *testRegistry) serve(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	s := httptest.NewServer(wrap(r.handler))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func (r *testRegistry) push(t *testing.T, repoTag string, img v1.Image) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(r.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (r *testRegistry) pushIndex(t *testing.T, repoTag string, idx v1.ImageIndex) {
	t.Helper()
	ref, err := name.ParseReference(r.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// ent is a tar entry for building layers.
type ent struct {
	hdr  tar.Header
	body string
}

var fixedTime = time.Unix(1700000000, 123456789)

func file(name, body string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: fixedTime}, body: body}
}
func fileMode(name, body string, mode int64, uid, gid int) ent {
	e := file(name, body)
	e.hdr.Mode, e.hdr.Uid, e.hdr.Gid = mode, uid, gid
	return e
}
func dir(name string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: fixedTime}}
}
func symlink(name, target string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, ModTime: fixedTime}}
}
func hardlink(name, target string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: fixedTime}}
}
func device(name string, typ byte, major, minor int64) ent {
	return ent{hdr: tar.Header{Typeflag: typ, Name: name, Mode: 0o600, Devmajor: major, Devminor: minor, ModTime: fixedTime}}
}

func tarBytes(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// layer builds a layer from a tar (gzip-compressed by go-containerregistry
// unless opts say otherwise).
func layer(t testing.TB, b []byte, opts ...tarball.LayerOption) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func layerOf(t testing.TB, ents ...ent) v1.Layer { return layer(t, tarBytes(t, ents...)) }

// image stacks layers into a linux image for arch.
func image(t testing.TB, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	cfg.Config.Env = []string{"PATH=/bin"}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func index(t testing.TB, imgs map[string]v1.Image) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	archs := make([]string, 0, len(imgs))
	for a := range imgs {
		archs = append(archs, a)
	}
	sort.Strings(archs)
	for _, a := range archs {
		adds = append(adds, mutate.IndexAddendum{Add: imgs[a], Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: a}}})
	}
	return mutate.AppendManifests(empty.Index, adds...)
}

var busyboxTar = func() func(t testing.TB) []byte {
	var b []byte
	return func(t testing.TB) []byte {
		t.Helper()
		if b == nil {
			var buf bytes.Buffer
			if err := baseimage.WriteBusyboxTar(&buf); err != nil {
				t.Fatal(err)
			}
			b = buf.Bytes()
		}
		return b
	}
}()

// importOp imports url through the engine's operation machinery and
// returns the finished operation.
func importOp(t *testing.T, e *engine.Engine, url string, creds *oplog.Credentials, tag string) engine.Operation {
	t.Helper()
	req := engine.ImportRequest{Registry: oplog.ImportSource{URL: url, Credentials: creds}}
	if tag != "" {
		req.Tag = &tag
	}
	op, err := e.Import(context.Background(), acct, req)
	if err != nil {
		t.Fatalf("Import(%s): %v", url, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o, err := e.WaitOperation(ctx, acct, op)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// progressEvents returns the progress events of op.
func progressEvents(t *testing.T, e *engine.Engine, op string) []apitypes.EventDataProgress {
	t.Helper()
	var out []apitypes.EventDataProgress
	err := e.FollowEvents(context.Background(), acct, op, engine.FollowOptions{After: -1}, func(ev engine.Event) error {
		if ev.Type == apitypes.EventProgress {
			var p apitypes.EventDataProgress
			if err := json.Unmarshal(ev.Data, &p); err != nil {
				return err
			}
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runShell runs cmd in image under runc and returns its stdout.
func runShell(t *testing.T, e *engine.Engine, image, cmd string) string {
	t.Helper()
	sh, disposable := true, true
	op, _, err := e.Spawn(context.Background(), acct, engine.SpawnRequest{Command: cmd, Image: image, Shell: &sh, Disposable: &disposable})
	if err != nil {
		t.Fatalf("Spawn(%q): %v", cmd, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o, err := e.WaitOperation(ctx, acct, op)
	if err != nil {
		t.Fatal(err)
	}
	var m apitypes.InstanceMetadata
	if err := json.Unmarshal([]byte(o.Metadata), &m); err != nil {
		t.Fatal(err)
	}
	if o.Status != apitypes.StatusSuccess || m.Result == nil {
		t.Fatalf("run %q: status %s (%s)", cmd, o.Status, o.Error)
	}
	out, err := m.Result.Stdout.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if m.Result.State.ExitCode != 0 {
		errb, _ := m.Result.Stderr.Bytes()
		t.Fatalf("run %q: exit %d, stderr %q", cmd, m.Result.State.ExitCode, errb)
	}
	return string(out)
}

// imageCount counts the account's images.
func imageCount(t *testing.T, e *engine.Engine) int {
	t.Helper()
	ims, err := e.ListImages(context.Background(), engine.ImageFilter{Account: acct, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(ims)
}

// assertNoStaging checks that failed imports left no staging directories.
func assertNoStaging(t *testing.T, e *engine.Engine) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.Home(), "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range ents {
		if strings.HasPrefix(en.Name(), "import-") {
			t.Errorf("staging directory %s left behind", en.Name())
		}
	}
}

// readImageFile reads path from an image.
func readImageFile(t *testing.T, e *engine.Engine, image, path string) (string, error) {
	t.Helper()
	fsys, release, err := e.ImageFS(context.Background(), acct, image)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	f, _, err := fsys.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	return string(b), err
}

// tree describes every entry of an image's merged filesystem except the
// root: type, mode, owner, size, mtime, content hash, symlink target and
// user xattrs.
func tree(t *testing.T, e *engine.Engine, image string) map[string]string {
	t.Helper()
	fsys, release, err := e.ImageFS(context.Background(), acct, image)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	out := map[string]string{}
	err = fsys.Walk(context.Background(), "/", func(en layerfs.Entry) error {
		if en.Path == "/" {
			return nil
		}
		desc := fmt.Sprintf("%v %o %d:%d size=%d mtime=%d link=%q", en.Mode.Type(), en.RawMode&0o7777, en.UID, en.GID, en.Size, en.ModTime.UnixNano(), en.Linkname)
		if en.Mode.IsDir() {
			desc = fmt.Sprintf("%v %o %d:%d", en.Mode.Type(), en.RawMode&0o7777, en.UID, en.GID) // dir sizes and mtimes depend on the host filesystem
		}
		if en.Mode.IsRegular() {
			f, _, err := fsys.Open(en.Path)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			desc += " sha256=" + hex.EncodeToString(h.Sum(nil))[:16]
		}
		if en.Mode&fs.ModeDevice != 0 {
			var st unix.Stat_t
			if err := unix.Lstat(en.HostPath, &st); err == nil {
				desc += fmt.Sprintf(" rdev=%d", st.Rdev)
			}
		}
		if v := userXattr(en.HostPath); v != "" {
			desc += " xattr=" + v
		}
		out[en.Path] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func userXattr(p string) string {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, "user.arbor.test", buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

func diffTrees(t *testing.T, a, b map[string]string) {
	t.Helper()
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	n := 0
	for _, k := range keys {
		if a[k] != b[k] {
			if n++; n <= 20 {
				t.Errorf("%s:\n  source:   %s\n  imported: %s", k, a[k], b[k])
			}
		}
	}
	if n > 0 {
		t.Errorf("%d of %d entries differ", n, len(keys))
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func wantErr(t *testing.T, err error, class error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want an error of class %v mentioning %q", class, substr)
	}
	if class != nil && !errors.Is(err, class) {
		t.Errorf("error %q has the wrong class, want %v", err, class)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Errorf("error %q does not mention %q", err, substr)
	}
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
