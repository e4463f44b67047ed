package server_test

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/servertest"
)

// testAgent plays the agent's side of the protocol with pipelines.Client,
// the way agentry-agent does.
type testAgent struct {
	files      pipelines.AgentFiles
	key        *rsa.PrivateKey
	client     *pipelines.Client // listener token
	session    *pipelines.TaskAgentSession
	sessionKey []byte
}

func newTestAgent(t *testing.T, inst *servertest.Instance, pool, name string) *testAgent {
	t.Helper()
	return agentFromFiles(t, inst.RegisterAgent(t, pool, name))
}

func agentFromFiles(t *testing.T, files pipelines.AgentFiles) *testAgent {
	t.Helper()
	key, err := files.Key.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &testAgent{files: files, key: key, client: pipelines.NewClient(files.Settings.ServerURL, nil, nil)}
}

func (a *testAgent) assertion(t *testing.T, now time.Time) string {
	t.Helper()
	s, err := agentcrypto.NewClientAssertion(a.key, a.files.Credentials.Data.ClientID, a.files.Credentials.Data.AuthorizationURL, now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// login trades an assertion for a listener token and uses it from now on.
func (a *testAgent) login(t *testing.T) {
	t.Helper()
	tok, err := a.client.GetListenerToken(context.Background(), a.files.Credentials.TokenURL(), a.assertion(t, time.Now()))
	if err != nil {
		t.Fatalf("getting a listener token: %v", err)
	}
	if tok.TokenType != "Bearer" || tok.ExpiresIn <= 0 {
		t.Errorf("token answer = %+v, want a Bearer token with a lifetime", tok)
	}
	a.client = a.client.WithAuth(pipelines.BearerToken(tok.AccessToken))
}

// openSession opens a session and unwraps its key with the private key.
func (a *testAgent) openSession(t *testing.T, fips bool) {
	t.Helper()
	s, err := a.client.CreateSession(context.Background(), a.files.Settings.PoolID, pipelines.TaskAgentSession{
		SessionID: "00000000-0000-0000-0000-000000000000", OwnerName: "test",
		Agent:             pipelines.TaskAgentReference{ID: a.files.Settings.AgentID, Name: a.files.Settings.AgentName},
		UseFipsEncryption: fips,
	})
	if err != nil {
		t.Fatalf("creating a session: %v", err)
	}
	if s.EncryptionKey == nil || !s.EncryptionKey.Encrypted {
		t.Fatalf("session key = %+v, want a wrapped key", s.EncryptionKey)
	}
	key, err := agentcrypto.UnwrapKey(a.key, s.EncryptionKey.Value, fips)
	if err != nil {
		t.Fatalf("unwrapping the session key: %v", err)
	}
	a.session, a.sessionKey = s, key
}

func (a *testAgent) connect(t *testing.T) *testAgent {
	t.Helper()
	a.login(t)
	a.openSession(t, false)
	return a
}

func (a *testAgent) poll(t *testing.T) *pipelines.TaskAgentMessage {
	t.Helper()
	m, err := a.client.GetMessage(context.Background(), a.files.Settings.PoolID, a.session.SessionID, 0)
	if err != nil {
		t.Fatalf("polling: %v", err)
	}
	return m
}

// decrypt opens a message body with the session key.
func (a *testAgent) decrypt(t *testing.T, m *pipelines.TaskAgentMessage) []byte {
	t.Helper()
	if len(m.IV) != 16 {
		t.Fatalf("message IV is %d bytes, want 16", len(m.IV))
	}
	ct, err := base64.StdEncoding.DecodeString(m.Body)
	if err != nil {
		t.Fatalf("message body is not base64: %v", err)
	}
	pt, err := agentcrypto.Decrypt(a.sessionKey, m.IV, ct)
	if err != nil {
		t.Fatalf("decrypting the message: %v", err)
	}
	return pt
}

func (a *testAgent) job(t *testing.T, m *pipelines.TaskAgentMessage) *pipelines.AgentJobRequestMessage {
	t.Helper()
	if m == nil {
		t.Fatal("no message, want a job")
	}
	if m.MessageType != pipelines.MessageTypeJobRequest {
		t.Fatalf("message type %q, want %q", m.MessageType, pipelines.MessageTypeJobRequest)
	}
	var job pipelines.AgentJobRequestMessage
	if err := json.Unmarshal(bytes.TrimPrefix(a.decrypt(t, m), []byte{0xEF, 0xBB, 0xBF}), &job); err != nil {
		t.Fatalf("job message is not JSON: %v", err)
	}
	return &job
}

// jobClient is a client with the job's token, for its reporting routes.
func jobClient(t *testing.T, job *pipelines.AgentJobRequestMessage) *pipelines.Client {
	t.Helper()
	u, tok, ok := job.JobToken()
	if !ok {
		t.Fatal("the job message has no SystemVssConnection token")
	}
	return pipelines.NewClient(u, pipelines.BearerToken(tok), nil)
}

// wantAPIError checks err is a server error with that status and typeKey.
func wantAPIError(t *testing.T, err error, status int, typeKey string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %d %s", status, typeKey)
	}
	if got := pipelines.StatusCode(err); got != status || !pipelines.IsTypeKey(err, typeKey) {
		t.Fatalf("error %v: want status %d and typeKey %s", err, status, typeKey)
	}
}
