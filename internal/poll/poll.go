// Package poll waits on conditions that nothing signals: it checks them at
// an interval until they hold or a deadline passes. Tests and the local stack
// use it for the state of other processes (an API server, a child process,
// /proc), where there is no event to wait on.
package poll

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Until calls check at once and then every interval until it returns nil,
// ctx ends or timeout passes (timeout 0: only ctx bounds it). It returns nil,
// or an error that wraps check's last error.
func Until(ctx context.Context, timeout, interval time.Duration, check func() error) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		last := check()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && timeout > 0 {
				return fmt.Errorf("gave up after %s: %w", timeout, last)
			}
			return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

// Holds calls check every interval for d and returns the first error it
// returns, or nil when check held throughout (or ctx ended).
func Holds(ctx context.Context, d, interval time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := check(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
