// Package servertest starts a real agentry-server in process for other
// packages' tests: a real TCP listener on 127.0.0.1, a real http.Server, a
// temporary data folder, admin and job API clients, and helpers to create
// pools, register agents and wait for jobs. Everything is cleaned up with
// t.Cleanup. Agent is a minimal protocol-speaking agent for tests that need
// a job run without the real agent.
package servertest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server"
)

// Instance is a running server.
type Instance struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:41234.
	URL string
	// AdminToken is the pool-admin token.
	AdminToken string
	// DataDir is the server's (temporary) data folder.
	DataDir string
	Server  *server.Server
	// Admin calls the pool-admin routes with the admin token (as a PAT).
	Admin *pipelines.Client
	// Jobs calls the job API with the admin token.
	Jobs jobapi.Client
}

// Option changes how Start configures the server.
type Option func(*server.Config)

// WithLongPoll sets how long GET …/messages holds before answering 202.
func WithLongPoll(d time.Duration) Option { return func(c *server.Config) { c.LongPoll = d } }

// WithLogger sends the server's logs to l instead of the test log.
func WithLogger(l logr.Logger) Option { return func(c *server.Config) { c.Log = l } }

// WithConfig changes any other field of the server's configuration.
func WithConfig(f func(*server.Config)) Option { return Option(f) }

// Start runs a server until the test ends. Its logs go to the test log.
func Start(t testing.TB, opts ...Option) *Instance {
	t.Helper()
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{AdminToken: "admin-" + hex.EncodeToString(tok), Log: testr.NewWithInterface(t, testr.Options{})}
	for _, o := range opts {
		o(&cfg)
	}
	dir := t.TempDir()
	if err := server.InitDataDir(dir); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatalf("starting agentry-server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("agentry-server stopped with: %v", err)
		}
	})
	url := "http://" + ln.Addr().String()
	admin := pipelines.NewClient(url, pipelines.PersonalAccessToken(cfg.AdminToken), nil)
	return &Instance{
		URL: url, AdminToken: cfg.AdminToken, DataDir: dir, Server: srv,
		Admin: admin, Jobs: jobapi.Client{Client: admin},
	}
}

// CreatePool creates a pool.
func (i *Instance) CreatePool(t testing.TB, name string) pipelines.TaskAgentPool {
	t.Helper()
	p, err := i.Admin.AddPool(context.Background(), name)
	if err != nil {
		t.Fatalf("creating pool %q: %v", name, err)
	}
	return *p
}

// RegisterAgent makes a key, registers an agent with it in the named pool
// (capabilities Agent.OS and Agent.Name) and returns the three agent files,
// ready for pipelines.WriteAgentDir.
func (i *Instance) RegisterAgent(t testing.TB, poolName, agentName string) pipelines.AgentFiles {
	t.Helper()
	return i.RegisterAgentWith(t, poolName, pipelines.TaskAgent{Name: agentName})
}

// RegisterAgentWith is RegisterAgent for a registration with more fields set
// (capabilities, version, …); the key is always made here.
func (i *Instance) RegisterAgentWith(t testing.TB, poolName string, a pipelines.TaskAgent) pipelines.AgentFiles {
	t.Helper()
	ctx := context.Background()
	p, err := i.Admin.GetPoolByName(ctx, poolName)
	if err != nil {
		t.Fatalf("finding pool %q: %v", poolName, err)
	}
	key, err := agentcrypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := agentcrypto.PublicKeyOf(&key.PublicKey)
	if a.Version == "" {
		a.Version = "4.255.0"
	}
	if a.MaxParallelism == 0 {
		a.MaxParallelism = 1
	}
	if a.SystemCapabilities == nil {
		a.SystemCapabilities = map[string]string{"Agent.OS": "Linux", "Agent.Name": a.Name}
	}
	a.ProvisioningState = "Provisioned"
	a.Authorization = &pipelines.TaskAgentAuthorization{PublicKey: &pub}
	got, err := i.Admin.AddAgent(ctx, p.ID, a)
	if err != nil {
		t.Fatalf("registering agent %q: %v", a.Name, err)
	}
	return pipelines.AgentFiles{
		Settings: pipelines.AgentSettings{
			AgentID: got.ID, AgentName: got.Name, PoolID: p.ID, PoolName: p.Name, ServerURL: i.URL, WorkFolder: "_work",
		},
		Credentials: pipelines.Credentials{Scheme: "OAuth", Data: pipelines.CredentialData{
			ClientID: got.Authorization.ClientID, AuthorizationURL: got.Authorization.AuthorizationURL,
			OAuthEndpointURL: got.Authorization.AuthorizationURL,
		}},
		Key: agentcrypto.ParametersOf(key),
	}
}

// WaitJob waits until the job is completed and returns it; it fails the
// test after timeout.
func (i *Instance) WaitJob(t testing.TB, id int64, timeout time.Duration) *jobapi.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last *jobapi.Job
	for {
		j, err := i.Jobs.GetJob(ctx, id)
		if err == nil {
			last = j
			if j.State == jobapi.StateCompleted {
				return j
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %d not completed after %v; last seen %+v (err %v)", id, timeout, last, err)
			return nil
		case <-tick.C:
		}
	}
}

