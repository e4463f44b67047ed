package server

import (
	"crypto/rand"
	"errors"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// The admin token API (jobapi.TokensPath): named, revocable admin
// credentials beside the bootstrap token of Config.AdminToken. The server
// stores only each token's SHA-256 hash.

const tokensRoute = jobapi.TokensPath

const typeKeyTokenNotFound = "AgentryAdminTokenNotFoundException"

// maxTokenName bounds a token's name.
const maxTokenName = 100

// newAdminToken makes an admin token: the prefix and 256 random bits in
// base62 (43 characters), so it selects with a double click and needs no
// escaping anywhere.
func newAdminToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	s := new(big.Int).SetBytes(b).Text(62)
	return jobapi.AdminTokenPrefix + strings.Repeat("0", 43-len(s)) + s, nil
}

func toAdminToken(t store.AdminToken, now time.Time) jobapi.AdminToken {
	out := jobapi.AdminToken{ID: t.ID, Name: t.Name, CreatedOn: t.CreatedOn.UTC(), State: jobapi.TokenActive}
	if !t.ExpiresAt.IsZero() {
		e := t.ExpiresAt.UTC()
		out.ExpiresOn = &e
		if !now.Before(e) {
			out.State = jobapi.TokenExpired
		}
	}
	if t.Revoked() {
		r := t.RevokedAt.UTC()
		out.RevokedOn, out.State = &r, jobapi.TokenRevoked
	}
	return out
}

func checkTokenName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return badRequest("a token needs a name")
	case len(name) > maxTokenName:
		return badRequest("the token name is longer than %d bytes", maxTokenName)
	case strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return badRequest("the token name has characters that are not printable")
	}
	if _, err := strconv.ParseInt(name, 10, 64); err == nil {
		return badRequest("the token name %q is a number: names must not look like token ids", name)
	}
	return nil
}

func (s *Server) createAdminToken(w http.ResponseWriter, r *http.Request) error {
	b, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	var req jobapi.CreateTokenRequest
	if err := decodeJSON(b, &req); err != nil {
		return err
	}
	if err := checkTokenName(req.Name); err != nil {
		return err
	}
	now := s.now()
	t := store.AdminToken{Name: req.Name, CreatedOn: now}
	if req.ExpiresOn != nil {
		if !req.ExpiresOn.After(now) {
			return badRequest("expiresOn %s is not in the future", req.ExpiresOn.UTC().Format(time.RFC3339))
		}
		t.ExpiresAt = req.ExpiresOn.UTC()
	}
	token, err := newAdminToken()
	if err != nil {
		return err
	}
	t.Hash = hashToken(token)
	t, err = s.store.CreateAdminToken(r.Context(), t)
	if errors.Is(err, store.ErrExists) {
		return errorf(http.StatusConflict, "AgentryAdminTokenExistsException", "a live admin token is already named %q; revoke it or choose another name", req.Name)
	} else if err != nil {
		return storeError(err, typeKeyTokenNotFound, "admin token "+strconv.Quote(req.Name))
	}
	s.log.Info("Created an admin token", "tokenId", t.ID, "name", t.Name, "expiresAt", t.ExpiresAt)
	out := toAdminToken(t, now)
	out.Token = token
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) listAdminTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.store.ListAdminTokens(r.Context())
	if err != nil {
		return err
	}
	now := s.now()
	out := make([]jobapi.AdminToken, 0, len(ts))
	for _, t := range ts {
		out = append(out, toAdminToken(t, now))
	}
	writeJSON(w, http.StatusOK, pipelines.NewList(out))
	return nil
}

// revokeAdminToken revokes a token by id or, for a reference that is not a
// number, the live token of that name.
func (s *Server) revokeAdminToken(w http.ResponseWriter, r *http.Request) error {
	ref := r.PathValue("ref")
	id, err := strconv.ParseInt(ref, 10, 64)
	if err != nil {
		ts, err := s.store.ListAdminTokens(r.Context())
		if err != nil {
			return err
		}
		for _, t := range ts {
			if !t.Revoked() && strings.EqualFold(t.Name, ref) {
				id = t.ID
			}
		}
	}
	t, err := s.store.RevokeAdminToken(r.Context(), id, s.now())
	if err != nil {
		return storeError(err, typeKeyTokenNotFound, "admin token "+strconv.Quote(truncate(ref, 64)))
	}
	s.log.Info("Revoked an admin token", "tokenId", t.ID, "name", t.Name)
	writeJSON(w, http.StatusOK, toAdminToken(t, s.now()))
	return nil
}
