package server

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// issueListenerToken is the token endpoint (RFC 7523): it verifies the
// client assertion against the key registered for its issuer, with the
// agent's own authorizationUrl as the audience, and answers with an opaque
// listener token.
func (s *Server) issueListenerToken(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	b, err := readBody(w, r, maxTokenBody)
	if err != nil {
		return err
	}
	req, err := decodeTokenRequest(b)
	if err != nil {
		return err
	}
	ctx := r.Context()
	a, err := s.store.GetAgentByClientID(ctx, req.ClientID)
	if errors.Is(err, store.ErrNotFound) {
		return oauthError(http.StatusUnauthorized, "invalid_client", pipelines.TypeKeyAgentNotFound, "no agent is registered with this client id")
	} else if err != nil {
		return err
	}
	pub, err := a.PublicKey.RSA()
	if err != nil {
		return fmt.Errorf("agent %d has an unusable stored key: %w", a.ID, err)
	}
	lookup := func(clientID string) (*rsa.PublicKey, error) {
		if !strings.EqualFold(clientID, a.ClientID) {
			return nil, errors.New("unknown client id")
		}
		return pub, nil
	}
	now := s.now()
	as, err := agentcrypto.VerifyClientAssertion(req.Assertion, lookup, a.AuthorizationURL, now)
	if err != nil {
		s.log.Info("Refused a client assertion", "agentId", a.ID, "reason", err.Error())
		return oauthError(http.StatusUnauthorized, "invalid_client", pipelines.TypeKeyUnauthorized, "%v", err)
	}
	if as.ID != "" && !s.assertions.use(a.ClientID+"/"+as.ID, as.Expires, now) {
		return oauthError(http.StatusUnauthorized, "invalid_client", pipelines.TypeKeyUnauthorized, "client assertion rejected: it was already used")
	}
	tok, err := newToken()
	if err != nil {
		return err
	}
	lt := store.ListenerToken{Hash: hashToken(tok), AgentID: a.ID, ExpiresAt: now.Add(s.cfg.ListenerTokenLifetime)}
	if err := s.store.PutListenerToken(ctx, lt, now); err != nil {
		return storeError(err, pipelines.TypeKeyAgentNotFound, "agent")
	}
	s.log.Info("Issued a listener token", "agentId", a.ID, "expiresAt", lt.ExpiresAt)
	writeJSON(w, http.StatusOK, pipelines.AccessToken{
		AccessToken: tok, TokenType: "Bearer", ExpiresIn: int(s.cfg.ListenerTokenLifetime.Seconds()), Scope: "/",
	})
	return nil
}
