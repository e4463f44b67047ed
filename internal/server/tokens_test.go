package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server"
	"github.com/agentry-dev/agentry/internal/server/servertest"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// TestAdminTokens walks an admin token's life: created by the bootstrap
// token, used as Bearer and as a PAT, listed without its secret, refused
// once revoked or expired, and stored only as a hash.
func TestAdminTokens(t *testing.T) {
	ctx := context.Background()
	var now atomic.Pointer[time.Time]
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now.Store(&start)
	st := store.NewMemory()
	inst := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		c.Store = st
		c.Now = func() time.Time { return *now.Load() }
	}))
	admin := jobapi.Client{Client: inst.Admin}
	as := func(tok string, bearer bool) jobapi.Client {
		var auth pipelines.Authorizer = pipelines.PersonalAccessToken(tok)
		if bearer {
			auth = pipelines.BearerToken(tok)
		}
		return jobapi.Client{Client: pipelines.NewClient(inst.URL, auth, nil)}
	}
	canAdmin := func(c jobapi.Client) int {
		t.Helper()
		_, err := c.ListJobs(ctx, "", "")
		if err != nil && pipelines.StatusCode(err) == 0 {
			t.Fatal(err)
		}
		if err == nil {
			return http.StatusOK
		}
		return pipelines.StatusCode(err)
	}

	expires := start.Add(time.Hour)
	ci, err := admin.CreateToken(ctx, jobapi.CreateTokenRequest{Name: "ci", ExpiresOn: &expires})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ci.Token, jobapi.AdminTokenPrefix) || len(ci.Token) != len(jobapi.AdminTokenPrefix)+43 {
		t.Fatalf("token %q: want %s and 43 base62 characters", ci.Token, jobapi.AdminTokenPrefix)
	}
	ops, err := admin.CreateToken(ctx, jobapi.CreateTokenRequest{Name: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if ops.Token == ci.Token {
		t.Fatal("two tokens are the same")
	}
	for _, bearer := range []bool{true, false} {
		if got := canAdmin(as(ci.Token, bearer)); got != http.StatusOK {
			t.Errorf("the new token (bearer %v) got %d, want 200", bearer, got)
		}
	}
	// A token made with an admin token can make more.
	if _, err := as(ops.Token, true).CreateToken(ctx, jobapi.CreateTokenRequest{Name: "made-by-ops"}); err != nil {
		t.Errorf("creating a token with a created token: %v", err)
	}

	if _, err := admin.CreateToken(ctx, jobapi.CreateTokenRequest{Name: "CI"}); pipelines.StatusCode(err) != http.StatusConflict {
		t.Errorf("a second live token named CI: got %v, want 409", err)
	}
	for _, bad := range []string{"", "  ", "123", strings.Repeat("x", 101), "tab\there"} {
		if _, err := admin.CreateToken(ctx, jobapi.CreateTokenRequest{Name: bad}); pipelines.StatusCode(err) != http.StatusBadRequest {
			t.Errorf("token name %q: got %v, want 400", bad, err)
		}
	}
	past := start.Add(-time.Second)
	if _, err := admin.CreateToken(ctx, jobapi.CreateTokenRequest{Name: "old", ExpiresOn: &past}); pipelines.StatusCode(err) != http.StatusBadRequest {
		t.Errorf("a token expiring in the past: got %v, want 400", err)
	}

	// The store has hashes only.
	stored, err := st.ListAdminTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(ci.Token))
	if len(stored) != 3 || stored[0].Hash != hex.EncodeToString(sum[:]) {
		t.Errorf("stored tokens %+v, want three, the first with the SHA-256 of the ci token", stored)
	}
	list, err := admin.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Name != "ci" || list[0].State != jobapi.TokenActive || list[0].ExpiresOn == nil {
		t.Errorf("token list %+v", list)
	}
	for _, l := range list {
		if l.Token != "" {
			t.Errorf("token list shows the secret of %q", l.Name)
		}
	}

	// Revoked by name: refused at once; the name is free again.
	if _, err := admin.RevokeToken(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	if got := canAdmin(as(ops.Token, true)); got != http.StatusUnauthorized {
		t.Errorf("a revoked token got %d, want 401", got)
	}
	if _, err := admin.CreateToken(ctx, jobapi.CreateTokenRequest{Name: "ops"}); err != nil {
		t.Errorf("reusing a revoked token's name: %v", err)
	}
	if _, err := admin.RevokeToken(ctx, "nope"); pipelines.StatusCode(err) != http.StatusNotFound {
		t.Errorf("revoking a missing token: got %v, want 404", err)
	}

	// Expired: refused once the clock passes expiresOn.
	later := expires.Add(time.Second)
	now.Store(&later)
	if got := canAdmin(as(ci.Token, true)); got != http.StatusUnauthorized {
		t.Errorf("an expired token got %d, want 401", got)
	}
	list, err = admin.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if list[0].State != jobapi.TokenExpired || list[1].State != jobapi.TokenRevoked {
		t.Errorf("states after expiry and revocation: %q, %q", list[0].State, list[1].State)
	}

	// Guessing: a well-formed token that was never made, and the bootstrap
	// token with a byte changed.
	if got := canAdmin(as(jobapi.AdminTokenPrefix+strings.Repeat("A", 43), true)); got != http.StatusUnauthorized {
		t.Errorf("an unknown token got %d, want 401", got)
	}
	if got := canAdmin(as(inst.AdminToken+"x", true)); got != http.StatusUnauthorized {
		t.Errorf("a wrong bootstrap token got %d, want 401", got)
	}
	// Token administration needs an admin credential.
	if _, err := as("", true).ListTokens(ctx); pipelines.StatusCode(err) != http.StatusUnauthorized {
		t.Errorf("listing tokens without a credential: got %v, want 401", err)
	}
}
