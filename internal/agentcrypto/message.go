package agentcrypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
)

// ErrDecrypt is returned for any message body that does not decrypt cleanly.
// It deliberately says nothing about which check failed.
var ErrDecrypt = errors.New("message body does not decrypt with the session key")

// Encrypt seals plaintext with AES-256-CBC and PKCS#7 padding under a fresh
// random IV, which it returns with the ciphertext.
func Encrypt(key, plaintext []byte) (iv, ciphertext []byte, err error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, fmt.Errorf("session key: %w", err)
	}
	iv = make([]byte, aes.BlockSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, nil, err
	}
	n := aes.BlockSize - len(plaintext)%aes.BlockSize
	buf := make([]byte, len(plaintext)+n)
	copy(buf, plaintext)
	for i := len(plaintext); i < len(buf); i++ {
		buf[i] = byte(n)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(buf, buf)
	return iv, buf, nil
}

// Decrypt opens an AES-256-CBC/PKCS#7 body. A wrong key, a truncated body or
// bad padding all give ErrDecrypt.
func Decrypt(key, iv, ciphertext []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	if len(iv) != aes.BlockSize || len(ciphertext) == 0 || len(ciphertext)%aes.BlockSize != 0 {
		return nil, ErrDecrypt
	}
	buf := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(buf, ciphertext)
	n := int(buf[len(buf)-1])
	if n == 0 || n > aes.BlockSize {
		return nil, ErrDecrypt
	}
	want := make([]byte, n)
	for i := range want {
		want[i] = byte(n)
	}
	if subtle.ConstantTimeCompare(buf[len(buf)-n:], want) != 1 {
		return nil, ErrDecrypt
	}
	return buf[:len(buf)-n], nil
}
