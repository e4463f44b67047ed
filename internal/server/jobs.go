package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// queueJob queues a job from a JobSpec and wakes the pool's waiting agents.
func (s *Server) queueJob(w http.ResponseWriter, r *http.Request) error {
	b, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	spec, err := decodeJobSpec(b)
	if err != nil {
		return err
	}
	p, err := s.poolByName(r.Context(), spec.Pool)
	if err != nil {
		return err
	}
	spec.Pool = p.Name
	j, err := s.store.CreateJob(r.Context(), store.Job{
		PoolID: p.ID, PoolName: p.Name, JobID: uuid.NewString(), PlanID: uuid.NewString(), TimelineID: uuid.NewString(),
		Name: spec.Name, Spec: spec, QueueTime: s.now(),
	})
	s.uncertainWrite(r.Context(), err)
	if err != nil {
		return storeError(err, pipelines.TypeKeyPoolNotFound, "agent pool "+p.Name)
	}
	s.log.Info("Queued a job", "requestId", j.RequestID, "poolId", p.ID, "steps", len(spec.Steps))
	s.queueChanged(r.Context(), p.ID, true)
	writeJSON(w, http.StatusCreated, toJob(j))
	return nil
}

var jobStates = map[string]bool{
	jobapi.StateQueued: true, jobapi.StateAssigned: true, jobapi.StateRunning: true, jobapi.StateCanceling: true,
	jobapi.StateCompleted: true,
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var f store.JobFilter
	if name := q.Get("pool"); name != "" {
		p, err := s.poolByName(r.Context(), name)
		if err != nil {
			return err
		}
		f.PoolID = p.ID
	}
	state := q.Get("state")
	if state != "" && !jobStates[state] {
		return badRequest("state %q is not one of queued, assigned, running, canceling, completed", truncate(state, 32))
	}
	jobs, err := s.store.ListJobs(r.Context(), f)
	if err != nil {
		return err
	}
	out := []jobapi.Job{}
	for _, j := range jobs {
		if state == "" || jobState(j) == state {
			out = append(out, toJob(j))
		}
	}
	writeJSON(w, http.StatusOK, pipelines.NewList(out))
	return nil
}

func (s *Server) jobFromPath(r *http.Request) (store.Job, error) {
	id, err := parseID("job id", r.PathValue("id"), 64)
	if err != nil {
		return store.Job{}, err
	}
	j, err := s.store.GetJob(r.Context(), id)
	if err != nil {
		return j, storeError(err, pipelines.TypeKeyJobNotFound, "job "+strconv.FormatInt(id, 10))
	}
	return j, nil
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) error {
	j, err := s.jobFromPath(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toJob(j))
	return nil
}

// jobFinished tells the queue watchers and the log's followers.
func (s *Server) jobFinished(j store.Job) {
	s.queues.bump(int64(j.PoolID))
	s.jobs.bump(j.RequestID)
}

// cancelMessage is the JobCancellation message for a job: the agent has the
// cancel timeout (a .NET TimeSpan) to stop.
func (s *Server) cancelMessage(j store.Job) (store.Message, error) {
	body, err := json.Marshal(pipelines.JobCancelMessage{JobID: j.JobID, Timeout: timeSpan(s.cfg.CancelTimeout)})
	return store.Message{Type: pipelines.MessageTypeJobCancellation, Body: body}, err
}

// timeSpan formats d as a .NET TimeSpan, [d.]hh:mm:ss.
func timeSpan(d time.Duration) string {
	d = d.Round(time.Second)
	days, rest := d/(24*time.Hour), d%(24*time.Hour)
	hms := fmt.Sprintf("%02d:%02d:%02d", rest/time.Hour, rest%time.Hour/time.Minute, rest%time.Minute/time.Second)
	if days > 0 {
		return fmt.Sprintf("%d.%s", days, hms)
	}
	return hms
}

