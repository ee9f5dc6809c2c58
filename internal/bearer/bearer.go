// Package bearer reads the API token a request carries. It is the one
// parser behind every surface of the daemon (/v1, /v2/ and /mcp), so a
// header one accepts the others accept too.
package bearer

import (
	"net/http"
	"strings"
)

// Parse returns the token of an Authorization header value of the form
// "Bearer <token>" (RFC 6750 §2.1). The scheme matches in any case (RFC
// 9110 §11.1) and spaces or tabs may surround the scheme and the token. ok
// is false for another scheme, a missing token, or a token with blanks
// inside (a token68 has none), so a caller can answer 401 without a
// store lookup.
func Parse(header string) (token string, ok bool) {
	h := strings.Trim(header, " \t")
	i := strings.IndexAny(h, " \t")
	if i < 0 || !strings.EqualFold(h[:i], "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(h[i:], " \t")
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	return token, true
}

// FromRequest returns the bearer token of r's Authorization header (see
// [Parse]).
func FromRequest(r *http.Request) (string, bool) {
	return Parse(r.Header.Get("Authorization"))
}
