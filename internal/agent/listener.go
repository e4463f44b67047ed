package agent

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

const zeroGUID = "00000000-0000-0000-0000-000000000000"

// listener holds what the agent talks to its pool with: the listener token,
// the session and its key, and the id of the last message taken.
type listener struct {
	cfg    Config
	log    logr.Logger
	files  pipelines.AgentFiles
	key    *rsa.PrivateKey
	client *pipelines.Client

	mu         sync.Mutex
	token      string
	hadSession bool
	// deregistered is set once the server said the agent is gone; there is
	// then no session left to delete.
	deregistered bool

	session       *pipelines.TaskAgentSession
	sessionKey    []byte
	lastMessageID int64
}

func newListener(cfg Config, files pipelines.AgentFiles, key *rsa.PrivateKey) *listener {
	l := &listener{cfg: cfg, log: cfg.Log, files: files, key: key}
	l.client = pipelines.NewClient(files.Settings.ServerURL, l, cfg.HTTPClient)
	l.client.UserAgent = "agentry-agent/" + cfg.Version
	return l
}

// Authorize implements pipelines.Authorizer with the current listener token.
func (l *listener) Authorize(req *http.Request) {
	l.mu.Lock()
	t := l.token
	l.mu.Unlock()
	req.Header.Set("Authorization", "Bearer "+t)
}

// refreshToken trades a fresh client assertion for a listener token.
func (l *listener) refreshToken(ctx context.Context) error {
	tokenURL := l.files.Credentials.TokenURL()
	var tok *pipelines.AccessToken
	err := retryTransient(ctx, l.cfg.Clock, l.cfg.RetryTimeout, func(ctx context.Context) error {
		// A new assertion per attempt: each carries its own jti.
		assertion, err := agentcrypto.NewClientAssertion(l.key, l.files.Credentials.Data.ClientID, tokenURL, l.cfg.Clock.Now())
		if err != nil {
			return permanent(err)
		}
		tok, err = l.client.GetListenerToken(ctx, tokenURL, assertion)
		if err != nil && pipelines.StatusCode(err) == 0 && strings.Contains(err.Error(), "without an access token") {
			return permanent(err)
		}
		return err
	})
	if err != nil {
		return l.classify(err, "getting a listener token")
	}
	l.mu.Lock()
	l.token = tok.AccessToken
	l.mu.Unlock()
	return nil
}

// classify turns a failed call into one of Run's errors.
func (l *listener) classify(err error, doing string) error {
	err = l.classifyOnly(err, doing)
	if errors.Is(err, ErrDeregistered) {
		l.mu.Lock()
		l.deregistered = true
		l.mu.Unlock()
	}
	return err
}

