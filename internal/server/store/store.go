// Package store is agentry-server's state: pools, agents, listener tokens,
// sessions, job requests, agent messages and what agents report about a job
// (timeline records, feed lines, logs).
//
// Store is the seam between the HTTP server and the storage engine. Every
// method is keyed by ids, takes and returns plain values (never a pointer into
// the store's own memory), and is atomic on its own: the methods that decide
// something under concurrency (AssignJob, NextMessage, DeleteAgent,
// FinishJob, CreateSession) are compare-and-set operations that map onto one
// SQL transaction each (in SQLite, a savepoint of a transaction several
// writes share, which behaves the same). Memory is the in-process
// implementation, SQLite the durable one (the server's default); both pass
// the same conformance suite (package storetest).
//
// Tokens are stored only as hashes (see the server's hashToken). The one
// exception is a job message waiting for its agent to acknowledge it: its
// body carries the job token until the agent deletes the message.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

// Errors a Store returns; callers classify with errors.Is.
var (
	// ErrNotFound: no object with that id (or key).
	ErrNotFound = errors.New("not found")
	// ErrExists: an object with that name already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict: the object is not in the state the operation needs (a job
	// already taken or finished, an agent's live session).
	ErrConflict = errors.New("conflict")
	// ErrTooLarge: the operation would exceed a per-job limit.
	ErrTooLarge = errors.New("limit exceeded")
)

// Limits every Store enforces per job.
const (
	MaxTimelineRecords = 1000
	MaxFeedLines       = 100_000
	MaxLogsPerJob      = 1000
	MaxLogBytesPerJob  = 256 << 20
	// MaxJobAttempts is how many times a job may be assigned to an agent: a
	// job whose agent vanishes before starting it goes back to the queue
	// until it has had this many attempts, then it is abandoned.
	MaxJobAttempts = 3
)

// Pool is an agent pool.
type Pool struct {
	ID        int
	Name      string
	CreatedOn time.Time
}

// Agent is a registered agent.
type Agent struct {
	ID                 int
	PoolID             int
	Name               string
	Version            string
	OSDescription      string
	Enabled            bool
	MaxParallelism     int
	ProvisioningState  string
	ClientID           string
	AuthorizationURL   string
	PublicKey          agentcrypto.PublicKey
	SystemCapabilities map[string]string
	UserCapabilities   map[string]string
	CreatedOn          time.Time
	// RequestID is the job request the agent took, 0 if none. An agent
	// takes at most one job in its life.
	RequestID int64
}

// ListenerToken is an agent's listener OAuth token, by hash.
type ListenerToken struct {
	Hash      string
	AgentID   int
	ExpiresAt time.Time
}

// Session is an agent's listener session and its AES-256 session key.
type Session struct {
	ID                string
	AgentID           int
	PoolID            int
	OwnerName         string
	Key               []byte
	UseFipsEncryption bool
	CreatedOn         time.Time
	// LastSeen is the last time the agent used the session; a session not
	// seen for the server's idle timeout may be replaced by a new one.
	LastSeen time.Time
}

// Job is a job request and its lifecycle. Zero times are unset.
type Job struct {
	RequestID  int64
	PoolID     int
	PoolName   string
	JobID      string
	PlanID     string
	TimelineID string
	Name       string
	Spec       jobapi.JobSpec
	QueueTime  time.Time
	// AssignTime is when the job was handed to an agent, ReceiveTime when the
	// agent first received it in a message, StartTime when it first renewed
	// its lock.
	AssignTime  time.Time
	ReceiveTime time.Time
	StartTime   time.Time
	FinishTime  time.Time
	LockedUntil time.Time
	// Result is set exactly when FinishTime is.
	Result    pipelines.TaskResult
	AgentID   int
	AgentName string
	// TokenHash is the hash of the job token, set on assignment.
	TokenHash string
	// Attempts counts the job's assignments to an agent (AssignJob adds one).
	Attempts int
	// CancelTime is when a cancellation of the running job was asked for
	// (CancelJob); the job is finished when its agent reports.
	CancelTime time.Time
}

// Finished reports whether the job has a result.
func (j Job) Finished() bool { return !j.FinishTime.IsZero() }

// Message is one message in an agent's queue. Body is plain JSON; the server
// encrypts it with the current session key each time it delivers it.
type Message struct {
	ID      int64
	AgentID int
	Type    string
	Body    []byte
	// RequestID is the job the message carries, 0 if none.
	RequestID int64
}

// Assignment hands a queued job to an agent together with the message that
// carries it.
type Assignment struct {
	RequestID   int64
	AgentID     int
	TokenHash   string
	LockedUntil time.Time
	MessageType string
	MessageBody []byte
	Now         time.Time
}