// cancel cancels a job (see store.Store.CancelJob) and tells whoever needs
// to know; reason is for the log.
func (s *Server) cancel(ctx context.Context, j store.Job, reason string) (store.Job, error) {
	msg, err := s.cancelMessage(j)
	if err != nil {
		return j, err
	}
	j, err = s.store.CancelJob(ctx, j.RequestID, msg, s.now())
	s.uncertainWrite(ctx, err)
	if err != nil {
		return j, err
	}
	if j.Finished() {
		s.log.Info("Canceled a job that had not started", "requestId", j.RequestID, "reason", reason)
		s.polls.wakeAgent(j.AgentID) // its job message is gone
		s.jobFinished(j)
		return j, nil
	}
	s.log.Info("Asked an agent to cancel its job", "requestId", j.RequestID, "agentId", j.AgentID, "reason", reason)
	s.polls.wakeAgent(j.AgentID)
	s.queues.bump(int64(j.PoolID))
	return j, nil
}

// cancelJob is POST /_apis/agentry/jobs/{id}/cancel.
func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) error {
	j, err := s.jobFromPath(r)
	if err != nil {
		return err
	}
	j, err = s.cancel(r.Context(), j, "asked by a user")
	if errors.Is(err, store.ErrConflict) {
		return errorf(http.StatusConflict, typeKeyInvalidOperation, "job %d has already finished (%s)", j.RequestID, j.Result)
	} else if err != nil {
		return storeError(err, pipelines.TypeKeyJobNotFound, "job "+strconv.FormatInt(j.RequestID, 10))
	}
	writeJSON(w, http.StatusOK, toJob(j))
	return nil
}

// queueWatch is the query of the queue watch.
type queueWatch struct {
	// After is the revision the caller has seen; 0 answers at once.
	After int64
	Wait  time.Duration
}

// Limits of the queue watch's wait.
const (
	defaultQueueWait = 30 * time.Second
	maxQueueWait     = 60 * time.Second
)

// parseQueueWatch reads ?after=REVISION&wait=SECONDS.
func parseQueueWatch(q url.Values) (queueWatch, error) {
	w := queueWatch{Wait: defaultQueueWait}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return w, badRequest("after %q is not a revision (a non-negative integer)", truncate(v, 32))
		}
		w.After = n
	}
	if v := q.Get("wait"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return w, badRequest("wait %q is not a number of seconds", truncate(v, 32))
		}
		w.Wait = min(time.Duration(n)*time.Second, maxQueueWait)
	}
	return w, nil
}

// watchQueue is GET /_apis/agentry/pools/{poolId}/queue: the pool's
// unfinished job requests, at once when the queue revision is past after,
// else when it changes or the wait ends.
func (s *Server) watchQueue(w http.ResponseWriter, r *http.Request) error {
	p, err := s.poolFromPath(r)
	if err != nil {
		return err
	}
	qw, err := parseQueueWatch(r.URL.Query())
	if err != nil {
		return err
	}
	rev, changed := s.queues.watch(int64(p.ID))
	if qw.After > 0 && rev <= qw.After && qw.Wait > 0 {
		t := time.NewTimer(qw.Wait)
		defer t.Stop()
		select {
		case <-changed:
		case <-t.C:
		case <-s.closing:
		case <-r.Context().Done():
			return nil
		}
		rev, _ = s.queues.watch(int64(p.ID))
	}
	body, err := s.queueAnswers.get(r.Context(), p.ID, rev, func(ctx context.Context) ([]byte, error) {
		// Read after the revision: a change in between shows as a newer
		// revision next time, never as a missed one.
		// Unfinished requests, and the finished ones of agents still registered:
		// a scaler sees which live agents have run their one job.
		jobs, err := s.store.ListJobs(ctx, store.JobFilter{PoolID: p.ID, Unfinished: true, OrHeld: true, Brief: true})
		if err != nil {
			return nil, err
		}
		out := make([]pipelines.TaskAgentJobRequest, 0, len(jobs))
		for _, j := range jobs {
			out = append(out, toJobRequest(j))
		}
		return json.Marshal(jobapi.QueueState{Revision: rev, JobRequests: out})
	})
	if err != nil {
		return err
	}
	writeEncodedJSON(w, http.StatusOK, body)
	return nil
}