func (l *listener) classifyOnly(err error, doing string) error {
	l.mu.Lock()
	hadSession := l.hadSession
	l.mu.Unlock()
	switch {
	case pipelines.IsTypeKey(err, pipelines.TypeKeyAgentNotFound), pipelines.IsTypeKey(err, pipelines.TypeKeyPoolNotFound):
		return fmt.Errorf("%w: %s: %w", ErrDeregistered, doing, err)
	case rejected(err) && hadSession:
		// Credentials that opened a session and now fail mean the
		// registration was removed (the operator deregistered the agent).
		return fmt.Errorf("%w: %s: %w", ErrDeregistered, doing, err)
	case rejected(err):
		return fmt.Errorf("%w: %s: %w", ErrCredentialsRejected, doing, err)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// rejected reports whether the server refused the agent's credential.
func rejected(err error) bool {
	switch pipelines.StatusCode(err) {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
		return true
	}
	return pipelines.IsTypeKey(err, pipelines.TypeKeyAccessTokenExpired) || pipelines.IsTypeKey(err, pipelines.TypeKeyUnauthorized)
}

// call runs fn with the listener token: transient failures are retried for
// up to budget, and a rejected token is refreshed once.
func (l *listener) call(ctx context.Context, budget time.Duration, doing string, fn func(context.Context) error) error {
	for refreshed := false; ; refreshed = true {
		err := retryTransient(ctx, l.cfg.Clock, budget, fn)
		if err == nil {
			return nil
		}
		if !tokenExpired(err) || refreshed || ctx.Err() != nil {
			return l.classify(err, doing)
		}
		l.log.V(1).Info("Refreshing the listener token", "after", doing)
		if err := l.refreshToken(ctx); err != nil {
			return err
		}
	}
}

// tokenExpired reports whether the server asks for a new listener token: a
// 401 with a Bearer challenge, as Azure answers, or the expired-token typeKey.
func tokenExpired(err error) bool {
	var e *pipelines.Error
	if !errors.As(err, &e) {
		return false
	}
	if e.Exception.TypeKey == pipelines.TypeKeyAccessTokenExpired {
		return true
	}
	scheme, _, _ := strings.Cut(strings.TrimSpace(e.Challenge), " ")
	return e.StatusCode == http.StatusUnauthorized && strings.EqualFold(scheme, "Bearer")
}

// openSession opens a listener session and unwraps its key. A session that
// is still open elsewhere (a conflict) is waited out within the retry budget.
func (l *listener) openSession(ctx context.Context) error {
	s := l.files.Settings
	req := pipelines.TaskAgentSession{
		SessionID:          zeroGUID,
		OwnerName:          ownerName(),
		Agent:              pipelines.TaskAgentReference{ID: s.AgentID, Name: s.AgentName, Version: l.cfg.Version, OSDescription: osDescription()},
		SystemCapabilities: systemCapabilities(s.AgentName, l.cfg.Version),
	}
	var first time.Time
	for attempt := 0; ; attempt++ {
		var sess *pipelines.TaskAgentSession
		err := l.call(ctx, l.cfg.RetryTimeout, "opening a session", func(ctx context.Context) error {
			var err error
			sess, err = l.client.CreateSession(ctx, s.PoolID, req)
			return err
		})
		if err == nil {
			key, err := sessionKey(l.key, sess)
			if err != nil {
				return fmt.Errorf("opening a session: %w", err)
			}
			l.mu.Lock()
			l.session, l.sessionKey, l.hadSession = sess, key, true
			l.mu.Unlock()
			return nil
		}
		if !pipelines.IsTypeKey(err, pipelines.TypeKeySessionConflict) {
			return err
		}
		if first.IsZero() {
			first = l.cfg.Clock.Now()
		}
		if waited := l.cfg.Clock.Now().Sub(first); waited >= l.cfg.RetryTimeout {
			return fmt.Errorf("gave up opening a session after %s: the server says another session of this agent is still open "+
				"(is a second process running with the same agent files?): %w", waited.Round(time.Second), err)
		}
		l.log.Info("Waiting for this agent's other session to end")
		select {
		case <-ctx.Done():
			return fmt.Errorf("opening a session: %w", ctx.Err())
		case <-l.cfg.Clock.After(Backoff(attempt, rand.Float64())):
		}
	}
}

// sessionKey unwraps the session's AES key; a session without a key can
// only receive plain messages.
func sessionKey(priv *rsa.PrivateKey, s *pipelines.TaskAgentSession) ([]byte, error) {
	if s.EncryptionKey == nil || len(s.EncryptionKey.Value) == 0 {
		return nil, nil
	}
	if s.EncryptionKey.Encrypted {
		return agentcrypto.UnwrapKey(priv, s.EncryptionKey.Value, s.UseFipsEncryption)
	}
	switch len(s.EncryptionKey.Value) {
	case 16, 24, 32:
		return s.EncryptionKey.Value, nil
	}
	return nil, fmt.Errorf("session key is %d bytes, not an AES key", len(s.EncryptionKey.Value))
}

// closeSession deletes the session; it runs on the way out, so it ignores
// cancellation of ctx and gives up after a short while.
func (l *listener) closeSession(ctx context.Context) {
	l.mu.Lock()
	sess, gone := l.session, l.deregistered
	l.mu.Unlock()
	if sess == nil || gone {
		return
	}
	// Short: this is the last thing before exit, maybe inside a pod's grace period.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	l.log.Info("Deleting the session")
	err := l.call(ctx, 3*time.Second, "deleting the session", func(ctx context.Context) error {
		return l.client.DeleteSession(ctx, l.files.Settings.PoolID, sess.SessionID)
	})
	switch {
	case errors.Is(err, ErrDeregistered):
		// The operator deregisters an agent as soon as the server has its
		// job's result, which can be before this call: the session went
		// with the registration.
		l.log.Info("The agent is deregistered already; its session went with it")
	case err != nil:
		l.log.Error(err, "Could not delete the session; the server will expire it")
	}
	l.mu.Lock()
	l.session, l.sessionKey = nil, nil
	l.mu.Unlock()
}

// nextMessage long-polls once. It returns nil, nil when the poll ended
// without a message. An expired session is replaced.
func (l *listener) nextMessage(ctx context.Context) (*pipelines.TaskAgentMessage, error) {
	for {
		l.mu.Lock()
		sess, last := l.session, l.lastMessageID
		l.mu.Unlock()
		var msg *pipelines.TaskAgentMessage
		err := l.call(ctx, l.cfg.RetryTimeout, "polling for messages", func(ctx context.Context) error {
			var err error
			msg, err = l.client.GetMessage(ctx, l.files.Settings.PoolID, sess.SessionID, last)
			return err
		})
		if pipelines.IsTypeKey(err, pipelines.TypeKeySessionExpired) {
			l.log.Info("Opening a new session: the server expired the old one")
			if err := l.openSession(ctx); err != nil {
				return nil, err
			}
			continue
		}
		return msg, err
	}
}

// ack deletes a message from the queue and remembers it as the last one
// taken. A failed delete is logged: lastMessageId still tells the server.
func (l *listener) ack(ctx context.Context, msg *pipelines.TaskAgentMessage) {
	l.mu.Lock()
	sess := l.session
	l.lastMessageID = msg.MessageID
	l.mu.Unlock()
	err := l.call(ctx, 30*time.Second, "acknowledging a message", func(ctx context.Context) error {
		return l.client.DeleteMessage(ctx, l.files.Settings.PoolID, sess.SessionID, msg.MessageID)
	})
	if err != nil {
		l.log.Error(err, "Could not acknowledge a message", "messageId", msg.MessageID, "messageType", msg.MessageType)
	}
}

func (l *listener) currentSessionKey() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sessionKey
}

// renew extends the job-request lock once (budget bounds transient retries).
func (l *listener) renew(ctx context.Context, budget time.Duration, requestID int64) (*pipelines.TaskAgentJobRequest, error) {
	var req *pipelines.TaskAgentJobRequest
	err := l.call(ctx, budget, "renewing the job-request lock", func(ctx context.Context) error {
		var err error
		req, err = l.client.RenewJobRequest(ctx, l.files.Settings.PoolID, requestID)
		return err
	})
	return req, err
}

// finish finishes a job request the old way (plans before version 8).
func (l *listener) finish(ctx context.Context, requestID int64, result pipelines.TaskResult) error {
	return l.call(ctx, l.cfg.RetryTimeout, "finishing the job request", func(ctx context.Context) error {
		return l.client.FinishJobRequest(ctx, l.files.Settings.PoolID, requestID, result, l.cfg.Clock.Now().UTC())
	})
}

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func permanent(err error) error { return permanentError{err} }

func ownerName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "agentry-agent"
	}
	return h
}

// osName is the OS as Azure Pipelines capabilities spell it.
func osName() string {
	switch runtime.GOOS {
	case "linux":
		return "Linux"
	case "darwin":
		return "Darwin"
	case "windows":
		return "Windows_NT"
	}
	return runtime.GOOS
}

func osArchitecture() string {
	switch runtime.GOARCH {
	case "amd64":
		return "X64"
	case "386":
		return "X86"
	case "arm64":
		return "ARM64"
	case "arm":
		return "ARM"
	}
	return strings.ToUpper(runtime.GOARCH)
}

func osDescription() string {
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		return osName() + " " + strings.TrimSpace(string(b))
	}
	return osName()
}

func systemCapabilities(agentName, version string) map[string]string {
	caps := map[string]string{
		"Agent.Name":           agentName,
		"Agent.Version":        version,
		"Agent.OS":             osName(),
		"Agent.OSArchitecture": osArchitecture(),
		"Agent.ComputerName":   ownerName(),
	}
	if p, err := lookBash(); err == nil {
		caps["bash"] = p
	}
	return caps
}
