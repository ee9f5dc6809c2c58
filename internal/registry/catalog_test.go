package registry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestTagRepo(t *testing.T) {
	for tag, want := range map[string]string{
		"": "", "py": "py", "py:3.12": "py", "team/py:v1": "team/py", "Py:v1": "", "a:b:c": "", "x@y": "", "a:": "", "my-img_2.x:latest": "my-img_2.x",
	} {
		if got := tagRepo(tag); got != want {
			t.Errorf("tagRepo(%q) = %q, want %q", tag, got, want)
		}
	}
}

// TestExportCatalog: /v2/_catalog lists the caller's repositories (by uuid
// and by tag name, flattened and with layers), paginated with n, last and
// a Link header, as go-containerregistry's Catalog and CatalogPage read
// them; another account's images are not listed.
func TestExportCatalog(t *testing.T) {
	e, _ := newEngine(t, Options{})
	ctx := context.Background()
	mk := func(account, tag string) string {
		t.Helper()
		id, err := e.NewBaseImage(ctx, account, func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "f"), []byte(tag), 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
		if tag != "" {
			if _, err := e.SetTag(ctx, account, id, tag); err != nil {
				t.Fatal(err)
			}
		}
		return id
	}
	var want []string
	for _, tag := range []string{"python:3.12", "python:3.13", "team/tool", "Upper:v1", ""} {
		id := mk(acct, tag)
		want = append(want, "arbor/"+id, "arbor-layers/"+id)
	}
	want = append(want, "arbor/python", "arbor-layers/python", "arbor/team/tool", "arbor-layers/team/tool")
	sort.Strings(want)
	otherID := mk("other", "secret:v1")

	_, secret, err := e.CreateToken(ctx, acct, "pull", 0)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v2/", ExportHandler(e, nil))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	reg, err := name.NewRegistry(strings.TrimPrefix(srv.URL, "http://"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	auth := remote.WithAuth(&authn.Basic{Username: "x", Password: secret})

	all, err := remote.Catalog(ctx, reg, auth)
	if err != nil {
		t.Fatalf("Catalog: %v", err)
	}
	if !slices.Equal(all, want) {
		t.Errorf("Catalog = %q\nwant %q", all, want)
	}
	for _, r := range all {
		if strings.Contains(r, otherID) || strings.Contains(r, "secret") {
			t.Errorf("another account's repository %s is listed", r)
		}
	}
	// Pages of 3, following last, add up to the whole list.
	var paged []string
	for last := ""; ; {
		page, err := remote.CatalogPage(reg, last, 3, auth)
		if err != nil {
			t.Fatalf("CatalogPage(%q): %v", last, err)
		}
		if len(page) > 3 {
			t.Fatalf("page of %d, want at most 3", len(page))
		}
		paged = append(paged, page...)
		if len(page) < 3 {
			break
		}
		last = page[len(page)-1]
	}
	if !slices.Equal(paged, want) {
		t.Errorf("pages = %q\nwant %q", paged, want)
	}
	// The Link header names the next page; the last page has none.
	get := func(q string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/_catalog"+q, nil)
		req.SetBasicAuth("x", secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if l := get("?n=2").Header.Get("Link"); l != `</v2/_catalog?last=`+strings.ReplaceAll(want[1], "/", "%2F")+`&n=2>; rel="next"` {
		t.Errorf("Link = %q", l)
	}
	if l := get("?n=2&last=" + want[len(want)-2]).Header.Get("Link"); l != "" {
		t.Errorf("Link on the last page = %q, want none", l)
	}
	if r := get("?n=x"); r.StatusCode != http.StatusBadRequest {
		t.Errorf("n=x: %d, want 400", r.StatusCode)
	}
	// Without a token: 401.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/_catalog", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous catalog: %v, %v", resp, err)
	} else {
		resp.Body.Close()
	}
}
