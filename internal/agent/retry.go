package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// Backoff is the wait before retry number attempt (0-based): doubling from
// 500 ms up to 30 s, each wait drawn from its upper half so that many agents
// cut off together do not come back together. jitter is in [0,1).
func Backoff(attempt int, jitter float64) time.Duration {
	const base, ceiling = 500 * time.Millisecond, 30 * time.Second
	d := ceiling
	if attempt < 16 {
		d = min(base<<attempt, ceiling)
	}
	return d/2 + time.Duration(float64(d/2)*jitter)
}

// Transient reports whether a failed call is worth repeating: the server
// was not reached, or answered that it is busy or broken right now.
func Transient(err error) bool {
	var p permanentError
	if err == nil || errors.Is(err, context.Canceled) || errors.As(err, &p) {
		return false
	}
	var e *pipelines.Error
	if !errors.As(err, &e) {
		return true // no answer from the server at all
	}
	switch e.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// retryTransient calls fn until it succeeds, fails for good, or has kept
// failing transiently for longer than budget.
func retryTransient(ctx context.Context, clock Clock, budget time.Duration, fn func(context.Context) error) error {
	var firstFailure time.Time
	for attempt := 0; ; attempt++ {
		err := fn(ctx)
		if err == nil || !Transient(err) || ctx.Err() != nil {
			return err
		}
		now := clock.Now()
		if firstFailure.IsZero() {
			firstFailure = now
		}
		if now.Sub(firstFailure) >= budget {
			return &unreachableError{after: now.Sub(firstFailure), err: err}
		}
		select {
		case <-ctx.Done():
			return err
		case <-clock.After(Backoff(attempt, rand.Float64())):
		}
	}
}

// unreachableError is a transient failure that outlasted the retry budget.
type unreachableError struct {
	after time.Duration
	err   error
}

func (e *unreachableError) Error() string {
	return "server unreachable after retrying for " + e.after.Round(time.Second).String() + ": " + e.err.Error()
}

func (e *unreachableError) Unwrap() error { return e.err }
