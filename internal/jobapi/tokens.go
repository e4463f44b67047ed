package jobapi

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// TokensPath is the admin token API: POST creates, GET lists, DELETE
// TokensPath/{id or name} revokes. Any admin credential may call it.
const TokensPath = "/_apis/agentry/tokens"

// AdminTokenPrefix starts every admin token agentry-server makes, so a
// leaked one is easy to recognise (and to scan for).
const AdminTokenPrefix = "agt_"

// CreateTokenRequest asks for a new admin token.
type CreateTokenRequest struct {
	Name string `json:"name"`
	// ExpiresOn is when the token stops working; nil: never.
	ExpiresOn *time.Time `json:"expiresOn,omitempty"`
}

// AdminToken describes an admin token. Token, the secret itself, is set
// only in the answer that created it: the server keeps just its hash.
type AdminToken struct {
	ID        int64      `json:"id"`
	Name      string     `json:"name"`
	Token     string     `json:"token,omitempty"`
	CreatedOn time.Time  `json:"createdOn"`
	ExpiresOn *time.Time `json:"expiresOn,omitempty"`
	RevokedOn *time.Time `json:"revokedOn,omitempty"`
	// State is active, expired or revoked.
	State string `json:"state"`
}

// Admin token states.
const (
	TokenActive  = "active"
	TokenExpired = "expired"
	TokenRevoked = "revoked"
)

// CreateToken makes a new admin token; the answer carries the token, once.
func (c Client) CreateToken(ctx context.Context, req CreateTokenRequest) (*AdminToken, error) {
	var t AdminToken
	_, err := c.Do(ctx, http.MethodPost, TokensPath, nil, req, &t)
	return &t, err
}

// ListTokens lists every admin token, revoked and expired ones included.
func (c Client) ListTokens(ctx context.Context) ([]AdminToken, error) {
	var l pipelines.List[AdminToken]
	_, err := c.Do(ctx, http.MethodGet, TokensPath, nil, nil, &l)
	return l.Value, err
}

// RevokeToken revokes the admin token with that id or, if idOrName is not a
// number, the live token of that name.
func (c Client) RevokeToken(ctx context.Context, idOrName string) (*AdminToken, error) {
	var t AdminToken
	_, err := c.Do(ctx, http.MethodDelete, TokensPath+"/"+url.PathEscape(idOrName), nil, nil, &t)
	return &t, err
}
