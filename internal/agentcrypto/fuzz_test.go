package agentcrypto

import (
	"bytes"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// FuzzDecrypt feeds arbitrary IVs and bodies to the message decryptor: it
// must return an error or a plaintext, never panic, and anything it accepts
// must re-encrypt and decrypt to the same bytes.
func FuzzDecrypt(f *testing.F) {
	key := bytes.Repeat([]byte{7}, SessionKeySize)
	iv, ct, _ := Encrypt(key, []byte(`{"jobId":"x"}`))
	f.Add(iv, ct)
	f.Add(iv, ct[:15])
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, iv, body []byte) {
		plain, err := Decrypt(key, iv, body)
		if err != nil {
			return
		}
		iv2, ct2, err := Encrypt(key, plain)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decrypt(key, iv2, ct2)
		if err != nil || !bytes.Equal(again, plain) {
			t.Fatalf("re-encryption round trip failed: %v", err)
		}
	})
}

// FuzzUnwrapKey feeds arbitrary wrapped keys to the unwrapper.
func FuzzUnwrapKey(f *testing.F) {
	k, _ := keys(f)
	w, _ := WrapKey(&k.PublicKey, bytes.Repeat([]byte{1}, SessionKeySize), false)
	f.Add(w, false)
	f.Add(w[:100], true)
	f.Fuzz(func(t *testing.T, wrapped []byte, fips bool) {
		key, err := UnwrapKey(k, wrapped, fips)
		if err == nil && len(key) != SessionKeySize {
			t.Fatalf("unwrapped a %d-byte key without error", len(key))
		}
	})
}

// FuzzRSAParameters feeds arbitrary .credentials_rsaparams content to the key
// decoder.
func FuzzRSAParameters(f *testing.F) {
	k, _ := keys(f)
	good, _ := json.Marshal(ParametersOf(k))
	f.Add(good)
	f.Add([]byte(`{"modulus":"AQAB","exponent":"AQAB"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p RSAParameters
		if json.Unmarshal(b, &p) != nil {
			return
		}
		key, err := p.PrivateKey()
		if err == nil && key.Validate() != nil {
			t.Fatal("accepted an invalid key")
		}
	})
}

// FuzzVerifyClientAssertion feeds arbitrary strings to the assertion checker.
func FuzzVerifyClientAssertion(f *testing.F) {
	k, _ := keys(f)
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	const aud = "http://127.0.0.1/_apis/oauth2/token"
	good, _ := NewClientAssertion(k, "c", aud, now)
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJjIn0.")
	lookup := func(id string) (*rsa.PublicKey, error) {
		if id == "c" {
			return &k.PublicKey, nil
		}
		return nil, errors.New("unknown")
	}
	f.Fuzz(func(t *testing.T, token string) {
		a, err := VerifyClientAssertion(token, lookup, aud, now)
		if err == nil && a.ClientID != "c" {
			t.Fatalf("accepted an assertion for %q", a.ClientID)
		}
	})
}
