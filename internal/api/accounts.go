package api

import (
	_ "embed"
	"errors"
	"math"
	"net/http"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
)

// permissions are the ConTree permission keys; every token holds them all
// (clients warn or refuse when "list" is missing or false).
var permissions = []string{"list", "spawn", "spawn_disposable", "import", "cancel", "set_image_tag"}

// whoami answers GET /v1/whoami: the token, its permissions, the server's
// limits, and the account's usage in operations_stat (operation counts by
// status, cpu_seconds and stored_bytes, all integers).
func (s *server) whoami(w http.ResponseWriter, r *http.Request) error {
	tok := tokenOf(r)
	u, err := s.e.Usage(r.Context(), tok.Account)
	if err != nil {
		return err
	}
	stat := make(map[string]int64, len(allStatuses)+2)
	for _, st := range allStatuses {
		stat[st] = 0
	}
	for st, n := range u.OperationsByStatus {
		stat[st] = n
	}
	stat["cpu_seconds"] = int64(math.Round(u.CPUSeconds))
	stat["stored_bytes"] = u.StoredBytes
	perms := make(map[string]bool, len(permissions))
	for _, p := range permissions {
		perms[p] = true
	}
	out := apitypes.WhoAmIResponse{TokenUUID: tok.UUID, Permissions: perms, Limits: s.e.Limits(), OperationsStat: stat, Account: tok.Account}
	if !tok.ExpiresAt.IsZero() {
		exp := tok.ExpiresAt.Unix()
		out.TokenExpiration = &exp
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// status answers GET /v1/status (arbor extension): the runtimes and the
// warm pool's state, so an operator sees at once when a dynamically linked
// build has left the pool off.
func (s *server) status(w http.ResponseWriter, r *http.Request) error {
	ws := s.e.WarmStatus()
	writeJSON(w, http.StatusOK, apitypes.StatusResponse{
		DefaultRuntime: s.e.DefaultRuntime(), Runtimes: s.e.Runtimes(),
		WarmPool: apitypes.WarmPoolStatus{Enabled: ws.Enabled, Reason: ws.Reason, PerImage: ws.PerImage, Max: ws.Max,
			Idle: ws.Idle, Booting: ws.Booting, Wanted: ws.Wanted, Active: ws.Active, Hits: ws.Hits, Misses: ws.Misses},
	})
	return nil
}

func tokenView(t engine.Token) apitypes.Token {
	v := apitypes.Token{UUID: t.UUID, Account: t.Account, Name: t.Name, CreatedAt: apitypes.Timestamp(t.CreatedAt)}
	if !t.ExpiresAt.IsZero() {
		e := apitypes.Timestamp(t.ExpiresAt)
		v.ExpiresAt = &e
	}
	if !t.RevokedAt.IsZero() {
		rv := apitypes.Timestamp(t.RevokedAt)
		v.RevokedAt = &rv
	}
	if t.Parent != "" {
		p := t.Parent
		v.ParentUUID = &p
	}
	return v
}

// targetAccount returns the account a token request acts on: the caller's
// own, or (for tokens of the default account only) the one named.
func targetAccount(r *http.Request, named string) (string, error) {
	own := accountOf(r)
	if named == "" || named == own {
		return own, nil
	}
	if own != engine.DefaultAccount {
		return "", errdefs.Forbidden("only tokens of the %q account may manage tokens of other accounts", engine.DefaultAccount)
	}
	return named, nil
}

// createToken answers POST /v1/tokens (arbor extension) with 201 and the
// secret, which is shown only here. An empty body creates a token for the
// caller's own account. The new token expires no later than the caller's
// and is revoked with it.
func (s *server) createToken(w http.ResponseWriter, r *http.Request) error {
	var b apitypes.TokenCreateRequest
	if err := s.decode(w, r, &b); err != nil && !errors.Is(err, errEmptyBody) {
		return err
	}
	var named, name string
	if b.Account != nil {
		named = *b.Account
	}
	if b.Name != nil {
		name = *b.Name
	}
	account, err := targetAccount(r, named)
	if err != nil {
		return err
	}
	var ttl time.Duration
	if b.TTLSeconds != nil {
		if *b.TTLSeconds < 0 {
			return errdefs.InvalidArgument("ttl_seconds must be >= 0 (0 or absent: never expires)")
		}
		ttl = time.Duration(*b.TTLSeconds) * time.Second
	}
	t, secret, err := s.e.DeriveToken(r.Context(), tokenOf(r), account, name, ttl)
	if err != nil {
		return err
	}
	if t.CreatedAt.IsZero() {
		// CreateToken does not report the creation time the store assigned.
		if all, err := s.e.ListTokens(r.Context(), account); err == nil {
			for _, x := range all {
				if x.UUID == t.UUID {
					t = x
				}
			}
		}
	}
	writeJSON(w, http.StatusCreated, apitypes.TokenCreateResponse{Token: tokenView(t), Secret: secret})
	return nil
}

// listTokens answers GET /v1/tokens[?account=] (arbor extension).
func (s *server) listTokens(w http.ResponseWriter, r *http.Request) error {
	account, err := targetAccount(r, r.URL.Query().Get("account"))
	if err != nil {
		return err
	}
	ts, err := s.e.ListTokens(r.Context(), account)
	if err != nil {
		return err
	}
	out := apitypes.TokenListResponse{Tokens: make([]apitypes.Token, 0, len(ts))}
	for _, t := range ts {
		out.Tokens = append(out.Tokens, tokenView(t))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// revokeToken answers DELETE /v1/tokens/{uuid}[?account=] (arbor extension) with 204.
func (s *server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("token", r.PathValue("uuid"))
	if err != nil {
		return err
	}
	account, err := targetAccount(r, r.URL.Query().Get("account"))
	if err != nil {
		return err
	}
	if err := s.e.RevokeToken(r.Context(), account, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

//go:embed openapi.json
var openAPIDoc []byte

// openAPI answers GET /v1/openapi.json with the API description, no token needed.
func (s *server) openAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPIDoc)
	return nil
}
