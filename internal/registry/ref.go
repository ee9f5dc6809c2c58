package registry

import (
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/arborsh/arbor/internal/errdefs"
)

// ParseReference parses an image reference as clients send it:
//
//	docker://HOST/PATH:TAG      the canonical form (contree-api.md §3.2.2)
//	oci://HOST/PATH:TAG         the same, as mcp spells it
//	HOST/PATH:TAG, PATH@sha256:…, python:3.12-slim
//
// A reference without a registry is on Docker Hub (docker.io, with the
// library/ prefix for single-component names) and one without a tag or
// digest means :latest. Registries on loopback addresses (127.0.0.0/8, ::1,
// localhost, *.localhost) are reached over plain HTTP, as Docker does; all
// others over HTTPS.
func ParseReference(s string) (name.Reference, error) {
	raw := strings.TrimSpace(s)
	s = raw
	for _, p := range []string{"docker://", "oci://"} {
		if len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) {
			s = s[len(p):]
			break
		}
	}
	if i := strings.Index(s, "://"); i >= 0 {
		return nil, errdefs.InvalidArgument("image reference %q has the unsupported scheme %q: use docker://HOST/PATH:TAG (or upload://<file uuid> for an uploaded archive)", raw, s[:i])
	}
	if s == "" {
		return nil, errdefs.InvalidArgument("empty image reference: use docker://HOST/PATH:TAG, e.g. docker://docker.io/library/busybox:latest")
	}
	ref, err := name.ParseReference(s)
	if err != nil {
		return nil, errdefs.InvalidArgument("%q is not a valid image reference (%v): use docker://HOST/PATH:TAG, e.g. docker://docker.io/library/python:3.12-slim", raw, err)
	}
	if isLoopbackRegistry(ref.Context().RegistryStr()) {
		if ref, err = name.ParseReference(s, name.Insecure); err != nil {
			return nil, errdefs.InvalidArgument("%q is not a valid image reference: %v", raw, err)
		}
	}
	return ref, nil
}

// isLoopbackRegistry reports whether a registry host[:port] is on a
// loopback address. Names are not resolved: only the literal forms count.
func isLoopbackRegistry(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return isLoopbackHost(strings.Trim(host, "[]"))
}

func isLoopbackHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsPolicy refuses plain-HTTP requests to hosts off the loopback
// interface. go-containerregistry itself also tries plain HTTP for private
// (RFC 1918) addresses; arbor does not, so a registry on the LAN cannot be
// impersonated to steer what becomes an image, and credentials and tokens
// never cross the network in the clear.
type tlsPolicy struct{ next http.RoundTripper }

func (t tlsPolicy) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" && !isLoopbackHost(r.URL.Hostname()) {
		return nil, errdefs.InvalidArgument("refusing plain HTTP to %s: only registries on loopback addresses are reached without TLS", r.URL.Host)
	}
	return t.next.RoundTrip(r)
}
