package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

// Server is the part of a protocol server the operator calls, with the
// pool-admin credential.
type Server interface {
	GetPoolByName(ctx context.Context, name string) (*pipelines.TaskAgentPool, error)
	ListJobRequests(ctx context.Context, poolID int) ([]pipelines.TaskAgentJobRequest, error)
	// WatchQueue long-polls the pool's queue (agentry-server only; others
	// answer 404).
	WatchQueue(ctx context.Context, poolID int, after int64, wait time.Duration) (*jobapi.QueueState, error)
	ListAgents(ctx context.Context, poolID int, name string) ([]pipelines.TaskAgent, error)
	// ListAgentsWithCapabilities lists the pool's agents with their
	// capabilities, to find the registrations the operator owns.
	ListAgentsWithCapabilities(ctx context.Context, poolID int) ([]pipelines.TaskAgent, error)
	// GetAgent reads one agent with the request assigned to it, if any.
	GetAgent(ctx context.Context, poolID, agentID int) (*pipelines.TaskAgent, error)
	AddAgent(ctx context.Context, poolID int, a pipelines.TaskAgent) (*pipelines.TaskAgent, error)
	ReplaceAgent(ctx context.Context, poolID int, a pipelines.TaskAgent) (*pipelines.TaskAgent, error)
	DeleteAgent(ctx context.Context, poolID, agentID int) error
}

// Connector returns a Server for the pool's server that authenticates with
// token.
type Connector func(spec agentryv1.ServerSpec, token string) Server

var (
	// serverTransport backs off, across all pools, from a server that asked
	// for it (Azure DevOps' rate limits).
	serverTransport = &rateLimitTransport{next: http.DefaultTransport, now: time.Now}
	// serverHTTP bounds every server call but the queue watch.
	serverHTTP = &http.Client{Timeout: 30 * time.Second, Transport: serverTransport}
	// watchHTTP carries the queue watch's long polls.
	watchHTTP = &http.Client{Timeout: queueWatchWait + 30*time.Second, Transport: serverTransport}
)

// Connect is the Connector for real servers: agentry-server or Azure DevOps.
func Connect(spec agentryv1.ServerSpec, token string) Server {
	var auth pipelines.Authorizer = pipelines.PersonalAccessToken(token)
	if spec.AuthType == agentryv1.AuthBearer {
		auth = pipelines.BearerToken(token)
	}
	c := pipelines.NewClient(spec.URL, auth, serverHTTP)
	c.UserAgent = "agentry-manager"
	w := *c
	w.HTTP = watchHTTP
	return &httpServer{Client: c, watch: jobapi.Client{Client: &w}}
}

// httpServer is a Server over HTTP.
type httpServer struct {
	*pipelines.Client
	watch jobapi.Client
}

func (s *httpServer) WatchQueue(ctx context.Context, poolID int, after int64, wait time.Duration) (*jobapi.QueueState, error) {
	return s.watch.WatchQueue(ctx, poolID, after, wait)
}

func (s *httpServer) GetAgent(ctx context.Context, poolID, agentID int) (*pipelines.TaskAgent, error) {
	var a pipelines.TaskAgent
	_, err := s.Do(ctx, http.MethodGet, fmt.Sprintf("/_apis/distributedtask/pools/%d/agents/%d", poolID, agentID),
		url.Values{"includeAssignedRequest": {"true"}}, nil, &a)
	return &a, err
}

func (s *httpServer) ListAgentsWithCapabilities(ctx context.Context, poolID int) ([]pipelines.TaskAgent, error) {
	var l pipelines.List[pipelines.TaskAgent]
	_, err := s.Do(ctx, http.MethodGet, fmt.Sprintf("/_apis/distributedtask/pools/%d/agents", poolID),
		url.Values{"includeCapabilities": {"true"}, "includeAssignedRequest": {"true"}}, nil, &l)
	return l.Value, err
}

// errNoCredentials means the pool's admin token could not be read.
var errNoCredentials = errors.New("pool credentials are not available")

// credentialsTTL is how long a pool's admin token, once read, is used
// without reading its Secret again: a burst of registrations reads it once,
// not once per agent, and a rotated token is in use within this long.
const credentialsTTL = 5 * time.Second

// credentials reads pools' admin tokens from their Secrets, from the API
// server (the manager neither lists nor watches Secrets), and keeps each in
// memory for ttl. A failed read is not kept.
type credentials struct {
	reader client.Reader
	ttl    time.Duration
	now    func() time.Time

	mu     sync.Mutex
	tokens map[credentialsKey]cachedToken
}

type credentialsKey struct{ namespace, name, key string }

type cachedToken struct {
	token  string
	readAt time.Time
}

func newCredentials(reader client.Reader, ttl time.Duration) *credentials {
	return &credentials{reader: reader, ttl: ttl, now: time.Now, tokens: map[credentialsKey]cachedToken{}}
}

// server connects to the pool's server with the pool's admin token.
func (c *credentials) server(ctx context.Context, connect Connector, pool *agentryv1.AgentPool) (Server, error) {
	token, err := c.token(ctx, pool)
	if err != nil {
		return nil, err
	}
	return connect(pool.Spec.Server, token), nil
}

// token returns the pool's admin token.
func (c *credentials) token(ctx context.Context, pool *agentryv1.AgentPool) (string, error) {
	ref := pool.Spec.Server.CredentialsSecretRef
	k := credentialsKey{namespace: pool.Namespace, name: ref.Name, key: ref.Key}
	if k.key == "" {
		k.key = agentryv1.DefaultCredentialsKey
	}
	now := c.now()
	c.mu.Lock()
	cached, ok := c.tokens[k]
	c.mu.Unlock()
	if ok && now.Sub(cached.readAt) < c.ttl {
		return cached.token, nil
	}
	var secret corev1.Secret
	if err := c.reader.Get(ctx, client.ObjectKey{Namespace: k.namespace, Name: k.name}, &secret); err != nil {
		c.forget(k)
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("%w: Secret %q not found", errNoCredentials, k.name)
		}
		return "", fmt.Errorf("reading Secret %q: %w", k.name, err)
	}
	token := strings.TrimSpace(string(secret.Data[k.key]))
	if token == "" {
		c.forget(k)
		return "", fmt.Errorf("%w: Secret %q has no key %q", errNoCredentials, k.name, k.key)
	}
	c.mu.Lock()
	c.tokens[k] = cachedToken{token: token, readAt: now}
	c.mu.Unlock()
	return token, nil
}

func (c *credentials) forget(k credentialsKey) {
	c.mu.Lock()
	delete(c.tokens, k)
	c.mu.Unlock()
}

// serverErrorReason classifies a failed server call for a condition's Reason.
func serverErrorReason(err error) string {
	var apiErr apierrors.APIStatus
	var limited *rateLimitedError
	switch status := pipelines.StatusCode(err); {
	case errors.Is(err, errNoCredentials):
		return "CredentialsNotFound"
	case errors.As(err, &apiErr):
		return "CredentialsUnreadable"
	case errors.As(err, &limited) || status == http.StatusTooManyRequests:
		return "RateLimited"
	case pipelines.IsTypeKey(err, pipelines.TypeKeyPoolNotFound):
		return "PoolNotFound"
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return "Unauthorized"
	case status != 0:
		return "ServerError"
	default:
		return "Unreachable"
	}
}