// AgentDeletion says what deleting an agent did to the job it held.
type AgentDeletion struct {
	// Requeued is the job that went back to the queue because the agent had
	// never received it; Abandoned the one it had received and not finished.
	Requeued  int64
	Abandoned int64
	// Held is the job the agent had taken, finished or not, 0 if none: the
	// queue watch lists it while the agent is registered.
	Held int64
}

// AdminToken is a named admin credential (a personal access token). Only
// the SHA-256 hash of the token is stored.
type AdminToken struct {
	ID        int64
	Name      string
	Hash      string
	CreatedOn time.Time
	// ExpiresAt is zero for a token that does not expire.
	ExpiresAt time.Time
	// RevokedAt is zero for a token that has not been revoked.
	RevokedAt time.Time
}

// Revoked reports whether the token has been revoked.
func (t AdminToken) Revoked() bool { return !t.RevokedAt.IsZero() }

// Valid reports whether the token may be used at now: not revoked and not
// expired.
func (t AdminToken) Valid(now time.Time) bool {
	return !t.Revoked() && (t.ExpiresAt.IsZero() || now.Before(t.ExpiresAt))
}

// JobFilter selects jobs; zero fields select all.
type JobFilter struct {
	PoolID int
	// Queued selects only jobs neither assigned nor finished.
	Queued bool
	// Unfinished selects only jobs without a result.
	Unfinished bool
	// OrHeld, with Unfinished, also selects the finished jobs whose agent
	// is still registered: the one job such an agent ran, until the agent
	// is deleted. It tells a scaler which live agents are spent.
	OrHeld bool
	// Finished, with Unfinished, also selects up to this many finished
	// jobs: those with the highest request ids, the latest queued. A list
	// of a pool's requests then shows its recent history without growing
	// with every job it ever ran.
	Finished int
	// Brief leaves each job's Spec empty but for its Demands: enough to
	// show a job in a list or match it to an agent, not to run it. It
	// spares the store decoding every spec of a list.
	Brief bool
}