// Agent is a minimal agent for tests of the server's users: it speaks just
// enough of the protocol to take a job and report a result. The real agent
// is package agent.
type Agent struct {
	Files pipelines.AgentFiles
	// Listener calls the listener routes with the agent's listener token.
	Listener   *pipelines.Client
	SessionID  string
	sessionKey []byte
}

// Connect trades a client assertion for a listener token and opens a
// session, as an agent does when it starts.
func Connect(t testing.TB, files pipelines.AgentFiles) *Agent {
	t.Helper()
	ctx := context.Background()
	key, err := files.Key.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := pipelines.NewClient(files.Settings.ServerURL, nil, nil)
	assertion, err := agentcrypto.NewClientAssertion(key, files.Credentials.Data.ClientID, files.Credentials.TokenURL(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.GetListenerToken(ctx, files.Credentials.TokenURL(), assertion)
	if err != nil {
		t.Fatalf("getting a listener token: %v", err)
	}
	c = c.WithAuth(pipelines.BearerToken(tok.AccessToken))
	s, err := c.CreateSession(ctx, files.Settings.PoolID, pipelines.TaskAgentSession{
		OwnerName: "servertest",
		Agent:     pipelines.TaskAgentReference{ID: files.Settings.AgentID, Name: files.Settings.AgentName},
	})
	if err != nil {
		t.Fatalf("creating a session: %v", err)
	}
	if s.EncryptionKey == nil {
		t.Fatal("the session has no key")
	}
	sk, err := agentcrypto.UnwrapKey(key, s.EncryptionKey.Value, false)
	if err != nil {
		t.Fatal(err)
	}
	return &Agent{Files: files, Listener: c, SessionID: s.SessionID, sessionKey: sk}
}

// NextJob polls until a job message arrives (failing the test after
// timeout), acknowledges it and returns the decrypted job.
func (a *Agent) NextJob(t testing.TB, timeout time.Duration) *pipelines.AgentJobRequestMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		m, err := a.Listener.GetMessage(ctx, a.Files.Settings.PoolID, a.SessionID, 0)
		if err != nil {
			t.Fatalf("polling for a job: %v", err)
		}
		if m == nil || m.MessageType != pipelines.MessageTypeJobRequest {
			continue
		}
		if err := a.Listener.DeleteMessage(ctx, a.Files.Settings.PoolID, a.SessionID, m.MessageID); err != nil {
			t.Fatal(err)
		}
		ct, err := base64.StdEncoding.DecodeString(m.Body)
		if err != nil {
			t.Fatal(err)
		}
		body, err := agentcrypto.Decrypt(a.sessionKey, m.IV, ct)
		if err != nil {
			t.Fatal(err)
		}
		var job pipelines.AgentJobRequestMessage
		if err := json.Unmarshal(body, &job); err != nil {
			t.Fatalf("decoding the job message: %v", err)
		}
		return &job
	}
}

// Complete reports a job as an agent that ran it would: renews the lock,
// marks the job record in progress, uploads log as the job's log, marks the
// record completed and raises JobCompleted with result.
func (a *Agent) Complete(t testing.TB, job *pipelines.AgentJobRequestMessage, result pipelines.TaskResult, log string) {
	t.Helper()
	ctx := context.Background()
	if _, err := a.Listener.RenewJobRequest(ctx, a.Files.Settings.PoolID, job.RequestID); err != nil {
		t.Fatalf("renewing the job request: %v", err)
	}
	u, tok, ok := job.JobToken()
	if !ok {
		t.Fatal("the job message has no job token")
	}
	jc := pipelines.NewClient(u, pipelines.BearerToken(tok), nil)
	now := time.Now().UTC()
	inProgress, completed := pipelines.StateInProgress, pipelines.StateCompleted
	rec := pipelines.TimelineRecord{ID: job.JobID, Type: "Job", Name: job.JobDisplayName, StartTime: &now, State: &inProgress}
	if err := jc.UpdateTimelineRecords(ctx, job.Plan, job.Timeline.ID, []pipelines.TimelineRecord{rec}); err != nil {
		t.Fatalf("updating the timeline: %v", err)
	}
	l, err := jc.CreateLog(ctx, job.Plan, "logs/job.log")
	if err != nil {
		t.Fatalf("creating the log: %v", err)
	}
	if err := jc.UploadLog(ctx, job.Plan, l.ID, strings.NewReader(log)); err != nil {
		t.Fatalf("uploading the log: %v", err)
	}
	rec.State, rec.Result, rec.Log = &completed, &result, &pipelines.TaskLogReference{ID: l.ID}
	if err := jc.UpdateTimelineRecords(ctx, job.Plan, job.Timeline.ID, []pipelines.TimelineRecord{rec}); err != nil {
		t.Fatalf("updating the timeline: %v", err)
	}
	if err := jc.RaisePlanEvent(ctx, job.Plan, pipelines.JobEvent{
		Name: pipelines.JobCompletedEvent, JobID: job.JobID, RequestID: job.RequestID, Result: result,
	}); err != nil {
		t.Fatalf("raising JobCompleted: %v", err)
	}
}

// Close deletes the agent's session.
func (a *Agent) Close(t testing.TB) {
	t.Helper()
	if err := a.Listener.DeleteSession(context.Background(), a.Files.Settings.PoolID, a.SessionID); err != nil {
		t.Errorf("deleting the session: %v", err)
	}
}
