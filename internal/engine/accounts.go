package engine

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
)

// DefaultAccount is the account local tools use.
const DefaultAccount = "default"

// Authenticate maps a bearer token secret to its token record (and account).
func (e *Engine) Authenticate(ctx context.Context, secret string) (Token, error) {
	secret = strings.TrimSpace(secret)
	if secret == "" {
		return Token{}, errdefs.Unauthorized("missing bearer token: send Authorization: Bearer <token> (the local token is in the daemon's token file)")
	}
	t, err := e.st.TokenBySecret(ctx, secret)
	return toToken(t), err
}

// CreateToken makes a new token for account (creating the account if needed)
// and returns its record and secret. The secret is shown once. It is for the
// daemon's own tokens; a token made through the API comes from DeriveToken.
func (e *Engine) CreateToken(ctx context.Context, account, name string, ttl time.Duration) (Token, string, error) {
	return e.mintToken(ctx, Token{}, account, name, ttl)
}

// DeriveToken makes a token for account on behalf of parent, the token of
// the request. The new token never outlives or outranks its parent: its
// expiry is at most the parent's (a parent that expires cannot make a token
// that never does), only a token of the default account may make tokens of
// other accounts, and revoking the parent revokes it.
func (e *Engine) DeriveToken(ctx context.Context, parent Token, account, name string, ttl time.Duration) (Token, string, error) {
	if parent.UUID == "" {
		return Token{}, "", errdefs.Unauthorized("a derived token needs the token that makes it")
	}
	if account != parent.Account && parent.Account != DefaultAccount {
		return Token{}, "", errdefs.Forbidden("only tokens of the %q account may make tokens of other accounts", DefaultAccount)
	}
	return e.mintToken(ctx, parent, account, name, ttl)
}

func (e *Engine) mintToken(ctx context.Context, parent Token, account, name string, ttl time.Duration) (Token, string, error) {
	if account == "" || len(account) > 64 || strings.ContainsAny(account, " /\x00") {
		return Token{}, "", errdefs.InvalidArgument("account name %q is invalid: use 1-64 characters without spaces or slashes", account)
	}
	if _, err := e.st.EnsureAccount(ctx, account, account); err != nil {
		return Token{}, "", err
	}
	var b [24]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand crashes the program instead (Go 1.24+)
	secret := "arb_" + base64.RawURLEncoding.EncodeToString(b[:])
	// To the microsecond, as PostgreSQL keeps it: the creation answer and a
	// later listing agree.
	t := store.Token{UUID: newID(), Account: account, Name: name, CreatedAt: time.Now().Truncate(time.Microsecond), Parent: parent.UUID}
	if ttl > 0 {
		t.ExpiresAt = t.CreatedAt.Add(ttl)
	}
	if p := parent.ExpiresAt; !p.IsZero() && (t.ExpiresAt.IsZero() || t.ExpiresAt.After(p)) {
		t.ExpiresAt = p
	}
	if err := e.st.CreateToken(ctx, t, secret); err != nil {
		return Token{}, "", err
	}
	return toToken(t), secret, nil
}

// AddToken registers a caller-chosen secret as a token of account.
func (e *Engine) AddToken(ctx context.Context, account, name, secret string) error {
	if len(secret) < 16 {
		return errdefs.InvalidArgument("token must be at least 16 characters")
	}
	if _, err := e.st.EnsureAccount(ctx, account, account); err != nil {
		return err
	}
	return e.st.CreateToken(ctx, store.Token{UUID: newID(), Account: account, Name: name}, secret)
}

// ListTokens lists account's tokens.
func (e *Engine) ListTokens(ctx context.Context, account string) ([]Token, error) {
	rs, err := e.st.ListTokens(ctx, account)
	out := make([]Token, 0, len(rs))
	for _, r := range rs {
		out = append(out, toToken(r))
	}
	return out, err
}

// RevokeToken revokes one of account's tokens.
func (e *Engine) RevokeToken(ctx context.Context, account, id string) error {
	return e.st.RevokeToken(ctx, account, id)
}

// Usage is an account's consumption, for whoami.
type Usage struct {
	OperationsByStatus map[string]int64
	CPUSeconds         float64
	StoredBytes        int64
}

// Usage reports account's consumption.
func (e *Engine) Usage(ctx context.Context, account string) (Usage, error) {
	by, cpu, err := e.st.OperationStats(ctx, account)
	if err != nil {
		return Usage{}, err
	}
	b, err := e.storedBytes(ctx, account)
	return Usage{OperationsByStatus: by, CPUSeconds: cpu, StoredBytes: b}, err
}
