package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
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

// unfilteredServer is a server like ConTree's: GET /v1/images ignores
// uuid_prefix and serves pages of images (newest first) by limit and
// offset, 1 to 1000 per page; no image has a tag. lists counts the list
// requests.
func unfilteredServer(t *testing.T, images []apitypes.Image) (c *client.Client, lists *atomic.Int32) {
	t.Helper()
	lists = new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/inspect/":
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"no image with tag","status":404}`))
		case "/v1/images":
			lists.Add(1)
			q := r.URL.Query()
			limit, offset := 100, 0
			if v := q.Get("limit"); v != "" {
				limit, _ = strconv.Atoi(v)
			}
			if v := q.Get("offset"); v != "" {
				offset, _ = strconv.Atoi(v)
			}
			if limit < 1 || limit > 1000 || offset < 0 {
				w.WriteHeader(http.StatusBadRequest)
				w.Write([]byte(`{"error":"limit must be between 1 and 1000"}`))
				return
			}
			page := images[min(offset, len(images)):min(offset+limit, len(images))]
			json.NewEncoder(w).Encode(apitypes.ImageListResponse{Images: page})
		default:
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, "t")
	if err != nil {
		t.Fatal(err)
	}
	return c, lists
}

// imagesWith returns n images whose UUIDs start with "1", except that the
// image at index i has UUID uuids[i].
func imagesWith(n int, uuids map[int]string) []apitypes.Image {
	ims := make([]apitypes.Image, n)
	for i := range ims {
		ims[i].UUID = fmt.Sprintf("1%07x-0000-4000-8000-000000000000", i)
		if u, ok := uuids[i]; ok {
			ims[i].UUID = u
		}
	}
	return ims
}

// TestImageByPrefixPagesUnfilteredServer: against a server that ignores
// uuid_prefix, a prefix is looked for page by page through the whole list:
// a match past the first page resolves, two matches on different pages
// are ambiguous (and the search stops at the second), none is no match,
// and a list longer than the search's bound is an error saying what to
// pass instead.
func TestImageByPrefixPagesUnfilteredServer(t *testing.T) {
	const (
		a = "beef0001-0000-4000-8000-00000000000a"
		b = "beef0002-0000-4000-8000-00000000000b"
	)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		n      int            // images on the server
		uuids  map[int]string // index: UUID
		ref    string
		want   string   // the UUID resolved, "" for an error
		errs   []string // parts of the error
		lists  int32    // list requests made
		direct bool     // call imageByPrefix: nil, nil for no match
	}{
		{name: "match on the last page", n: 3000, uuids: map[int]string{2500: a}, ref: "beef", want: a, lists: 4},
		{name: "match on page 2", n: 3000, uuids: map[int]string{600: a, 2900: b}, ref: "BEEF0001", want: a, lists: 4},
		{name: "ambiguous across pages", n: 5000, uuids: map[int]string{50: a, 1500: b}, ref: "beef",
			errs: []string{"ambiguous", "at least 2 images", a, b, "type more characters"}, lists: 3},
		{name: "ambiguous past the first page", n: 3000, uuids: map[int]string{300: a, 2800: b}, ref: "beef",
			errs: []string{"ambiguous", "matches 2 images", a, b}, lists: 4},
		{name: "no match", n: 2100, ref: "beef", direct: true, lists: 4}, // the last page is empty
		{name: "too many images", n: 100 + prefixScanPages*prefixScanPage + 1, uuids: map[int]string{7: a}, ref: "beef",
			errs: []string{`image prefix "beef"`, "does not filter", "20100 searched", a + " matches", "pass the full UUID or a tag"}, lists: 1 + prefixScanPages},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, lists := unfilteredServer(t, imagesWith(tc.n, tc.uuids))
			var im *apitypes.Image
			var err error
			if tc.direct {
				im, err = imageByPrefix(ctx, c, tc.ref)
			} else {
				im, err = resolveImage(ctx, c, tc.ref)
			}
			switch {
			case tc.want != "":
				if err != nil || im == nil || im.UUID != tc.want {
					t.Errorf("resolveImage(%s) = %+v, %v; want %s", tc.ref, im, err, tc.want)
				}
			case len(tc.errs) > 0:
				if err == nil {
					t.Fatalf("resolveImage(%s) = %+v, want an error", tc.ref, im)
				}
				for _, want := range tc.errs {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("resolveImage(%s) error %q does not contain %q", tc.ref, err, want)
					}
				}
			default:
				if im != nil || err != nil {
					t.Errorf("imageByPrefix(%s) = %+v, %v; want no match", tc.ref, im, err)
				}
			}
			if n := lists.Load(); n != tc.lists {
				t.Errorf("%d list requests, want %d", n, tc.lists)
			}
		})
	}
}
