package registry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/oplog"
)

func TestIsPublic(t *testing.T) {
	for s, want := range map[string]bool{
		"1.1.1.1": true, "8.8.8.8": true, "2606:4700::1111": true,
		"127.0.0.1": false, "127.1.2.3": false, "::1": false, "0.0.0.0": false, "::": false,
		"10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false, "fd00::1": false,
		"169.254.169.254": false, "fe80::1": false, "100.64.0.1": false, "224.0.0.1": false,
		"255.255.255.255": false, "::ffff:127.0.0.1": false, "::ffff:10.0.0.1": false, "64:ff9b::7f00:1": false,
		"::ffff:1.1.1.1": true,
	} {
		if got := isPublic(netip.MustParseAddr(s)); got != want {
			t.Errorf("isPublic(%s) = %v, want %v", s, got, want)
		}
	}
	if _, err := newDialPolicy([]string{"10.0.0.0/8", "::1", "[::1]", "registry.lan:5000", "localhost"}); err != nil {
		t.Errorf("valid allow list: %v", err)
	}
	if _, err := newDialPolicy([]string{"10.0.0.0/33x"}); err == nil {
		t.Error("bad allow-list entry accepted")
	}
}

// TestImportRegistryAddressPolicy: by default an import does not reach a
// registry on loopback, by address or by a name that resolves there (the
// check is on the address dialled), and sends it nothing; the operator's
// allow list, by range or by name, lets it through.
func TestImportRegistryAddressPolicy(t *testing.T) {
	e, _ := newEngine(t, Options{})
	reg := newRegistry(t)
	reg.push(t, "test/p:v1", image(t, "amd64", layerOf(t, file("a", "a"))))
	var hits atomic.Int64
	host := reg.serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1); h.ServeHTTP(w, r) })
	})
	_, port, _ := net.SplitHostPort(host)
	imp := func(opts Options, url string) (string, error) {
		t.Helper()
		im, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return im.ImportRegistry(ctx, e, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: url}})
	}
	for _, url := range []string{host + "/test/p:v1", "localhost:" + port + "/test/p:v1", "[::ffff:127.0.0.1]:" + port + "/test/p:v1"} {
		_, err := imp(Options{}, url)
		t.Logf("%s: %v", url, err)
		wantErr(t, err, errdefs.ErrForbidden, "--allow-registry")
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the registry got %d requests from refused imports", n)
	}
	if _, err := imp(Options{AllowRegistries: []string{"127.0.0.1/32"}}, host+"/test/p:v1"); err != nil {
		t.Errorf("import with 127.0.0.1/32 allowed: %v", err)
	}
	if _, err := imp(Options{AllowRegistries: []string{"localhost"}}, "localhost:"+port+"/test/p:v1"); err != nil {
		t.Errorf("import with localhost allowed by name: %v", err)
	}
	// A name allows that name, not the address behind it.
	_, err := imp(Options{AllowRegistries: []string{"localhost"}}, host+"/test/p:v1")
	wantErr(t, err, errdefs.ErrForbidden, "--allow-registry")
}

// TestImportErrorsHideWhatListens: a closed port, HTTP servers that are
// not registries and a service that is not HTTP at all give one message,
// so an import cannot be used to map what listens on a host.
func TestImportErrorsHideWhatListens(t *testing.T) {
	e, im := newEngine(t, Options{})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte("<html>not here</html>"))
	}))
	t.Cleanup(web.Close)
	everything := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html>hello</html>"))
	}))
	t.Cleanup(everything.Close)
	teapot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
	}))
	t.Cleanup(teapot.Close)
	ssh, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ssh.Close() })
	go func() {
		for {
			c, err := ssh.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
			c.Close()
		}
	}()
	hosts := map[string]string{
		"closed port":    closedPort(t),
		"web server":     strings.TrimPrefix(web.URL, "http://"),
		"403 everywhere": strings.TrimPrefix(teapot.URL, "http://"),
		"200 everywhere": strings.TrimPrefix(everything.URL, "http://"),
		"ssh":            ssh.Addr().String(),
	}
	var first string
	for what, host := range hosts {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := im.ImportRegistry(ctx, e, acct, engine.ImportRequest{Registry: oplog.ImportSource{URL: host + "/x/y:v1"}})
		cancel()
		if err == nil || !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("%s: %v, want an unavailable error", what, err)
			continue
		}
		msg := strings.ReplaceAll(err.Error(), host, "HOST")
		t.Logf("%s: %s", what, msg)
		if strings.Contains(msg, "SSH") || strings.Contains(msg, "refused") && !strings.Contains(msg, "was refused, failed") {
			t.Errorf("%s: message reveals the service: %s", what, msg)
		}
		if first == "" {
			first = msg
		} else if msg != first {
			t.Errorf("%s: message %q differs from %q", what, msg, first)
		}
	}
}
