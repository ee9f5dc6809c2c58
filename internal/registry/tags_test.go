package registry

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
)

// TestImportSameContentKeepsBothTags: two references to one manifest,
// imported with different tags, leave both tags in place (on two images
// sharing their layers); an import with a tag it already gave returns that
// image, and an untagged import takes no tag away.
func TestImportSameContentKeepsBothTags(t *testing.T) {
	e, _ := newEngine(t, Options{})
	reg := newRegistry(t)
	img := image(t, "amd64", layerOf(t, file("a", strings.Repeat("a", 1<<20))))
	reg.push(t, "test/one:v1", img)
	reg.push(t, "test/two:v1", img)
	var mu sync.Mutex
	layerGets := 0
	cfg, _ := img.ConfigName()
	host := reg.serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && !strings.HasSuffix(r.URL.Path, cfg.String()) {
				mu.Lock()
				layerGets++
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	})
	imp := func(ref, tag string) string {
		t.Helper()
		o := importOp(t, e, "docker://"+host+"/"+ref, nil, tag)
		if o.Status != apitypes.StatusSuccess {
			t.Fatalf("import %s as %q: %s: %s", ref, tag, o.Status, o.Error)
		}
		return o.ResultImageUUID
	}
	tagged := func(tag string) string {
		t.Helper()
		im, err := e.ResolveImage(context.Background(), acct, "tag:"+tag)
		if err != nil {
			t.Errorf("tag %s: %v", tag, err)
		}
		return im.UUID
	}
	a := imp("test/one:v1", "one")
	b := imp("test/two:v1", "two")
	if a == b {
		t.Fatalf("both imports returned image %s: the second took the first one's tag", a)
	}
	if tagged("one") != a || tagged("two") != b {
		t.Errorf("tags one, two on %s, %s; want %s, %s", tagged("one"), tagged("two"), a, b)
	}
	if layerGets != 1 {
		t.Errorf("%d layer downloads, want 1: the second image shares the stored layer", layerGets)
	}
	// The same reference and tag again: the same image, nothing pulled.
	if again := imp("test/one:v1", "one"); again != a || layerGets != 1 {
		t.Errorf("re-import as one = %s after %d layer downloads, want %s and 1", again, layerGets, a)
	}
	// Untagged: an existing image, and both tags stay.
	if u := imp("test/two:v1", ""); u != a && u != b {
		t.Errorf("untagged re-import = %s, want %s or %s", u, a, b)
	}
	if tagged("one") != a || tagged("two") != b {
		t.Errorf("after the untagged import, tags one, two on %s, %s; want %s, %s", tagged("one"), tagged("two"), a, b)
	}
	// A tag moved away by the user is not taken back by a re-import that
	// names another tag: that import gets an image of its own.
	if _, err := e.SetTag(context.Background(), acct, a, "mine"); err != nil {
		t.Fatal(err)
	}
	c := imp("test/one:v1", "one")
	if c == a || tagged("mine") != a || tagged("one") != c {
		t.Errorf("re-import as one after retagging %s as mine = %s; tags mine, one on %s, %s", a, c, tagged("mine"), tagged("one"))
	}
}
