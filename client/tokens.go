package client

import (
	"context"
	"io"
	"net/http"
	"net/url"

	"github.com/arborsh/arbor/client/apitypes"
)

// CreateToken creates a token (arbor extension). Without req.Account it is
// for the caller's own account; only tokens of the "default" account may
// name another. The secret is in the answer's Secret and nowhere else.
func (c *Client) CreateToken(ctx context.Context, req apitypes.TokenCreateRequest) (*apitypes.TokenCreateResponse, error) {
	var out apitypes.TokenCreateResponse
	return &out, c.do(ctx, request{method: http.MethodPost, path: "/tokens", json: req}, &out)
}

func accountQuery(account string) url.Values {
	if account == "" {
		return nil
	}
	return url.Values{"account": {account}}
}

// ListTokens lists the tokens of account ("" for the caller's own).
func (c *Client) ListTokens(ctx context.Context, account string) ([]apitypes.Token, error) {
	var out apitypes.TokenListResponse
	if err := c.do(ctx, request{method: http.MethodGet, path: "/tokens", query: accountQuery(account)}, &out); err != nil {
		return nil, err
	}
	return out.Tokens, nil
}

// RevokeToken revokes token id of account ("" for the caller's own).
func (c *Client) RevokeToken(ctx context.Context, id, account string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: "/tokens/" + url.PathEscape(id), query: accountQuery(account)}, nil)
}

// OpenAPI returns the server's OpenAPI 3 document (JSON).
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/openapi.json"})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}
