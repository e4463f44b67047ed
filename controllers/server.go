package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

// Server is the part of a protocol server the operator calls, with the
// pool-admin credential.
type Server interface {
	GetPoolByName(ctx context.Context, name string) (*pipelines.TaskAgentPool, error)
	ListJobRequests(ctx context.Context, poolID int) ([]pipelines.TaskAgentJobRequest, error)
	ListAgents(ctx context.Context, poolID int, name string) ([]pipelines.TaskAgent, error)
	AddAgent(ctx context.Context, poolID int, a pipelines.TaskAgent) (*pipelines.TaskAgent, error)
	ReplaceAgent(ctx context.Context, poolID int, a pipelines.TaskAgent) (*pipelines.TaskAgent, error)
	DeleteAgent(ctx context.Context, poolID, agentID int) error
}

// Connector returns a Server for url that authenticates with token.
type Connector func(url, token string) Server

// serverHTTP bounds every server call; the operator makes no long polls.
var serverHTTP = &http.Client{Timeout: 30 * time.Second}

// Connect is the Connector for real servers: agentry-server or Azure DevOps.
// The token is sent as HTTP Basic with an empty user, which both accept.
func Connect(url, token string) Server {
	c := pipelines.NewClient(url, pipelines.PersonalAccessToken(token), serverHTTP)
	c.UserAgent = "agentry-manager"
	return c
}

// errNoCredentials means the pool's admin token could not be read.
var errNoCredentials = errors.New("pool credentials are not available")

// serverFor reads the pool's admin token from its Secret and connects to the
// pool's server. The Secret is read from the API server, not a cache, and the
// token lives no longer than the returned Server.
func serverFor(ctx context.Context, reader client.Reader, connect Connector, pool *agentryv1.AgentPool) (Server, error) {
	ref := pool.Spec.Server.CredentialsSecretRef
	key := ref.Key
	if key == "" {
		key = agentryv1.DefaultCredentialsKey
	}
	var secret corev1.Secret
	if err := reader.Get(ctx, client.ObjectKey{Namespace: pool.Namespace, Name: ref.Name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: Secret %q not found", errNoCredentials, ref.Name)
		}
		return nil, fmt.Errorf("reading Secret %q: %w", ref.Name, err)
	}
	token := string(secret.Data[key])
	if token == "" {
		return nil, fmt.Errorf("%w: Secret %q has no key %q", errNoCredentials, ref.Name, key)
	}
	return connect(pool.Spec.Server.URL, token), nil
}

// serverErrorReason classifies a failed server call for a condition's Reason.
func serverErrorReason(err error) string {
	var apiErr apierrors.APIStatus
	switch status := pipelines.StatusCode(err); {
	case errors.Is(err, errNoCredentials):
		return "CredentialsNotFound"
	case errors.As(err, &apiErr):
		return "CredentialsUnreadable"
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
