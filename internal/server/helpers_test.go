package server_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
)

func newAssertion(a *testAgent, clientID, aud string, at time.Time) (string, error) {
	return agentcrypto.NewClientAssertion(a.key, clientID, aud, at)
}

func asErr(err error, target any) bool { return errors.As(err, target) }

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type rawResponse struct {
	status                 int
	body                   string
	challenge, contentType string
}

// do sends a raw request, for what pipelines.Client does not send.
func do(t *testing.T, method, url, authorization, body string) rawResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json; api-version=7.1-preview.1")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResponse{status: resp.StatusCode, body: string(b), challenge: resp.Header.Get("WWW-Authenticate"),
		contentType: resp.Header.Get("Content-Type")}
}
