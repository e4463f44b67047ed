package agentcrypto

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// AssertionLifetime is how long a client assertion is valid, as Microsoft's
// agent makes them.
const AssertionLifetime = 5 * time.Minute

// AssertionLeeway is the clock skew tolerated when checking an assertion;
// some clients back-date nbf by 30 s.
const AssertionLeeway = 2 * time.Minute

// NewClientAssertion makes the RFC 7523 JWT an agent trades for a listener
// token: RS256, iss = sub = clientID, aud = the token endpoint.
func NewClientAssertion(key *rsa.PrivateKey, clientID, audience string, now time.Time) (string, error) {
	claims := jwt.RegisteredClaims{
		Issuer:    clientID,
		Subject:   clientID,
		Audience:  jwt.ClaimStrings{audience},
		ID:        uuid.NewString(),
		NotBefore: jwt.NewNumericDate(now),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(AssertionLifetime)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("signing client assertion: %w", err)
	}
	return s, nil
}

// KeyLookup finds the public key registered for a client id.
type KeyLookup func(clientID string) (*rsa.PublicKey, error)

// Assertion is what a verified client assertion says.
type Assertion struct {
	ClientID string
	ID       string // jti, for replay protection
	Expires  time.Time
}

// VerifyClientAssertion checks an assertion's signature against the key
// registered for its issuer, that iss = sub, that aud names this endpoint, and
// its time window.
func VerifyClientAssertion(assertion string, lookup KeyLookup, audience string, now time.Time) (Assertion, error) {
	var claims jwt.RegisteredClaims
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(AssertionLeeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	_, err := parser.ParseWithClaims(assertion, &claims, func(t *jwt.Token) (any, error) {
		c := t.Claims.(*jwt.RegisteredClaims)
		if c.Issuer == "" || c.Issuer != c.Subject {
			return nil, errors.New("iss and sub must both name the client id")
		}
		return lookup(c.Issuer)
	})
	if err != nil {
		return Assertion{}, fmt.Errorf("client assertion rejected: %w", err)
	}
	if claims.ExpiresAt.Sub(now) > AssertionLifetime+AssertionLeeway {
		return Assertion{}, errors.New("client assertion rejected: lifetime longer than 5 minutes")
	}
	return Assertion{ClientID: claims.Issuer, ID: claims.ID, Expires: claims.ExpiresAt.Time}, nil
}
