// Package jobapi is agentry-server's user-facing job API, an agentry extension
// beside the Azure-compatible routes: queue a job, read its state and its log.
// The types are the JSON of the routes under /_apis/agentry; Client calls them.
package jobapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// Task names a step may use. CmdLine@2 is the default.
const (
	TaskCmdLine = "CmdLine@2"
	TaskBash    = "Bash@3"
)

// Step is one inline script step.
type Step struct {
	DisplayName string `json:"displayName,omitempty"`
	// Task is CmdLine@2 (default) or Bash@3.
	Task   string `json:"task,omitempty"`
	Script string `json:"script"`
}

// JobSpec is what a user queues.
type JobSpec struct {
	Pool             string                             `json:"pool"`
	Name             string                             `json:"name,omitempty"`
	Steps            []Step                             `json:"steps"`
	Demands          []string                           `json:"demands,omitempty"`
	Variables        map[string]pipelines.VariableValue `json:"variables,omitempty"`
	TimeoutInMinutes int                                `json:"timeoutInMinutes,omitempty"`
}

// Job states.
const (
	StateQueued    = "queued"    // waiting for an agent
	StateAssigned  = "assigned"  // delivered to an agent, not yet started
	StateRunning   = "running"   // the agent renewed its lock and is running steps
	StateCanceling = "canceling" // running; a cancellation was sent to its agent
	StateCompleted = "completed" // finished; Result says how
)

// Job is a queued job as the server reports it. ID is the job request id.
type Job struct {
	ID         int64                `json:"id"`
	JobID      string               `json:"jobId"`
	Pool       string               `json:"pool"`
	PoolID     int                  `json:"poolId"`
	Name       string               `json:"name"`
	State      string               `json:"state"`
	Result     pipelines.TaskResult `json:"result,omitempty"`
	Demands    []string             `json:"demands,omitempty"`
	QueueTime  *time.Time           `json:"queueTime,omitempty"`
	AssignTime *time.Time           `json:"assignTime,omitempty"`
	StartTime  *time.Time           `json:"startTime,omitempty"`
	FinishTime *time.Time           `json:"finishTime,omitempty"`
	AgentID    int                  `json:"agentId,omitempty"`
	AgentName  string               `json:"agentName,omitempty"`
	// TimeoutInMinutes is the job's time-out, 0 for none.
	TimeoutInMinutes int `json:"timeoutInMinutes,omitempty"`
	// Attempts counts how many times the job was handed to an agent; a job
	// whose agent vanishes before starting it is queued again, at most
	// three attempts in all.
	Attempts int `json:"attempts"`
	// CancelTime is when a cancellation was asked for.
	CancelTime *time.Time `json:"cancelTime,omitempty"`
}

// Routes of the job API.
const (
	JobsPath = "/_apis/agentry/jobs"
)

// Client calls the job API with an admin token.
type Client struct {
	*pipelines.Client
}

// QueueJob queues a job and returns it as stored.
func (c Client) QueueJob(ctx context.Context, spec JobSpec) (*Job, error) {
	var j Job
	_, err := c.Do(ctx, http.MethodPost, JobsPath, nil, spec, &j)
	return &j, err
}

// GetJob reads one job.
func (c Client) GetJob(ctx context.Context, id int64) (*Job, error) {
	var j Job
	_, err := c.Do(ctx, http.MethodGet, JobsPath+"/"+strconv.FormatInt(id, 10), nil, nil, &j)
	return &j, err
}

// ListJobs lists jobs, optionally of one pool and in one state.
func (c Client) ListJobs(ctx context.Context, pool, state string) ([]Job, error) {
	q := url.Values{}
	if pool != "" {
		q.Set("pool", pool)
	}
	if state != "" {
		q.Set("state", state)
	}
	var l pipelines.List[Job]
	_, err := c.Do(ctx, http.MethodGet, JobsPath, q, nil, &l)
	return l.Value, err
}

// JobLog returns the job's stored log as text.
func (c Client) JobLog(ctx context.Context, id int64) (string, error) {
	var buf bytes.Buffer
	_, err := c.Do(ctx, http.MethodGet, JobsPath+"/"+strconv.FormatInt(id, 10)+"/log", nil, nil, &buf)
	return buf.String(), err
}

// CancelJob cancels a job: a job not yet started ends canceled at once; a
// running one is asked to stop (state canceling) and ends when its agent
// reports, or abandoned if it does not within the server's cancel timeout.
func (c Client) CancelJob(ctx context.Context, id int64) (*Job, error) {
	var j Job
	_, err := c.Do(ctx, http.MethodPost, JobsPath+"/"+strconv.FormatInt(id, 10)+"/cancel", nil, nil, &j)
	return &j, err
}

// FollowJobLog writes the job's log to w as it grows, until the job
// finishes or ctx ends. The client's HTTP timeout must allow for the job's
// length.
func (c Client) FollowJobLog(ctx context.Context, id int64, w io.Writer) error {
	_, err := c.Do(ctx, http.MethodGet, JobsPath+"/"+strconv.FormatInt(id, 10)+"/log", url.Values{"follow": {"true"}}, nil, w)
	return err
}

// QueuePath is the queue watch, an agentry extension: a long-poll on a pool's
// unfinished job requests that answers as soon as the set changes.
//
//	GET /_apis/agentry/pools/{poolId}/queue?after=REVISION&wait=SECONDS
//
// It answers at once when the pool's queue revision is greater than after
// (or after is absent), otherwise when the queue changes or wait (default
// 30, at most 60) seconds pass, with the same revision. Admin token.
const QueuePath = "/_apis/agentry/pools/%d/queue"

// QueueState is the answer of the queue watch: every job request of the pool
// that has not finished, the finished ones whose agent is still registered,
// and the revision to pass as after next time.
type QueueState struct {
	Revision    int64                           `json:"revision"`
	JobRequests []pipelines.TaskAgentJobRequest `json:"jobRequests"`
}

// WatchQueue long-polls the pool's queue. A server that does not have the
// watch (Azure DevOps) answers 404; callers then poll jobrequests instead.
func (c Client) WatchQueue(ctx context.Context, poolID int, after int64, wait time.Duration) (*QueueState, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if wait > 0 {
		q.Set("wait", strconv.Itoa(int(wait.Seconds())))
	}
	var s QueueState
	_, err := c.Do(ctx, http.MethodGet, fmt.Sprintf(QueuePath, poolID), q, nil, &s)
	return &s, err
}
