package controllers

import (
	"context"
	"crypto/rsa"
	"sync/atomic"
	"time"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
)

// KeySource hands out fresh RSA agent keys.
type KeySource interface {
	Key(ctx context.Context) (*rsa.PrivateKey, error)
}

// DefaultKeyPoolSize is how many agent keys the manager keeps ready: a burst
// of this many registrations waits for no key generation.
const DefaultKeyPoolSize = 100

const (
	// keyPoolQuiet is how long no key must have been taken before the pool
	// makes more: a burst's registrations get the CPU, and so do its
	// removals, which follow its last registration by a second or two; the
	// pool refills after (with 1 s it refilled during the removals of a
	// 100-job burst, and slowed them).
	keyPoolQuiet = 5 * time.Second
	// keyPoolRest is how many times as long as the last key took the pool
	// rests before the next one: refilling takes at most a third of a core,
	// so the agents a burst started are not slowed down by it.
	keyPoolRest = 2
)

// keyPool keeps RSA-2048 keys made ahead of time, so a burst of
// registrations does not wait for key generation (about 40 ms of CPU each).
// Every key is handed out once. The pool refills only while no keys are
// being taken: during a burst, making keys for later would take the CPU the
// burst's own registrations need. Keys live only in the manager's memory
// until they are registered.
type keyPool struct {
	keys  chan *rsa.PrivateKey
	quiet time.Duration
	rest  int
	// lastTake is when a key was last asked for, in Unix nanoseconds.
	lastTake atomic.Int64

	// generate makes a key; after waits. Tests replace them.
	generate func() (*rsa.PrivateKey, error)
	after    func(time.Duration) <-chan time.Time
}

func newKeyPool(size int) *keyPool {
	return &keyPool{
		keys:     make(chan *rsa.PrivateKey, size),
		quiet:    keyPoolQuiet,
		rest:     keyPoolRest,
		generate: agentcrypto.GenerateKey,
		after:    time.After,
	}
}

// Key returns a ready key, or makes one now when the pool is empty.
func (p *keyPool) Key(ctx context.Context) (*rsa.PrivateKey, error) {
	p.lastTake.Store(time.Now().UnixNano())
	select {
	case k := <-p.keys:
		keyPoolReady.Set(float64(len(p.keys)))
		return k, nil
	default:
		keyPoolMisses.Inc()
		return p.generate()
	}
}

// Start fills the pool until ctx ends; it is a manager Runnable.
func (p *keyPool) Start(ctx context.Context) error {
	var rest time.Duration
	for {
		if wait := max(rest, p.quiet-time.Since(time.Unix(0, p.lastTake.Load()))); wait > 0 {
			select {
			case <-p.after(wait):
				rest = 0
				continue
			case <-ctx.Done():
				return nil
			}
		}
		began := time.Now()
		k, err := p.generate()
		if err != nil {
			return err
		}
		rest = time.Since(began) * time.Duration(p.rest)
		select {
		case p.keys <- k:
			keyPoolReady.Set(float64(len(p.keys)))
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
