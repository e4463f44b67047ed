package controllers

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

func TestBackoffFrom(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		headers map[string]string
		want    time.Duration
	}{
		{name: "nothing asked"},
		{name: "Retry-After seconds", headers: map[string]string{"Retry-After": "7"}, want: 7 * time.Second},
		{name: "Retry-After date", headers: map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)}, want: 90 * time.Second},
		{name: "Azure delay", headers: map[string]string{"X-RateLimit-Delay": "1.5"}, want: 1500 * time.Millisecond},
		{name: "remaining left", headers: map[string]string{"X-RateLimit-Remaining": "12", "X-RateLimit-Reset": "1767269000"}},
		{name: "none remaining until reset", headers: map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1767269100"},
			want: time.Unix(1767269100, 0).Sub(now)},
		{name: "the longest ask wins", headers: map[string]string{"Retry-After": "2", "X-RateLimit-Delay": "5"}, want: 5 * time.Second},
		{name: "garbage is ignored", headers: map[string]string{"Retry-After": "soon", "X-RateLimit-Delay": "-3"}},
	}
	for _, tt := range tests {
		h := http.Header{}
		for k, v := range tt.headers {
			h.Set(k, v)
		}
		if got := backoffFrom(h, now); got != tt.want {
			t.Errorf("%s: backoffFrom = %s, want %s", tt.name, got, tt.want)
		}
	}
}

// A server that answers 429 with Retry-After is not called again until
// then: the next call fails at once with a rateLimitedError, which the pool
// reports as RateLimited.
func TestRateLimitTransportHoldsCallsBack(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	now := time.Now()
	tr := &rateLimitTransport{next: http.DefaultTransport, now: func() time.Time { return now }}
	c := pipelines.NewClient(srv.URL, pipelines.PersonalAccessToken("pat"), &http.Client{Transport: tr})

	_, err := c.ListJobRequests(context.Background(), 1)
	if pipelines.StatusCode(err) != http.StatusTooManyRequests || serverErrorReason(err) != "RateLimited" {
		t.Fatalf("first call: %v (reason %s), want a 429 reported as RateLimited", err, serverErrorReason(err))
	}
	_, err = c.ListJobRequests(context.Background(), 1)
	var limited *rateLimitedError
	if !errors.As(err, &limited) || limited.RetryAfter != 120*time.Second || serverErrorReason(err) != "RateLimited" {
		t.Fatalf("second call: %v, want a rateLimitedError to retry in 2m", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the server was called %d times, want 1", n)
	}
	now = now.Add(121 * time.Second)
	if _, err := c.ListJobRequests(context.Background(), 1); pipelines.StatusCode(err) != http.StatusTooManyRequests || calls.Load() != 2 {
		t.Errorf("after the wait: %v, %d calls; want the server called again", err, calls.Load())
	}
}
