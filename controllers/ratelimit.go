package controllers

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxRateLimitWait is the longest a call waits in line for a server that
// asked the operator to slow down; beyond it the call fails with a
// rateLimitedError and the reconcile comes back later instead of holding a
// worker.
const maxRateLimitWait = 5 * time.Second

// rateLimitedError is a call not made because the server asked to wait.
type rateLimitedError struct {
	Host       string
	RetryAfter time.Duration
}

func (e *rateLimitedError) Error() string {
	return fmt.Sprintf("%s asked to slow down; retrying in %s", e.Host, e.RetryAfter.Round(time.Second))
}

// rateLimitTransport honours the back-off a server asks for: Retry-After
// (on any answer, as 429 and 503 carry it), Azure DevOps' X-RateLimit-Delay
// (seconds the client should have waited) and X-RateLimit-Remaining: 0 with
// X-RateLimit-Reset (epoch seconds). Calls to a host that asked to wait are
// delayed until then, or refused when that is too far off.
type rateLimitTransport struct {
	next http.RoundTripper
	now  func() time.Time

	mu        sync.Mutex
	notBefore map[string]time.Time
}

func (t *rateLimitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	if wait := t.wait(host); wait > 0 {
		if wait > maxRateLimitWait {
			return nil, &rateLimitedError{Host: host, RetryAfter: wait}
		}
		if err := sleep(req.Context(), wait); err != nil {
			return nil, err
		}
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if d := backoffFrom(resp.Header, t.now()); d > 0 {
		t.mu.Lock()
		if t.notBefore == nil {
			t.notBefore = map[string]time.Time{}
		}
		if until := t.now().Add(d); until.After(t.notBefore[host]) {
			t.notBefore[host] = until
		}
		t.mu.Unlock()
	}
	return resp, nil
}

func (t *rateLimitTransport) wait(host string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	until, ok := t.notBefore[host]
	if !ok {
		return 0
	}
	d := until.Sub(t.now())
	if d <= 0 {
		delete(t.notBefore, host)
	}
	return d
}

// backoffFrom reads how long a server asked its client to hold off.
func backoffFrom(h http.Header, now time.Time) time.Duration {
	var d time.Duration
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil {
			d = max(d, seconds(s))
		} else if at, err := http.ParseTime(v); err == nil {
			d = max(d, at.Sub(now))
		}
	}
	if v := strings.TrimSpace(h.Get("X-RateLimit-Delay")); v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil {
			d = max(d, seconds(s))
		}
	}
	if strings.TrimSpace(h.Get("X-RateLimit-Remaining")) == "0" {
		if s, err := strconv.ParseInt(strings.TrimSpace(h.Get("X-RateLimit-Reset")), 10, 64); err == nil {
			d = max(d, time.Unix(s, 0).Sub(now))
		} else {
			d = max(d, time.Second)
		}
	}
	return min(d, 10*time.Minute)
}

func seconds(s float64) time.Duration {
	if s <= 0 || s > 1e6 {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
