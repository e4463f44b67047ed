package agentcrypto

import (
	"bytes"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	keyOnce  sync.Once
	testKeys [2]*rsa.PrivateKey
)

// keys returns two fixed-for-the-run RSA keys; generating them once keeps
// the suite fast.
func keys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keyOnce.Do(func() {
		for i := range testKeys {
			k, err := GenerateKey()
			if err != nil {
				panic(err)
			}
			testKeys[i] = k
		}
	})
	return testKeys[0], testKeys[1]
}

func TestRSAParametersRoundTrip(t *testing.T) {
	k, _ := keys(t)
	p := ParametersOf(k)
	if got, want := len(p.D), len(p.Modulus); got != want {
		t.Errorf("len(D) = %d, want the modulus length %d (.NET ImportParameters requires it)", got, want)
	}
	for name, b := range map[string][]byte{"P": p.P, "Q": p.Q, "DP": p.DP, "DQ": p.DQ, "InverseQ": p.InverseQ} {
		if len(b) != len(p.Modulus)/2 {
			t.Errorf("len(%s) = %d, want half the modulus length %d", name, len(b), len(p.Modulus)/2)
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"d"`, `"dp"`, `"dq"`, `"exponent":"AQAB"`, `"inverseQ"`, `"modulus"`, `"p"`, `"q"`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("JSON %s lacks %s", b, field)
		}
	}
	var back RSAParameters
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	k2, err := back.PrivateKey()
	if err != nil {
		t.Fatalf("PrivateKey: %v", err)
	}
	if !k2.Equal(k) {
		t.Error("round-tripped key differs")
	}
}

func TestRSAParametersRejectsInconsistentKeys(t *testing.T) {
	k, other := keys(t)
	good := ParametersOf(k)
	mixed := good
	mixed.P = ParametersOf(other).P
	short := good
	short.Modulus = good.Modulus[:64]
	evenExp := good
	evenExp.Exponent = []byte{2}
	noD := good
	noD.D = nil
	for name, p := range map[string]RSAParameters{"mixed primes": mixed, "short modulus": short, "even exponent": evenExp, "no d": noD} {
		if _, err := p.PrivateKey(); err == nil {
			t.Errorf("%s: PrivateKey() succeeded, want an error", name)
		}
	}
}

// A key file's CRT values are used only when they agree with d, p and q:
// wrong or missing ones are derived again, and the key still signs and
// unwraps correctly.
func TestRSAParametersCRTValues(t *testing.T) {
	k, other := keys(t)
	good := ParametersOf(k)
	swapped := good
	swapped.DP, swapped.DQ = good.DQ, good.DP
	wrongInverse := good
	wrongInverse.InverseQ = ParametersOf(other).InverseQ
	missing := good
	missing.DP, missing.DQ, missing.InverseQ = nil, nil, nil
	for name, p := range map[string]RSAParameters{"as written": good, "dp and dq swapped": swapped, "another key's inverseQ": wrongInverse, "missing": missing} {
		got, err := p.PrivateKey()
		if err != nil {
			t.Errorf("%s: PrivateKey: %v", name, err)
			continue
		}
		if !got.Equal(k) || got.Precomputed.Dp.Cmp(k.Precomputed.Dp) != 0 || got.Precomputed.Dq.Cmp(k.Precomputed.Dq) != 0 ||
			got.Precomputed.Qinv.Cmp(k.Precomputed.Qinv) != 0 {
			t.Errorf("%s: the key or its CRT values differ from the original", name)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("%s: Validate: %v", name, err)
		}
		assertion, err := NewClientAssertion(got, "c", "aud", time.Now())
		if err != nil {
			t.Errorf("%s: signing: %v", name, err)
		} else if _, err := VerifyClientAssertion(assertion, func(string) (*rsa.PublicKey, error) { return &k.PublicKey, nil }, "aud", time.Now()); err != nil {
			t.Errorf("%s: the signature does not verify: %v", name, err)
		}
		sk := bytes.Repeat([]byte{9}, SessionKeySize)
		wrapped, _ := WrapKey(&k.PublicKey, sk, false)
		if unwrapped, err := UnwrapKey(got, wrapped, false); err != nil || !bytes.Equal(unwrapped, sk) {
			t.Errorf("%s: UnwrapKey = %x, %v; want the session key", name, unwrapped, err)
		}
	}
}

func TestPublicKeyWireForm(t *testing.T) {
	k, other := keys(t)
	pk := PublicKeyOf(&k.PublicKey)
	if !bytes.Equal(pk.Exponent, []byte{1, 0, 1}) {
		t.Errorf("exponent = %x, want 010001 with leading zeros stripped", pk.Exponent)
	}
	if pk.Modulus[0] == 0 {
		t.Error("modulus has a leading zero byte")
	}
	back, err := pk.RSA()
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(&k.PublicKey) {
		t.Error("public key round trip differs")
	}
	if pk.Equal(PublicKeyOf(&other.PublicKey)) {
		t.Error("two different keys compare equal")
	}
	padded := PublicKey{Exponent: append([]byte{0}, pk.Exponent...), Modulus: append([]byte{0}, pk.Modulus...)}
	if !pk.Equal(padded) {
		t.Error("a zero-padded copy of the key should be the same key")
	}
}

func TestWrapKey(t *testing.T) {
	k, other := keys(t)
	for _, fips := range []bool{false, true} {
		sk, err := NewSessionKey()
		if err != nil {
			t.Fatal(err)
		}
		wrapped, err := WrapKey(&k.PublicKey, sk, fips)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnwrapKey(k, wrapped, fips)
		if err != nil || !bytes.Equal(got, sk) {
			t.Errorf("fips=%v: UnwrapKey = %x, %v; want the session key", fips, got, err)
		}
		if _, err := UnwrapKey(other, wrapped, fips); !errors.Is(err, ErrUnwrap) {
			t.Errorf("fips=%v: unwrap with the wrong key: err = %v, want ErrUnwrap", fips, err)
		}
		if _, err := UnwrapKey(k, wrapped, !fips); !errors.Is(err, ErrUnwrap) {
			t.Errorf("fips=%v: unwrap with the other OAEP hash: err = %v, want ErrUnwrap", fips, err)
		}
		tampered := bytes.Clone(wrapped)
		tampered[len(tampered)/2] ^= 1
		if _, err := UnwrapKey(k, tampered, fips); err == nil {
			t.Errorf("fips=%v: tampered wrap accepted", fips)
		}
		if _, err := UnwrapKey(k, wrapped[:10], fips); err == nil {
			t.Errorf("fips=%v: truncated wrap accepted", fips)
		}
	}
	short, _ := WrapKey(&k.PublicKey, []byte("sixteen byte key"), false)
	if _, err := UnwrapKey(k, short, false); err == nil {
		t.Error("a 16-byte session key was accepted; want AES-256 only")
	}
}

func TestMessageCrypto(t *testing.T) {
	key, _ := NewSessionKey()
	otherKey, _ := NewSessionKey()
	for _, plain := range []string{"", "x", "exactly sixteen!", strings.Repeat("job body ", 1000), "\ufeff{\"jobId\":\"1\"}"} {
		iv, ct, err := Encrypt(key, []byte(plain))
		if err != nil {
			t.Fatal(err)
		}
		if len(ct)%16 != 0 || len(ct) <= len(plain) {
			t.Errorf("ciphertext length %d for %d plaintext bytes, want a padded multiple of 16", len(ct), len(plain))
		}
		got, err := Decrypt(key, iv, ct)
		if err != nil || string(got) != plain {
			t.Errorf("Decrypt = %q, %v; want %q", got, err, plain)
		}
		if got, err := Decrypt(otherKey, iv, ct); err == nil && string(got) == plain {
			t.Error("decrypting with another key gave the plaintext")
		}
	}
	iv1, ct1, _ := Encrypt(key, []byte("same"))
	iv2, ct2, _ := Encrypt(key, []byte("same"))
	if bytes.Equal(iv1, iv2) || bytes.Equal(ct1, ct2) {
		t.Error("two encryptions of the same message share an IV or ciphertext")
	}
}

func TestDecryptRejectsBadInput(t *testing.T) {
	key, _ := NewSessionKey()
	iv, ct, _ := Encrypt(key, []byte("a job message of some length"))
	flipLast := bytes.Clone(ct)
	flipLast[len(flipLast)-1] ^= 0xff
	cases := map[string]struct{ iv, ct []byte }{
		"empty":            {iv, nil},
		"truncated":        {iv, ct[:len(ct)-3]},
		"short iv":         {iv[:8], ct},
		"bad padding":      {iv, flipLast},
		"not block length": {iv, append(bytes.Clone(ct), 1)},
	}
	for name, c := range cases {
		if _, err := Decrypt(key, c.iv, c.ct); err == nil {
			t.Errorf("%s: Decrypt succeeded, want an error", name)
		}
	}
	if _, err := Decrypt(key[:5], iv, ct); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}

func TestClientAssertion(t *testing.T) {
	k, other := keys(t)
	const client = "8d3bd2a2-7f39-4e60-a4b5-3b8a8c4e7c01"
	const aud = "https://server.example/_apis/oauth2/token"
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	lookup := func(id string) (*rsa.PublicKey, error) {
		if id != client {
			return nil, errors.New("no such client")
		}
		return &k.PublicKey, nil
	}
	good, err := NewClientAssertion(k, client, aud, now)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyClientAssertion(good, lookup, aud, now.Add(time.Minute))
	if err != nil {
		t.Fatalf("valid assertion rejected: %v", err)
	}
	if got.ClientID != client || got.ID == "" {
		t.Errorf("Verify = %+v, want client %s and a jti", got, client)
	}
	// Some clients back-date nbf by 30 s; a server clock 30 s behind must accept.
	if _, err := VerifyClientAssertion(good, lookup, aud, now.Add(-30*time.Second)); err != nil {
		t.Errorf("30 s of clock skew rejected: %v", err)
	}

	wrongKey, _ := NewClientAssertion(other, client, aud, now)
	unknown, _ := NewClientAssertion(k, "someone-else", aud, now)
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + parts[1] + "x." + parts[2]
	cases := map[string]struct {
		token string
		aud   string
		at    time.Time
	}{
		"wrong key":       {wrongKey, aud, now},
		"unknown client":  {unknown, aud, now},
		"wrong audience":  {good, "https://elsewhere/_apis/oauth2/token", now},
		"expired":         {good, aud, now.Add(10 * time.Minute)},
		"not yet valid":   {good, aud, now.Add(-10 * time.Minute)},
		"tampered claims": {tampered, aud, now},
		"truncated":       {good[:len(good)-10], aud, now},
		"garbage":         {"not.a.jwt", aud, now},
		"empty":           {"", aud, now},
	}
	for name, c := range cases {
		if _, err := VerifyClientAssertion(c.token, lookup, c.aud, c.at); err == nil {
			t.Errorf("%s: assertion accepted", name)
		}
	}
}
