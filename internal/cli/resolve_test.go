package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

// TestImageByPrefixAsksTheDaemon: a UUID prefix is resolved with one
// filtered list request (GET /v1/images?uuid_prefix=), not by paging
// through every image; a unique match resolves, several give an error
// naming the candidates. The daemon here is scripted: the point is the
// requests the CLI makes.
func TestImageByPrefixAsksTheDaemon(t *testing.T) {
	images := []apitypes.Image{
		{UUID: "abcd1111-0000-4000-8000-000000000001"},
		{UUID: "abcd2222-0000-4000-8000-000000000002"},
		{UUID: "beef3333-0000-4000-8000-000000000003"},
	}
	var lists atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/inspect/": // find by tag: no image has a tag like a prefix
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"no image with tag","status":404}`))
		case "/v1/images":
			lists.Add(1)
			p := r.URL.Query().Get("uuid_prefix")
			if p == "" {
				t.Errorf("GET %s: no uuid_prefix filter", r.URL)
			}
			out := apitypes.ImageListResponse{Images: []apitypes.Image{}}
			for _, im := range images {
				if strings.HasPrefix(im.UUID, p) {
					out.Images = append(out.Images, im)
				}
			}
			json.NewEncoder(w).Encode(out)
		default:
			if id, ok := strings.CutPrefix(r.URL.Path, "/v1/inspect/"); ok {
				json.NewEncoder(w).Encode(apitypes.Image{UUID: strings.TrimSuffix(id, "/")})
				return
			}
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, "t")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	im, err := resolveImage(ctx, c, "BEEF33")
	if err != nil || im.UUID != images[2].UUID {
		t.Errorf("resolveImage(BEEF33) = %+v, %v; want %s", im, err, images[2].UUID)
	}
	if n := lists.Swap(0); n != 1 {
		t.Errorf("resolving a unique prefix made %d list requests, want 1", n)
	}

	_, err = resolveImage(ctx, c, "abcd")
	if err == nil {
		t.Fatal("resolveImage(abcd) matched two images but did not fail")
	}
	for _, want := range []string{"ambiguous", "matches 2 images", images[0].UUID, images[1].UUID, "type more characters"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ambiguous prefix error %q does not contain %q", err, want)
		}
	}
	if n := lists.Swap(0); n != 1 {
		t.Errorf("resolving an ambiguous prefix made %d list requests, want 1", n)
	}
}
