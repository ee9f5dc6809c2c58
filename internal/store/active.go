package store

import (
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
)

// ActiveToken is the rule of [Tokens.TokenBySecret] shared by the
// implementations: found holds the tokens stored under the secret (none or
// one); the token is returned, with an Unauthorized error if it is
// unknown, revoked or expired at now.
func ActiveToken(found []Token, now time.Time) (Token, error) {
	if len(found) == 0 {
		return Token{}, errdefs.Unauthorized("unknown token: pass a valid token (arbor token create, or the daemon's token file)")
	}
	t := found[0]
	if !t.RevokedAt.IsZero() {
		return t, errdefs.Unauthorized("token %s was revoked", t.UUID)
	}
	if !t.ExpiresAt.IsZero() && now.After(t.ExpiresAt) {
		return t, errdefs.Unauthorized("token %s expired at %s", t.UUID, t.ExpiresAt.Format(time.RFC3339))
	}
	return t, nil
}
