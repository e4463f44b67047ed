package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{0, 250 * time.Millisecond, 500 * time.Millisecond},
		{1, 500 * time.Millisecond, time.Second},
		{3, 2 * time.Second, 4 * time.Second},
		{10, 15 * time.Second, 30 * time.Second},
		{1000, 15 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		for _, j := range []float64{0, 0.5, 0.999} {
			if got := Backoff(tt.attempt, j); got < tt.min || got > tt.max {
				t.Errorf("Backoff(%d, %v) = %s, want within [%s, %s]", tt.attempt, j, got, tt.min, tt.max)
			}
		}
	}
}

func serverError(status int, typeKey string) error {
	return &pipelines.Error{StatusCode: status, Exception: pipelines.WrappedException{TypeKey: typeKey}}
}

func TestTransient(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{errors.New("dial tcp: connection refused"), true},
		{serverError(http.StatusServiceUnavailable, ""), true},
		{serverError(http.StatusTooManyRequests, ""), true},
		{fmt.Errorf("wrapped: %w", serverError(http.StatusBadGateway, "")), true},
		{serverError(http.StatusUnauthorized, pipelines.TypeKeyAccessTokenExpired), false},
		{serverError(http.StatusNotFound, pipelines.TypeKeyAgentNotFound), false},
		{serverError(http.StatusConflict, pipelines.TypeKeySessionConflict), false},
		{context.Canceled, false},
		{permanent(errors.New("bad key")), false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := Transient(tt.err); got != tt.want {
			t.Errorf("Transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestRetryTransient(t *testing.T) {
	unavailable := serverError(http.StatusServiceUnavailable, "")
	tests := []struct {
		name      string
		fails     []error // errors returned by successive calls, then success
		wantCalls int
		wantErr   string
	}{
		{"succeeds at once", nil, 1, ""},
		{"recovers", []error{unavailable, unavailable}, 3, ""},
		{"permanent error is not retried", []error{serverError(http.StatusForbidden, "")}, 1, "403"},
		{"gives up after the budget", repeat(unavailable, 1000), -1, "server unreachable after retrying"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock(true)
			calls := 0
			err := retryTransient(context.Background(), clock, time.Minute, func(context.Context) error {
				calls++
				if calls <= len(tt.fails) {
					return tt.fails[calls-1]
				}
				return nil
			})
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
			if tt.wantCalls >= 0 && calls != tt.wantCalls {
				t.Errorf("calls = %d, want %d", calls, tt.wantCalls)
			}
			if tt.wantCalls < 0 && calls >= 1000 {
				t.Errorf("never gave up (%d calls)", calls)
			}
		})
	}
}

func repeat(err error, n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}
