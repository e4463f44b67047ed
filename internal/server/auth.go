package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// newToken makes an opaque bearer token: 256 random bits, base64url.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// hashToken is how a token is stored and looked up: a stolen copy of the
// store holds no usable token.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// parseAuthorization splits an Authorization header into its credential:
// the password of HTTP Basic (the user is ignored, as Azure does for a PAT)
// or a Bearer token. ok is false when there is no usable credential.
func parseAuthorization(header string) (scheme, credential string, ok bool) {
	scheme, rest, found := strings.Cut(strings.TrimSpace(header), " ")
	if !found {
		return "", "", false
	}
	rest = strings.TrimSpace(rest)
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		return "Bearer", rest, rest != ""
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return "", "", false
		}
		_, pass, found := strings.Cut(string(raw), ":")
		if !found || pass == "" {
			return "", "", false
		}
		return "Basic", pass, true
	}
	return "", "", false
}

// checkAdmin reports whether the request carries an admin credential: the
// bootstrap token (Config.AdminToken) or a stored admin token that is
// neither revoked nor expired. Only SHA-256 hashes are compared, in
// constant time, so the comparison says nothing about the token's bytes.
func (s *Server) checkAdmin(r *http.Request) bool {
	_, cred, ok := parseAuthorization(r.Header.Get("Authorization"))
	if !ok {
		return false
	}
	got := sha256.Sum256([]byte(cred))
	if subtle.ConstantTimeCompare(got[:], s.adminTokenHash[:]) == 1 {
		return true
	}
	if !strings.HasPrefix(cred, jobapi.AdminTokenPrefix) {
		return false // not one of ours: no need to ask the store
	}
	hash := hex.EncodeToString(got[:])
	t, err := s.store.GetAdminTokenByHash(r.Context(), hash)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			// Refusing is the safe answer; the caller sees a 401.
			s.log.Error(err, "Failed to look up an admin token")
		}
		return false
	}
	return subtle.ConstantTimeCompare([]byte(t.Hash), []byte(hash)) == 1 && t.Valid(s.now())
}

var errNoCredential = unauthorized(pipelines.TypeKeyUnauthorized, "this call needs a credential: the Authorization header is missing or malformed")

// bearer returns the request's bearer token, or a 401.
func bearer(r *http.Request) (string, error) {
	scheme, cred, ok := parseAuthorization(r.Header.Get("Authorization"))
	if !ok || scheme != "Bearer" {
		return "", errNoCredential
	}
	return cred, nil
}

// listenerAgent authenticates a listener call: a live listener token of an
// agent that still exists.
func (s *Server) listenerAgent(ctx context.Context, r *http.Request) (store.Agent, error) {
	tok, err := bearer(r)
	if err != nil {
		return store.Agent{}, err
	}
	expired := unauthorized(pipelines.TypeKeyAccessTokenExpired, "the listener token is unknown, expired or revoked; get a new one at the token endpoint")
	lt, err := s.store.GetListenerToken(ctx, hashToken(tok))
	if errors.Is(err, store.ErrNotFound) {
		return store.Agent{}, expired
	} else if err != nil {
		return store.Agent{}, err
	}
	if !s.now().Before(lt.ExpiresAt) {
		return store.Agent{}, expired
	}
	a, err := s.store.GetAgent(ctx, lt.AgentID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Agent{}, expired
	}
	return a, err
}

// tokenJob authenticates a reporting call: the job token of an unfinished job.
func (s *Server) tokenJob(ctx context.Context, r *http.Request) (store.Job, error) {
	tok, err := bearer(r)
	if err != nil {
		return store.Job{}, err
	}
	j, err := s.store.GetJobByTokenHash(ctx, hashToken(tok))
	if errors.Is(err, store.ErrNotFound) {
		return store.Job{}, unauthorized(pipelines.TypeKeyUnauthorized, "the job token is not valid")
	} else if err != nil {
		return store.Job{}, err
	}
	if j.Finished() {
		return store.Job{}, unauthorized(pipelines.TypeKeyJobTokenExpired, "the job token expired: job request %d has finished", j.RequestID)
	}
	return j, nil
}