// Store is agentry-server's state. See the package comment for its rules.
type Store interface {
	// CreatePool adds a pool; ErrExists if the name (any case) is taken.
	CreatePool(ctx context.Context, name string, now time.Time) (Pool, error)
	GetPool(ctx context.Context, id int) (Pool, error)
	// ListPools returns all pools by id.
	ListPools(ctx context.Context) ([]Pool, error)

	// CreateAgent adds an agent and assigns its ID; ErrExists if the pool
	// has an agent of that name (any case); ErrNotFound if the pool is gone.
	CreateAgent(ctx context.Context, a Agent) (Agent, error)
	// ReplaceAgent overwrites an agent's registration (name, version, key,
	// capabilities, ...). ID, PoolID, ClientID, AuthorizationURL, CreatedOn
	// and RequestID are kept from the stored agent.
	ReplaceAgent(ctx context.Context, a Agent) (Agent, error)
	// SetSystemCapabilities replaces an agent's system capabilities.
	SetSystemCapabilities(ctx context.Context, agentID int, caps map[string]string) error
	GetAgent(ctx context.Context, id int) (Agent, error)
	GetAgentByClientID(ctx context.Context, clientID string) (Agent, error)
	// ListAgents returns a pool's agents by id.
	ListAgents(ctx context.Context, poolID int) ([]Agent, error)
	// CountAgents returns how many agents a pool has (0 for a pool that
	// does not exist).
	CountAgents(ctx context.Context, poolID int) (int, error)
	// DeleteAgent removes an agent with its tokens, sessions and messages. A
	// job it started (renewed) and had not finished becomes abandoned; one
	// it was assigned but never started goes back to the queue, or is
	// abandoned when it has had MaxJobAttempts attempts.
	DeleteAgent(ctx context.Context, id int, now time.Time) (AgentDeletion, error)

	// PutListenerToken stores a token and drops the agent's tokens that
	// expired before now.
	PutListenerToken(ctx context.Context, t ListenerToken, now time.Time) error
	GetListenerToken(ctx context.Context, hash string) (ListenerToken, error)
	// DeleteListenerTokens revokes every listener token of an agent.
	DeleteListenerTokens(ctx context.Context, agentID int) error

	// CreateSession opens a session. ErrConflict if the agent has another
	// session last seen at or after staleBefore; older ones are replaced.
	CreateSession(ctx context.Context, s Session, staleBefore time.Time) (Session, error)
	GetSession(ctx context.Context, id string) (Session, error)
	// GetAgentSession returns the agent's session, if it has one.
	GetAgentSession(ctx context.Context, agentID int) (Session, error)
	TouchSession(ctx context.Context, id string, now time.Time) error
	DeleteSession(ctx context.Context, id string) error

	// CreateJob queues a job and assigns its RequestID; ErrNotFound if the
	// pool is gone.
	CreateJob(ctx context.Context, j Job) (Job, error)
	GetJob(ctx context.Context, requestID int64) (Job, error)
	GetJobByTokenHash(ctx context.Context, hash string) (Job, error)
	// ListJobs returns jobs by RequestID.
	ListJobs(ctx context.Context, f JobFilter) ([]Job, error)
	// AssignJob hands a queued job to an agent and queues the message that
	// carries it, atomically, and adds one to the job's Attempts. ErrConflict
	// if the job is no longer queued or the agent already took a job.
	AssignJob(ctx context.Context, a Assignment) (Job, error)
	// RenewJob extends the lock of a job assigned to agentID and records its
	// start the first time. A finished job is returned unchanged. ErrNotFound
	// if the job is not this agent's.
	RenewJob(ctx context.Context, requestID int64, agentID int, lockedUntil, now time.Time) (Job, error)
	// FinishJob sets a job's result. ErrConflict (with the stored job) if it
	// had already finished.
	FinishJob(ctx context.Context, requestID int64, result pipelines.TaskResult, now time.Time) (Job, error)
	// CancelJob cancels a job, atomically. A job not yet started (queued,
	// or assigned and never renewed) is finished as canceled at once and its
	// messages dropped. For a started job it records CancelTime (the first
	// time only) and queues cancel (its Type and Body; ID and AgentID are
	// set here) for the job's agent; the job finishes when the agent
	// reports. ErrConflict (with the stored job) if it had already finished.
	CancelJob(ctx context.Context, requestID int64, cancel Message, now time.Time) (Job, error)
	// RequeueJob takes back a job assigned to agentID that the agent never
	// started: the job's messages are dropped, the agent is free to take a
	// job again, and the job is queued again (assignment, receive time, lock
	// and token cleared) or, when it has had MaxJobAttempts attempts,
	// finished as abandoned. ErrConflict if the job is not in that state.
	RequeueJob(ctx context.Context, requestID int64, agentID int, now time.Time) (Job, error)

	// NextMessage returns the agent's oldest message not yet deleted, and
	// marks the job it carries as received. ErrNotFound when there is none.
	NextMessage(ctx context.Context, agentID int, now time.Time) (Message, error)
	// DeleteMessage acknowledges a message; deleting a missing one is not
	// an error.
	DeleteMessage(ctx context.Context, agentID int, messageID int64) error

	// UpdateTimelineRecords merges records into the job's timeline (see
	// MergeTimelineRecord) and returns them as stored.
	UpdateTimelineRecords(ctx context.Context, requestID int64, records []pipelines.TimelineRecord, now time.Time) ([]pipelines.TimelineRecord, error)
	ListTimelineRecords(ctx context.Context, requestID int64) ([]pipelines.TimelineRecord, error)
	// AppendFeed keeps live console lines; lines past MaxFeedLines are dropped.
	AppendFeed(ctx context.Context, requestID int64, lines []string) error
	// CreateLog creates an empty log; ids count from 1 per job.
	CreateLog(ctx context.Context, requestID int64, path string, now time.Time) (pipelines.TaskLog, error)
	// AppendLog appends to a log; ErrNotFound if the log does not exist,
	// ErrTooLarge past MaxLogBytesPerJob.
	AppendLog(ctx context.Context, requestID int64, logID int, data []byte, now time.Time) (pipelines.TaskLog, error)
	// JobLog is the job's log for users: the uploaded logs in the order they
	// were created or, while there are none, the feed lines.
	JobLog(ctx context.Context, requestID int64) ([]byte, error)

	// CreateAdminToken stores a token and assigns its ID. ErrExists if a
	// token that is not revoked has the name (any case), or any token has
	// the hash.
	CreateAdminToken(ctx context.Context, t AdminToken) (AdminToken, error)
	// GetAdminTokenByHash finds a token, revoked and expired ones included.
	GetAdminTokenByHash(ctx context.Context, hash string) (AdminToken, error)
	// ListAdminTokens returns every token by ID, revoked ones included.
	ListAdminTokens(ctx context.Context) ([]AdminToken, error)
	// RevokeAdminToken revokes a token; revoking it again keeps the first
	// revocation time. ErrNotFound if there is no such token.
	RevokeAdminToken(ctx context.Context, id int64, now time.Time) (AdminToken, error)
}
