package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// Run is the life of one agent: read the agent's files, get a listener
// token, open a session, wait for one job, run and report it, delete the
// session. It returns the job's Outcome (whatever the job's result) or an
// error that ExitCode maps to the process exit code. Canceling ctx while a
// job runs cancels the job like a JobCancellation would; it is still
// reported, and Run returns its Outcome.
func Run(ctx context.Context, cfg Config) (Outcome, error) {
	cfg = cfg.withDefaults()
	defer cfg.HTTPClient.CloseIdleConnections()
	log := cfg.Log
	if cfg.Dir == "" {
		return Outcome{}, fmt.Errorf("%w: no agent folder given (--dir or AGENTRY_AGENT_DIR)", ErrConfig)
	}
	if cfg.IdleTimeout < 0 {
		return Outcome{}, fmt.Errorf("%w: idle timeout %s is negative", ErrConfig, cfg.IdleTimeout)
	}
	files, err := pipelines.ReadAgentDir(cfg.Dir)
	if err != nil {
		return Outcome{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	key, err := files.Key.PrivateKey()
	if err != nil {
		return Outcome{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	work, cleanup, err := prepareWorkDir(cfg.WorkDir)
	if err != nil {
		return Outcome{}, fmt.Errorf("%w: work folder: %w", ErrConfig, err)
	}
	defer cleanup()
	dirs, err := makeWorkDirs(work)
	if err != nil {
		return Outcome{}, fmt.Errorf("%w: work folder: %w", ErrConfig, err)
	}

	s := files.Settings
	log = log.WithValues("agent", s.AgentName, "agentId", s.AgentID, "poolId", s.PoolID)
	cfg.Log = log
	l := newListener(cfg, files, key)

	log.Info("Getting a listener token", "server", s.ServerURL)
	if err := l.refreshToken(ctx); err != nil {
		return Outcome{}, stopped(ctx, err)
	}
	log.Info("Opening a session")
	if err := l.openSession(ctx); err != nil {
		return Outcome{}, stopped(ctx, err)
	}
	defer l.closeSession(ctx)

	log.Info("Waiting for a job", "idleTimeout", cfg.IdleTimeout)
	job, err := waitForJob(ctx, l, cfg.IdleTimeout)
	if err != nil {
		if job != nil && job.RequestID > 0 {
			// The job cannot run; say so rather than let its lock run out.
			if ferr := l.finish(context.WithoutCancel(ctx), job.RequestID, pipelines.ResultFailed); ferr != nil {
				log.Error(ferr, "Could not finish the unreadable job")
			}
		}
		return Outcome{}, stopped(ctx, err)
	}
	out := Outcome{JobID: job.JobID, RequestID: job.RequestID, JobName: job.JobDisplayName}
	log.Info("Running a job", "jobId", job.JobID, "requestId", job.RequestID, "steps", len(job.Steps))
	result, err := runJob(ctx, cfg, l, job, dirs)
	// The job token is not kept past the job.
	job.Resources.Endpoints = nil
	out.Result = result
	if err != nil {
		return out, err
	}
	log.Info("Job done", "jobId", out.JobID, "result", result)
	return out, nil
}

// stopped explains an error that came from ctx ending.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ErrIdleTimeout) {
		return fmt.Errorf("%w: %w", ErrStopped, context.Cause(ctx))
	}
	return err
}

// waitForJob polls until a job request arrives; other messages are
// acknowledged and ignored.
func waitForJob(ctx context.Context, l *listener, idle time.Duration) (*pipelines.AgentJobRequestMessage, error) {
	pollCtx := ctx
	if idle > 0 {
		var cancel context.CancelFunc
		pollCtx, cancel = context.WithTimeoutCause(ctx, idle, ErrIdleTimeout)
		defer cancel()
	}
	for {
		msg, err := l.nextMessage(pollCtx)
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case pollCtx.Err() != nil:
			return nil, fmt.Errorf("%w (%s)", ErrIdleTimeout, idle)
		case err != nil:
			return nil, err
		case msg == nil:
			continue
		}
		l.ack(ctx, msg)
		switch {
		case strings.EqualFold(msg.MessageType, pipelines.MessageTypeJobRequest):
			return DecodeJobMessage(msg, l.currentSessionKey())
		case strings.EqualFold(msg.MessageType, pipelines.MessageTypeJobCancellation):
			l.log.Info("Ignoring a cancellation: no job is running", "messageId", msg.MessageID)
		default:
			l.log.Info("Ignoring a message", "messageType", msg.MessageType, "messageId", msg.MessageID)
		}
	}
}

// prepareWorkDir returns the work folder and what to do on the way out: a
// given folder is created if needed and kept; otherwise a fresh temporary
// folder is made and removed.
func prepareWorkDir(dir string) (string, func(), error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", nil, err
		}
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "agentry-agent-")
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { _ = os.RemoveAll(tmp) }, nil
}
