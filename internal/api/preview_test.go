package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

var wsecho = sync.OnceValues(func() (string, error) {
	dir, err := testutil.BuildDir("wsecho")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "wsecho")
	cmd := exec.Command("go", "build", "-o", p, "./testdata/wsecho")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build wsecho: %v: %s", err, out)
	}
	return p, nil
})

// TestPreview: a port of a running instance, under runsc and runc, with
// no network device in the sandbox: busybox httpd answers through its
// signed preview link and through the account's bearer token, and the
// proxy refuses no credentials (401), a forged link, another account, a
// port not exposed, a removed preview and an ended instance (403); a port
// nothing listens on is a 502 naming it; a WebSocket echo works through
// the proxy; another sandbox cannot reach the port.
func TestPreview(t *testing.T) {
	init, err := testdaemon.StaticInit()
	if err != nil {
		t.Fatal(err)
	}
	echoBin, err := wsecho()
	if err != nil {
		t.Fatal(err)
	}
	d := startRealDaemon(t, engine.Config{Runtime: "runsc", InitBinary: init, AllowedRuntimes: []string{"runc"}}, api.Options{})
	d.needsEngine(t, "serve the API and previews from the test's own mux")
	mux := http.NewServeMux()
	mux.Handle("/v1/", api.New(d.e, api.Options{}))
	mux.Handle("/preview/", api.PreviewHandler(d.e, api.Options{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	ctx := ctxT(t)
	f, err := os.Open(echoBin)
	if err != nil {
		t.Fatal(err)
	}
	up, err := d.c.UploadFile(ctx, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, otherSecret, _ := d.account(t, "preview-other")
	for _, rt := range []string{"runsc", "runc"} {
		t.Run(rt, func(t *testing.T) {
			sh := true
			sp, err := d.c.Spawn(ctx, apitypes.InstanceSpawnRequest{
				Command: "mkdir /www && echo hello-preview > /www/index.html && httpd -p 127.0.0.1:8080 -h /www && exec /wsecho 127.0.0.1:8081",
				Shell:   &sh, Image: d.base, Runtime: &rt,
				Files: map[string]apitypes.FileSpec{"/wsecho": {UUID: up.UUID, Mode: 0o755}},
			})
			if err != nil {
				t.Fatal(err)
			}
			op := sp.UUID
			t.Cleanup(func() { _ = d.c.Cancel(context.Background(), op) })
			expose := func(port int) *apitypes.Preview {
				t.Helper()
				p, err := d.c.Expose(ctx, op, port, 0)
				if err != nil {
					t.Fatalf("expose %d: %v", port, err)
				}
				return p
			}
			web := expose(8080)
			link := srv.URL + web.Path
			get := func(url string, hdr ...string) (int, string) {
				t.Helper()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				for i := 0; i+1 < len(hdr); i += 2 {
					req.Header.Set(hdr[i], hdr[i+1])
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("GET %s: %v", url, err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			// The servers start after the spawn: wait for the first answer.
			var code int
			var body string
			for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if code, body = get(link + "index.html"); code != http.StatusBadGateway {
					break
				}
			}
			if code != http.StatusOK || body != "hello-preview\n" {
				t.Fatalf("GET signed link = %d %q, want 200 hello-preview", code, body)
			}
			byBearer := fmt.Sprintf("%s/preview/%s/8080/_/index.html", srv.URL, op)
			if code, body = get(byBearer, "Authorization", "Bearer "+d.token); code != http.StatusOK || body != "hello-preview\n" {
				t.Errorf("GET with the bearer token = %d %q, want 200", code, body)
			}
			if code, _ = get(byBearer); code != http.StatusUnauthorized {
				t.Errorf("GET without credentials = %d, want 401", code)
			}
			if code, _ = get(byBearer, "Authorization", "Bearer "+otherSecret); code != http.StatusForbidden {
				t.Errorf("GET with another account's token = %d, want 403", code)
			}
			exp, mac, _ := strings.Cut(web.Token, ".")
			forged := []string{
				strings.Replace(link, web.Token, exp+"."+strings.Repeat("A", len(mac)), 1),                   // another MAC
				strings.Replace(link, web.Token, fmt.Sprint(time.Now().Add(48*time.Hour).Unix())+"."+mac, 1), // a later expiry
				strings.Replace(link, "/8080/", "/8081/", 1),                                                 // another port
			}
			for _, u := range forged {
				if code, body = get(u + "index.html"); code != http.StatusForbidden {
					t.Errorf("GET forged link %s = %d %q, want 403", u, code, body)
				}
			}
			// The redirect to the directory keeps relative links working.
			if code, body = get(strings.TrimSuffix(link, "/")); code != http.StatusOK || body != "hello-preview\n" {
				t.Errorf("GET the link without its slash = %d %q, want the index through a redirect", code, body)
			}
			// Nothing on port 9: a 502 naming it.
			dead := expose(9)
			if code, body = get(srv.URL + dead.Path); code != http.StatusBadGateway || !strings.Contains(body, "nothing listens on port 9") {
				t.Errorf("GET a port nothing listens on = %d %q, want 502 naming the port", code, body)
			}
			// WebSocket echo through the proxy.
			ws := expose(8081)
			var c *websocket.Conn
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				var resp *http.Response
				c, resp, err = websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+ws.Path, nil)
				if err == nil || time.Now().After(deadline) || resp == nil || resp.StatusCode != http.StatusBadGateway {
					break
				}
			}
			if err != nil {
				t.Fatalf("websocket dial: %v", err)
			}
			c.SetReadLimit(1 << 20)
			for _, msg := range []string{"one", strings.Repeat("x", 100<<10)} {
				if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				_, b, err := c.Read(ctx)
				if err != nil || string(b) != "echo:"+msg {
					t.Fatalf("websocket echo = %.40q, %v; want echo:%.30q", b, err, msg)
				}
			}
			c.Close(websocket.StatusNormalClosure, "")
			// What the server gets: the path as sent, without the prefix,
			// and not the caller's token.
			want := fmt.Sprintf("path=/a%%2Fb/c query=q=1 prefix=/preview/%s/8081/_ auth=", op)
			if code, body = get(fmt.Sprintf("%s/preview/%s/8081/_/a%%2Fb/c?q=1", srv.URL, op), "Authorization", "Bearer "+d.token); code != http.StatusOK || body != want {
				t.Errorf("plain request to the echo server = %d %q, want %q", code, body, want)
			}
			// The list names the ports, without links.
			ps, err := d.c.Previews(ctx, op)
			if err != nil || len(ps) != 3 || ps[0].Port != 9 || ps[0].Token != "" {
				js, _ := json.Marshal(ps)
				t.Errorf("Previews = %s, %v; want ports 9, 8080, 8081 without tokens", js, err)
			}
			// Another sandbox cannot reach the port: its loopback is its own.
			sp2, err := d.c.Spawn(ctx, apitypes.InstanceSpawnRequest{Command: "wget -q -T 3 -O- http://127.0.0.1:8080/index.html; echo exit=$?",
				Shell: &sh, Image: d.base, Runtime: &rt})
			if err != nil {
				t.Fatal(err)
			}
			res, err := d.c.Wait(ctx, sp2.UUID)
			if err != nil {
				t.Fatal(err)
			}
			if out := stdoutOf(t, res); strings.Contains(out, "hello-preview") || !strings.Contains(out, "exit=1") {
				t.Errorf("another sandbox fetching 127.0.0.1:8080: %q, want a failure", out)
			}
			// Removing the preview kills its link; ending the instance kills the rest.
			if err := d.c.Unexpose(ctx, op, 8080); err != nil {
				t.Fatal(err)
			}
			if code, _ = get(link + "index.html"); code != http.StatusForbidden {
				t.Errorf("GET a removed preview = %d, want 403", code)
			}
			if err := d.c.Cancel(ctx, op); err != nil {
				t.Fatal(err)
			}
			if _, err := d.c.Wait(ctx, op); err != nil {
				t.Fatal(err)
			}
			if code, _ = get(srv.URL + ws.Path); code != http.StatusForbidden {
				t.Errorf("GET a preview of an ended instance = %d, want 403", code)
			}
		})
	}
}
