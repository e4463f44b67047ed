package agentcrypto

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // SHA-1 OAEP is what Microsoft's agent expects for non-FIPS sessions.
	"crypto/sha256"
	"errors"
	"hash"
)

// SessionKeySize is the AES-256 session key length in bytes.
const SessionKeySize = 32

// NewSessionKey makes a fresh random AES-256 key.
func NewSessionKey() ([]byte, error) {
	k := make([]byte, SessionKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return k, nil
}

func oaepHash(fips bool) hash.Hash {
	if fips {
		return sha256.New()
	}
	return sha1.New() //nolint:gosec // see import.
}

// WrapKey encrypts a session key to an agent's public key with RSA-OAEP:
// SHA-256 when the session asked for FIPS encryption, SHA-1 otherwise.
func WrapKey(pub *rsa.PublicKey, key []byte, fips bool) ([]byte, error) {
	return rsa.EncryptOAEP(oaepHash(fips), rand.Reader, pub, key, nil)
}

// ErrUnwrap is returned for any session key that cannot be unwrapped.
var ErrUnwrap = errors.New("cannot decrypt the session key with this agent's private key")

// UnwrapKey decrypts a wrapped session key and checks it is an AES-256 key.
func UnwrapKey(priv *rsa.PrivateKey, wrapped []byte, fips bool) ([]byte, error) {
	key, err := rsa.DecryptOAEP(oaepHash(fips), nil, priv, wrapped, nil)
	if err != nil {
		return nil, ErrUnwrap
	}
	if len(key) != SessionKeySize {
		return nil, errors.New("session key is not 32 bytes")
	}
	return key, nil
}
