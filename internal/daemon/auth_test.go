package daemon_test

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/arborsh/arbor/internal/daemon"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// TestBearerFormsOnEverySurface: /v1, /v2/ and /mcp read the token with
// one parser (internal/bearer), so each accepts and refuses the same
// Authorization forms; only /v2/ also takes the token as a Basic password,
// which is how docker and crane log in.
func TestBearerFormsOnEverySurface(t *testing.T) {
	d := testdaemon.New(t, testdaemon.Options{Serve: func(ctx context.Context, home string, cfg engine.Config, ready func(string)) error {
		return daemon.Run(ctx, daemon.Config{Home: home, Listen: "127.0.0.1:0", Engine: cfg, Logger: slog.New(slog.DiscardHandler), Ready: ready})
	}})
	tok := d.Token
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("me:"+tok))
	surfaces := []struct{ method, path string }{{"GET", "/v1/images"}, {"GET", "/v2/"}, {"POST", "/mcp"}}
	for _, c := range []struct {
		header string
		ok     bool
	}{
		{"Bearer " + tok, true},
		{"bearer " + tok, true},
		{"BEARER " + tok, true},
		{"Bearer  " + tok, true},
		{"Bearer\t" + tok, true},
		{"", false},
		{tok, false},
		{"Bearer", false},
		{"Bearer " + tok + " x", false},
		{"Token " + tok, false},
		{"Bearer not-a-token", false},
		{basic, false}, // but for /v2/, below
	} {
		for _, s := range surfaces {
			want := c.ok || (c.header == basic && s.path == "/v2/")
			req, err := http.NewRequest(s.method, d.URL+s.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.header != "" {
				req.Header.Set("Authorization", c.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if got := resp.StatusCode != http.StatusUnauthorized; got != want {
				t.Errorf("%s %s with Authorization %q: %d, want accepted %v", s.method, s.path, c.header, resp.StatusCode, want)
			}
		}
	}
}
