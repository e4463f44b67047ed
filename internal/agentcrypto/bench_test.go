package agentcrypto

import "testing"

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
