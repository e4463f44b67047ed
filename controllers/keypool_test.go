package controllers

import (
	"context"
	"crypto/rsa"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
)

// The pool hands out ready keys, each exactly once, and still answers when
// it is empty.
func TestKeyPool(t *testing.T) {
	p := newKeyPool(2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Start(ctx) }()

	seen := map[string]bool{}
	for range 5 {
		k, err := p.Key(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := k.Validate(); err != nil {
			t.Fatalf("pool handed out an invalid key: %v", err)
		}
		if k.N.BitLen() != 2048 {
			t.Errorf("key has %d bits, want 2048", k.N.BitLen())
		}
		n := k.N.String()
		if seen[n] {
			t.Fatal("pool handed out the same key twice")
		}
		seen[n] = true
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Start returned %v after its context ended, want nil", err)
	}

	empty := newKeyPool(1) // never started
	if k, err := empty.Key(context.Background()); err != nil || k == nil {
		t.Errorf("an empty pool's Key = %v, %v; want a fresh key", k, err)
	}
}

// The pool refills only once no key was taken for a while, so a burst's
// registrations do not share the CPU with keys made for later; an empty
// pool still answers at once.
func TestKeyPoolRefillsWhenQuiet(t *testing.T) {
	key, err := agentcrypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	generated := make(chan struct{}, 10)
	waits := make(chan time.Duration, 10)
	release := make(chan time.Time)
	p := newKeyPool(2)
	p.rest = 0 // only the quiet time is tested here
	p.generate = func() (*rsa.PrivateKey, error) {
		generated <- struct{}{}
		return key, nil
	}
	p.after = func(d time.Duration) <-chan time.Time {
		waits <- d
		return release
	}

	missesBefore := testutil.ToFloat64(keyPoolMisses)
	if _, err := p.Key(context.Background()); err != nil { // empty: made on the spot
		t.Fatal(err)
	}
	<-generated
	if got := testutil.ToFloat64(keyPoolMisses) - missesBefore; got != 1 {
		t.Errorf("misses rose by %v after a key from an empty pool, want 1", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Start(ctx) }()
	// A key was just taken: the pool waits before making any.
	if d := <-waits; d <= 0 || d > p.quiet {
		t.Errorf("the pool waits %s after a take, want (0, %s]", d, p.quiet)
	}
	select {
	case <-generated:
		t.Fatal("the pool made a key while keys were being taken")
	default:
	}
	// Quiet since: it fills up (two keys in the pool, a third waiting).
	p.lastTake.Store(time.Now().Add(-time.Hour).UnixNano())
	release <- time.Now()
	for range 3 {
		<-generated
	}
	missesBefore = testutil.ToFloat64(keyPoolMisses)
	for range 2 {
		if _, err := p.Key(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(keyPoolMisses) - missesBefore; got != 0 {
		t.Errorf("misses rose by %v taking keys from a full pool, want 0", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Start returned %v after its context ended, want nil", err)
	}
}
