package bearer

import (
	"net/http/httptest"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		header, token string
		ok            bool
	}{
		// Accepted.
		{"Bearer arb_abc-_123", "arb_abc-_123", true},
		{"bearer arb_x", "arb_x", true}, // the scheme is case-insensitive
		{"BEARER arb_x", "arb_x", true},
		{"  Bearer arb_x  ", "arb_x", true}, // blanks around the value
		{"Bearer   arb_x", "arb_x", true},   // several blanks after the scheme
		{"Bearer\tarb_x", "arb_x", true},
		{"Bearer a.b~c+d/e==", "a.b~c+d/e==", true}, // every token68 character
		// Refused.
		{"", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Bearer \t ", "", false},
		{"arb_x", "", false},          // no scheme
		{"Bearerarb_x", "", false},    // no separator
		{"Basic dTpwYXNz", "", false}, // another scheme
		{"Token arb_x", "", false},    // another scheme
		{"Bearer arb_x y", "", false}, // blank inside the token
		{"Bearer: arb_x", "", false},  // not the scheme
		{"XBearer arb_x", "", false},  // not the scheme
	} {
		tok, ok := Parse(c.header)
		if tok != c.token || ok != c.ok {
			t.Errorf("Parse(%q) = %q, %v; want %q, %v", c.header, tok, ok, c.token, c.ok)
		}
	}
}

func TestFromRequest(t *testing.T) {
	r := httptest.NewRequest("GET", "/v1/images", nil)
	if _, ok := FromRequest(r); ok {
		t.Fatal("a request without Authorization has a token")
	}
	r.Header.Set("Authorization", "Bearer arb_x")
	if tok, ok := FromRequest(r); !ok || tok != "arb_x" {
		t.Fatalf("FromRequest = %q, %v; want arb_x, true", tok, ok)
	}
}
