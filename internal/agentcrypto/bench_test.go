package agentcrypto

import (
	"testing"
	"time"
)

// BenchmarkGenerateKey is the CPU an agent registration spends on its key
// (docs/benchmarks.md uses it to read the manager's figures).
func BenchmarkGenerateKey(b *testing.B) {
	for b.Loop() {
		if _, err := GenerateKey(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMessageRoundTrip encrypts and decrypts a 4 KiB job message.
func BenchmarkMessageRoundTrip(b *testing.B) {
	key, _ := NewSessionKey()
	msg := make([]byte, 4096)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		iv, ct, err := Encrypt(key, msg)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Decrypt(key, iv, ct); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrivateKey reads an agent key from its .credentials_rsaparams
// form, as every agent process does once at start.
func BenchmarkPrivateKey(b *testing.B) {
	k, _ := keys(b)
	p := ParametersOf(k)
	for b.Loop() {
		if _, err := p.PrivateKey(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientAssertion signs the JWT an agent trades for its listener
// token.
func BenchmarkClientAssertion(b *testing.B) {
	k, _ := keys(b)
	now := time.Now()
	for b.Loop() {
		if _, err := NewClientAssertion(k, "c", "http://127.0.0.1/_apis/oauth2/token", now); err != nil {
			b.Fatal(err)
		}
	}
}
