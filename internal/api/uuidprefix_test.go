package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client"
)

// TestListImagesByUUIDPrefix: GET /v1/images?uuid_prefix= (an arbor
// extension the CLI resolves prefixes with) keeps the account's images
// whose UUID starts with it, in either case, and rejects what cannot start
// a UUID with a message naming the parameter.
func TestListImagesByUUIDPrefix(t *testing.T) {
	d := sharedDaemon(t)
	c, _, _ := d.account(t, "uuid-prefix")
	base, err := d.importBusybox(ctxT(t), c, "p")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{base[:4], strings.ToUpper(base[:13]), base} {
		ims, err := c.ListImages(ctxT(t), client.ImageListOptions{UUIDPrefix: p})
		if err != nil {
			t.Fatalf("ListImages(uuid_prefix=%s): %v", p, err)
		}
		if len(ims) != 1 || ims[0].UUID != base {
			t.Errorf("ListImages(uuid_prefix=%s) = %+v, want only %s", p, ims, base)
		}
	}
	// Another account's images are not listed: the default account's base
	// shares no 36-character prefix with this one.
	if ims, err := d.c.ListImages(ctxT(t), client.ImageListOptions{UUIDPrefix: base}); err != nil || len(ims) != 0 {
		t.Errorf("default account lists %+v, %v for another account's uuid, want none", ims, err)
	}
	for _, bad := range []string{"abc", "xyz1", "abcd0000-0000-4000-8000-0000000000001"} {
		wantError(t, d.get(t, "/v1/images?uuid_prefix="+bad), http.StatusBadRequest, "uuid_prefix")
	}
}
