package cli

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
)

// TestExpose: arbor expose prints a URL the served daemon proxies to a
// server in a runsc sandbox; --list names the port; after --stop the URL
// is refused.
func TestExpose(t *testing.T) {
	d := liveDaemon(t)
	sh := true
	sp, err := d.c.Spawn(t.Context(), apitypes.InstanceSpawnRequest{Shell: &sh, Image: d.busybox,
		Command: "mkdir /www && echo from-sandbox > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www"})
	if err != nil {
		t.Fatal(err)
	}
	op := sp.UUID
	url := strings.TrimSpace(d.ok(t, "expose", "--ttl", "300", op[:8], "8080"))
	if !strings.HasPrefix(url, d.url+"/preview/"+op+"/8080/") {
		t.Fatalf("arbor expose printed %q, want a URL under %s/preview/%s/8080/", url, d.url, op)
	}
	get := func() (int, string) {
		resp, err := http.Get(url + "index.html")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get()
	for deadline := time.Now().Add(30 * time.Second); code == http.StatusBadGateway && time.Now().Before(deadline); code, body = get() {
		time.Sleep(100 * time.Millisecond) // httpd starts after the spawn
	}
	if code != http.StatusOK || body != "from-sandbox\n" {
		t.Fatalf("GET %s = %d %q, want 200 from-sandbox", url, code, body)
	}
	if out := d.ok(t, "expose", "--list", op); !strings.HasPrefix(out, "8080\t") {
		t.Errorf("arbor expose --list = %q, want port 8080", out)
	}
	if out := d.ok(t, "--json", "expose", "--stop", op, "8080"); !strings.Contains(out, `"stopped": true`) {
		t.Errorf("arbor --json expose --stop = %q, want stopped", out)
	}
	if code, _ = get(); code != http.StatusForbidden {
		t.Errorf("GET after --stop = %d, want 403", code)
	}
	d.ok(t, "cancel", op)
}
