package daemon_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/daemon"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// TestPreviewListen: with PreviewListen, previews are served on that
// listener only (another origin than the API and web UI) and expose's links
// point there; without it, under /preview/ of the main listener.
func TestPreviewListen(t *testing.T) {
	init, err := testdaemon.StaticInit()
	if err != nil {
		t.Fatal(err)
	}
	for _, own := range []bool{false, true} {
		d := testdaemon.New(t, testdaemon.Options{Busybox: "busybox:latest", Engine: engine.Config{Runtime: "runc", InitBinary: init},
			Serve: func(ctx context.Context, home string, cfg engine.Config, ready func(string)) error {
				c := daemon.Config{Home: home, Listen: "127.0.0.1:0", Engine: cfg, Logger: slog.New(slog.DiscardHandler), Ready: ready}
				if own {
					c.PreviewListen = "127.0.0.1:0"
				}
				return daemon.Run(ctx, c)
			}})
		ctx := t.Context()
		sh := true
		sp, err := d.Client.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: d.Busybox, Shell: &sh,
			Command: "mkdir /w && echo served > /w/index.html && exec httpd -f -p 127.0.0.1:8080 -h /w"})
		if err != nil {
			t.Fatal(err)
		}
		p, err := d.Client.Expose(ctx, sp.UUID, 8080, 0)
		if err != nil {
			t.Fatal(err)
		}
		onMain := strings.HasPrefix(p.URL, d.URL+"/preview/")
		if onMain == own {
			t.Errorf("own listener %v: link %s (main listener %s)", own, p.URL, d.URL)
		}
		get := func(u string) (int, string) {
			resp, err := http.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		code, body := get(p.URL + "index.html")
		for deadline := time.Now().Add(30 * time.Second); code == http.StatusBadGateway && time.Now().Before(deadline); code, body = get(p.URL + "index.html") {
			time.Sleep(100 * time.Millisecond) // httpd starts after the spawn
		}
		if code != http.StatusOK || body != "served\n" {
			t.Errorf("own listener %v: GET link = %d %q", own, code, body)
		}
		if own {
			if code, _ := get(d.URL + p.Path + "index.html"); code == http.StatusOK {
				t.Errorf("with a preview listener, the main listener serves the preview too")
			}
		}
		_ = d.Client.Cancel(ctx, sp.UUID)
	}
}
