package registry

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/oplog"
)

// rawLayers describes each layer directory of image, bottom first, as it
// is on disk: overlay whiteouts (0/0 character devices) and opaque xattrs
// included.
func rawLayers(t *testing.T, e *engine.Engine, image string) []map[string]string {
	t.Helper()
	paths, release, err := e.ImageLayers(context.Background(), acct, image)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var out []map[string]string
	for i := len(paths) - 1; i >= 0; i-- {
		root := paths[i]
		m := map[string]string{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == root {
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return err
			}
			desc := fmt.Sprintf("type=%o mode=%o %d:%d", st.Mode&unix.S_IFMT, st.Mode&0o7777, st.Uid, st.Gid)
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				buf := make([]byte, 8)
				if n, err := unix.Lgetxattr(p, "trusted.overlay.opaque", buf); err == nil {
					desc += " opaque=" + string(buf[:n])
				}
			case unix.S_IFREG:
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				s := sha256.Sum256(b)
				desc += fmt.Sprintf(" nlink=%d sha256=%s", st.Nlink, hex.EncodeToString(s[:8]))
			case unix.S_IFLNK:
				l, _ := os.Readlink(p)
				desc += " link=" + l
			case unix.S_IFCHR:
				desc += fmt.Sprintf(" rdev=%d", st.Rdev)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				desc += fmt.Sprintf(" mtime=%d", st.Mtim.Nano())
			}
			if v := userXattr(p); v != "" {
				desc += " xattr=" + v
			}
			rel, _ := filepath.Rel(root, p)
			m[rel] = desc
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func tarNames(t *testing.T, l v1.Layer) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var names []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

// TestExportLayersKept: arbor-layers/ serves one layer per chain layer with
// OCI whiteouts, shared layers have one digest, and an export → import
// round trip rebuilds the same layers, whiteouts and opaque directories
// included; arbor/ still serves one flattened layer.
func TestExportLayersKept(t *testing.T) {
	e, im := newEngine(t, Options{})
	ctx := context.Background()
	src := sourceImage(t, e, im)
	srcIm, err := e.Image(ctx, acct, src)
	if err != nil {
		t.Fatal(err)
	}
	sibling, err := e.NewImage(ctx, acct, srcIm.Parent, func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "sibling.txt"), []byte("another child of the same base\n"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := e.CreateToken(ctx, acct, "pull", 0)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v2/", ExportHandler(e, nil))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	pull := func(repoTag string) v1.Image {
		t.Helper()
		ref, err := name.ParseReference(host + "/" + repoTag)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "u", Password: secret}))
		if err != nil {
			t.Fatalf("pull %s: %v", repoTag, err)
		}
		if err := validate.Image(img); err != nil {
			t.Errorf("validate %s: %v", repoTag, err)
		}
		return img
	}

	layered := pull("arbor-layers/roundtrip:v1")
	ls, err := layered.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 {
		t.Fatalf("layered export has %d layers, want 2 (base and child)", len(ls))
	}
	top := strings.Join(tarNames(t, ls[1]), " ")
	for _, want := range []string{"bin/.wh.ls", "etc/.wh..wh..opq", "data/hard2"} {
		if !strings.Contains(" "+top+" ", " "+want+" ") {
			t.Errorf("top layer lacks %s: %s", want, top)
		}
	}
	if flat, _ := pull("arbor/roundtrip:v1").Layers(); len(flat) != 1 {
		t.Errorf("flattened export has %d layers, want 1", len(flat))
	}
	if byUUID, _ := pull("arbor-layers/" + src + ":latest").Digest(); true {
		if d, _ := layered.Digest(); d != byUUID {
			t.Errorf("layered export by uuid %s, by tag %s: want one manifest", byUUID, d)
		}
	}

	// The sibling shares the base layer, so its blob and digest.
	sl, err := pull("arbor-layers/" + sibling).Layers()
	if err != nil || len(sl) != 2 {
		t.Fatalf("sibling export: %d layers, %v", len(sl), err)
	}
	d0, _ := ls[0].Digest()
	s0, _ := sl[0].Digest()
	s1, _ := sl[1].Digest()
	d1, _ := ls[1].Digest()
	if d0 != s0 || d1 == s1 {
		t.Errorf("base layer digests %s and %s, top %s and %s: want the base shared, the tops distinct", d0, s0, d1, s1)
	}

	// Import it back: the same layers, whiteouts and opaque dirs, and the
	// same merged tree.
	creds := &oplog.Credentials{Username: "anyone", Password: secret}
	back, err := im.ImportRegistry(ctx, e, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: host + "/arbor-layers/roundtrip:v1", Credentials: creds}})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := e.Image(ctx, acct, back); err != nil || b.Depth != 2 {
		t.Errorf("re-imported image depth %d (%v), want 2", b.Depth, err)
	}
	want, got := rawLayers(t, e, src), rawLayers(t, e, back)
	if len(got) != len(want) {
		t.Fatalf("re-imported image has %d layers, want %d", len(got), len(want))
	}
	for i := range want {
		t.Logf("layer %d: %d entries", i, len(want[i]))
		diffTrees(t, want[i], got[i])
	}
	if !strings.Contains(got[1]["bin/ls"], "rdev=0") || !strings.Contains(got[1]["etc"], "opaque=y") {
		t.Errorf("re-imported top layer: bin/ls %q, etc %q; want a whiteout and an opaque directory", got[1]["bin/ls"], got[1]["etc"])
	}
	diffTrees(t, tree(t, e, src), tree(t, e, back))
	if out := runShell(t, e, back, "cat /data/file; ls /etc; test -e /bin/ls || echo no-ls"); out != "round trip\npasswd\nno-ls\n" {
		t.Errorf("run on the re-imported image = %q", out)
	}

	// The sibling's import shares the base layer it stored for back.
	before, _ := layerDirs(t, e)
	if _, err := im.ImportRegistry(ctx, e, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: host + "/arbor-layers/" + sibling, Credentials: creds}}); err != nil {
		t.Fatal(err)
	}
	if after, _ := layerDirs(t, e); after != before+1 {
		t.Errorf("importing the sibling added %d layer directories, want 1 (its base is stored)", after-before)
	}
}
