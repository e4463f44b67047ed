package agent

import (
	"errors"
	"net/http"
	"time"

	"github.com/go-logr/logr"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// DefaultVersion is the agent version reported when Config.Version is empty.
const DefaultVersion = "0.1.0"

// Config is what one agent process needs. Only Dir is required.
type Config struct {
	// Dir holds the agent's .agent, .credentials and .credentials_rsaparams.
	Dir string
	// WorkDir is where jobs run. Empty means a fresh temporary folder that is
	// removed when Run returns; a given folder is created if missing and kept.
	WorkDir string
	// IdleTimeout ends Run with ErrIdleTimeout when no job arrived in time.
	// Zero waits forever.
	IdleTimeout time.Duration
	// Version is the agent version sent with the session (DefaultVersion if empty).
	Version string

	// Log receives the agent's own log. It never carries a token, a key or a
	// secret variable. The zero value discards.
	Log logr.Logger
	// HTTPClient is used for every call; nil means a client of the agent's
	// own with a 100 s timeout (longer than any long-poll).
	HTTPClient *http.Client
	// Clock is faked in tests; nil means the wall clock.
	Clock Clock

	// RetryTimeout bounds how long a call to the server is retried while the
	// server is unreachable or answers with a transient error (default 5 min).
	RetryTimeout time.Duration
	// CancelGrace is how long a canceled step has between SIGTERM and SIGKILL
	// (default 10 s).
	CancelGrace time.Duration
	// StopTimeout bounds the wind-down once the agent is told to stop
	// (SIGTERM): the running step gets SIGTERM at once (SIGKILL after
	// CancelGrace) and reporting the canceled job ends by StopTimeout, so the
	// agent leaves inside Kubernetes' default 30 s grace period (default 20 s).
	StopTimeout time.Duration
	// RenewInterval is how often the job-request lock is renewed (default 60 s).
	RenewInterval time.Duration
	// FeedInterval is how often live console lines are sent (default 500 ms).
	FeedInterval time.Duration
}

func (c Config) withDefaults() Config {
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.HTTPClient == nil {
		// Its own connections, which Run closes on the way out.
		c.HTTPClient = &http.Client{Timeout: 100 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if c.RetryTimeout <= 0 {
		c.RetryTimeout = 5 * time.Minute
	}
	if c.CancelGrace <= 0 {
		c.CancelGrace = 10 * time.Second
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 20 * time.Second
	}
	if c.RenewInterval <= 0 {
		c.RenewInterval = 60 * time.Second
	}
	if c.FeedInterval <= 0 {
		c.FeedInterval = 500 * time.Millisecond
	}
	return c
}

// Outcome is what Run did: the job it took and the result it reported.
type Outcome struct {
	JobID     string
	RequestID int64
	JobName   string
	Result    pipelines.TaskResult
}

// Errors Run returns, to be told apart with errors.Is. Each is wrapped with
// the cause, so the message says what happened.
var (
	// ErrConfig: the agent folder, its files or the flags are unusable.
	ErrConfig = errors.New("bad configuration")
	// ErrCredentialsRejected: the server refused the agent's key before a
	// session was ever opened.
	ErrCredentialsRejected = errors.New("credentials rejected")
	// ErrDeregistered: the agent's registration is gone (deleted while it
	// listened, or the server says the agent does not exist).
	ErrDeregistered = errors.New("agent is no longer registered")
	// ErrIdleTimeout: no job arrived within Config.IdleTimeout.
	ErrIdleTimeout = errors.New("no job arrived before the idle timeout")
	// ErrStopped: the context ended before a job arrived.
	ErrStopped = errors.New("stopped before a job arrived")
)

// Exit codes of agentry-agent. A pod's exit code tells the operator why an
// agent left without running a job.
const (
	ExitRanJob              = 0 // took one job and reported it, whatever its result
	ExitError               = 1 // anything else (server unreachable after retries, protocol errors, stopped)
	ExitBadConfiguration    = 2
	ExitCredentialsRejected = 3
	ExitDeregistered        = 4
	ExitIdleTimeout         = 5
)

// ExitCode maps an error from Run to the process exit code.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitRanJob
	case errors.Is(err, ErrConfig):
		return ExitBadConfiguration
	case errors.Is(err, ErrCredentialsRejected):
		return ExitCredentialsRejected
	case errors.Is(err, ErrDeregistered):
		return ExitDeregistered
	case errors.Is(err, ErrIdleTimeout):
		return ExitIdleTimeout
	}
	return ExitError
}
