package controllers

import (
	"context"
	"testing"
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
