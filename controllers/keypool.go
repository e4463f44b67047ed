package controllers

import (
	"context"
	"crypto/rsa"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
)

// KeySource hands out fresh RSA agent keys.
type KeySource interface {
	Key(ctx context.Context) (*rsa.PrivateKey, error)
}

// DefaultKeyPoolSize is how many agent keys the manager keeps ready.
const DefaultKeyPoolSize = 32

// keyPool keeps a few RSA-2048 keys made ahead of time, so a burst of
// registrations does not wait for key generation (about 40 ms of CPU each).
// Every key is handed out once; the pool refills in the background. Keys
// live only in the manager's memory until they are registered.
type keyPool struct {
	keys chan *rsa.PrivateKey
}

func newKeyPool(size int) *keyPool {
	return &keyPool{keys: make(chan *rsa.PrivateKey, size)}
}

// Key returns a ready key, or makes one now when the pool is empty.
func (p *keyPool) Key(ctx context.Context) (*rsa.PrivateKey, error) {
	select {
	case k := <-p.keys:
		return k, nil
	default:
		return agentcrypto.GenerateKey()
	}
}

// Start fills the pool until ctx ends; it is a manager Runnable.
func (p *keyPool) Start(ctx context.Context) error {
	for {
		k, err := agentcrypto.GenerateKey()
		if err != nil {
			return err
		}
		select {
		case p.keys <- k:
		case <-ctx.Done():
			return nil
		}
	}
}

// NeedLeaderElection: a standby replica keeps no keys.
func (p *keyPool) NeedLeaderElection() bool { return true }

// freshKeys makes every key on demand; used when the pool is disabled.
type freshKeys struct{}

func (freshKeys) Key(context.Context) (*rsa.PrivateKey, error) { return agentcrypto.GenerateKey() }
