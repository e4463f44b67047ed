package server

import (
	"context"
	"errors"
	"time"

	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// sweepAction is what the sweeper does with an unfinished job.
type sweepAction int

const (
	keepJob    sweepAction = iota
	requeueJob             // its agent will not run it: queue it again
	abandonJob             // its agent stopped reporting: finish it as abandoned
	cancelJob              // it ran past its time-out: ask its agent to stop
)

func (a sweepAction) String() string {
	return [...]string{"keep", "requeue", "abandon", "cancel"}[a]
}

// sweepPolicy holds the durations the sweeper decides by.
type sweepPolicy struct {
	// LockGrace is how long past lockedUntil an unrenewed lock holds.
	LockGrace time.Duration
	// CancelTimeout is how long an agent has to stop a canceled job.
	CancelTimeout time.Duration
}

// decideSweep says what becomes of unfinished job j at now. agentLive
// reports whether its agent still exists and has a session it used within
// the session idle timeout.
//
//   - A job assigned but never started (never renewed) whose agent is gone,
//     or whose lock ran out, goes back to the queue (the store abandons it
//     instead after store.MaxJobAttempts attempts).
//   - A started job whose lock was not renewed by lockedUntil + LockGrace is
//     abandoned, as the agent itself gives up at that point.
//   - A started job asked to cancel that is still running CancelTimeout
//     later is abandoned.
//   - A started job running past its timeoutInMinutes is canceled.
func decideSweep(j store.Job, agentLive bool, now time.Time, p sweepPolicy) sweepAction {
	switch {
	case j.Finished() || j.AssignTime.IsZero():
		return keepJob
	case j.StartTime.IsZero():
		if !agentLive || now.After(j.LockedUntil.Add(p.LockGrace)) {
			return requeueJob
		}
		return keepJob
	case now.After(j.LockedUntil.Add(p.LockGrace)):
		return abandonJob
	case !j.CancelTime.IsZero():
		if now.After(j.CancelTime.Add(p.CancelTimeout)) {
			return abandonJob
		}
		return keepJob
	case j.Spec.TimeoutInMinutes > 0 && now.After(j.StartTime.Add(time.Duration(j.Spec.TimeoutInMinutes)*time.Minute)):
		return cancelJob
	}
	return keepJob
}

// Sweep looks once at every unfinished job and requeues, abandons or
// cancels those decideSweep says to. Run calls it every SweepInterval; tests
// call it after moving their clock.
func (s *Server) Sweep(ctx context.Context) error {
	jobs, err := s.store.ListJobs(ctx, store.JobFilter{Unfinished: true})
	if err != nil {
		return err
	}
	now := s.now()
	policy := sweepPolicy{LockGrace: s.cfg.LockGrace, CancelTimeout: s.cfg.CancelTimeout}
	redispatch := map[int]bool{}
	for _, j := range jobs {
		if j.AssignTime.IsZero() {
			continue
		}
		live, err := s.agentLive(ctx, j.AgentID, now)
		if err != nil {
			return err
		}
		action := decideSweep(j, live, now, policy)
		switch action {
		case keepJob:
			continue
		case requeueJob:
			agentID := j.AgentID
			j, err = s.store.RequeueJob(ctx, j.RequestID, agentID, now)
			if err == nil {
				s.polls.wakeAgent(agentID) // its job message is gone
				if j.Finished() {
					s.jobFinished(j)
				} else {
					redispatch[j.PoolID] = true
				}
			}
		case abandonJob:
			j, err = s.store.FinishJob(ctx, j.RequestID, pipelines.ResultAbandoned, now)
			if err == nil {
				s.jobFinished(j)
			}
		case cancelJob:
			j, err = s.cancel(ctx, j, "timed out")
		}
		switch {
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
			continue // it moved on in the meantime
		case err != nil:
			return err
		}
		s.log.Info("Swept a job", "requestId", j.RequestID, "action", action.String(), "attempts", j.Attempts, "result", j.Result)
	}
	for poolID := range redispatch {
		s.queueChanged(ctx, poolID, true)
	}
	return nil
}

// agentLive reports whether the agent exists and used its session lately.
func (s *Server) agentLive(ctx context.Context, agentID int, now time.Time) (bool, error) {
	sess, err := s.store.GetAgentSession(ctx, agentID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return !sess.LastSeen.Before(now.Add(-s.cfg.SessionIdleTimeout)), nil
}

// sweepEvery runs Sweep every interval until ctx ends.
func (s *Server) sweepEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.Error(err, "Failed to sweep jobs; trying again at the next interval")
			}
		}
	}
}
