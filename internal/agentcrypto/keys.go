package agentcrypto

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/big"
)

// KeyBits is the size of every agent key agentry makes.
const KeyBits = 2048

// GenerateKey makes a fresh RSA-2048 agent key.
func GenerateKey() (*rsa.PrivateKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, KeyBits)
	if err != nil {
		return nil, fmt.Errorf("generating RSA key: %w", err)
	}
	return k, nil
}

// PublicKey is a public key as the protocol sends it: big-endian exponent and
// modulus, leading zero bytes stripped, base64 in JSON.
type PublicKey struct {
	Exponent []byte `json:"exponent"`
	Modulus  []byte `json:"modulus"`
}

// PublicKeyOf converts an RSA public key to its wire form.
func PublicKeyOf(pub *rsa.PublicKey) PublicKey {
	return PublicKey{
		Exponent: big.NewInt(int64(pub.E)).Bytes(),
		Modulus:  pub.N.Bytes(),
	}
}

// RSA converts the wire form back to an RSA public key, rejecting keys that
// are too small or have an unusable exponent.
func (p PublicKey) RSA() (*rsa.PublicKey, error) {
	n := new(big.Int).SetBytes(p.Modulus)
	if n.BitLen() < 2048 {
		return nil, fmt.Errorf("public key modulus has %d bits, want at least 2048", n.BitLen())
	}
	if n.BitLen() > 8192 {
		return nil, fmt.Errorf("public key modulus has %d bits, want at most 8192", n.BitLen())
	}
	e := new(big.Int).SetBytes(p.Exponent)
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return nil, errors.New("public key exponent is not a usable odd integer")
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

// Equal reports whether two wire keys denote the same key.
func (p PublicKey) Equal(o PublicKey) bool {
	return new(big.Int).SetBytes(p.Modulus).Cmp(new(big.Int).SetBytes(o.Modulus)) == 0 &&
		new(big.Int).SetBytes(p.Exponent).Cmp(new(big.Int).SetBytes(o.Exponent)) == 0
}

// RSAParameters is a private key in the shape of .NET's RSAParameters, which
// is how Microsoft's agent stores it in .credentials_rsaparams on Linux.
type RSAParameters struct {
	D        []byte `json:"d"`
	DP       []byte `json:"dp"`
	DQ       []byte `json:"dq"`
	Exponent []byte `json:"exponent"`
	InverseQ []byte `json:"inverseQ"`
	Modulus  []byte `json:"modulus"`
	P        []byte `json:"p"`
	Q        []byte `json:"q"`
}

// ParametersOf converts a private key to RSAParameters. D is padded to the
// modulus length and the CRT values to half of it, as .NET's ImportParameters
// requires.
func ParametersOf(k *rsa.PrivateKey) RSAParameters {
	k.Precompute()
	size := (k.N.BitLen() + 7) / 8
	half := (size + 1) / 2
	return RSAParameters{
		D:        pad(k.D, size),
		DP:       pad(k.Precomputed.Dp, half),
		DQ:       pad(k.Precomputed.Dq, half),
		Exponent: big.NewInt(int64(k.E)).Bytes(),
		InverseQ: pad(k.Precomputed.Qinv, half),
		Modulus:  k.N.Bytes(),
		P:        pad(k.Primes[0], half),
		Q:        pad(k.Primes[1], half),
	}
}

func pad(n *big.Int, size int) []byte {
	b := make([]byte, size)
	return n.FillBytes(b)
}

// PrivateKey converts RSAParameters back to a validated private key.
//
// The CRT values the file carries (dp, dq, inverseQ) are used when they are
// consistent with d, p and q: crypto/rsa then only checks them, where
// deriving them costs a 1024-bit modular exponentiation. Values that do not
// check out are ignored and derived again, so a key is accepted exactly when
// d, p and q make one. Each agent process reads its key once at start, so
// this is part of the CPU every job costs.
func (p RSAParameters) PrivateKey() (*rsa.PrivateKey, error) {
	pub, err := PublicKey{Exponent: p.Exponent, Modulus: p.Modulus}.RSA()
	if err != nil {
		return nil, err
	}
	if len(p.D) == 0 || len(p.P) == 0 || len(p.Q) == 0 {
		return nil, errors.New("private key is missing d, p or q")
	}
	k := &rsa.PrivateKey{
		PublicKey: *pub,
		D:         new(big.Int).SetBytes(p.D),
		Primes:    []*big.Int{new(big.Int).SetBytes(p.P), new(big.Int).SetBytes(p.Q)},
	}
	if len(p.DP) > 0 && len(p.DQ) > 0 && len(p.InverseQ) > 0 {
		k.Precomputed.Dp = new(big.Int).SetBytes(p.DP)
		k.Precomputed.Dq = new(big.Int).SetBytes(p.DQ)
		k.Precomputed.Qinv = new(big.Int).SetBytes(p.InverseQ)
		// Precompute keeps what it built only when the key checks out;
		// Validate then finds it consistent without doing the work again.
		k.Precompute()
		if k.Validate() == nil {
			return k, nil
		}
		k.Precomputed = rsa.PrecomputedValues{}
	}
	// Precompute first, so Validate checks the stored values rather than
	// deriving them a second time.
	k.Precompute()
	if err := k.Validate(); err != nil {
		return nil, fmt.Errorf("private key is inconsistent: %w", err)
	}
	return k, nil
}
