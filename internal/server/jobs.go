package server

import (
	"net/http"
	"strconv"

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
	if err != nil {
		return storeError(err, pipelines.TypeKeyPoolNotFound, "agent pool "+p.Name)
	}
	s.changes.notify(p.ID)
	s.log.Info("Queued a job", "requestId", j.RequestID, "poolId", p.ID, "steps", len(spec.Steps))
	writeJSON(w, http.StatusCreated, toJob(j))
	return nil
}

var jobStates = map[string]bool{
	jobapi.StateQueued: true, jobapi.StateAssigned: true, jobapi.StateRunning: true, jobapi.StateCompleted: true,
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
		return badRequest("state %q is not one of queued, assigned, running, completed", truncate(state, 32))
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

// getJobLog answers the job's log as text: the logs the agent uploaded, in
// the order it created them, or the live feed lines while it has uploaded none.
func (s *Server) getJobLog(w http.ResponseWriter, r *http.Request) error {
	j, err := s.jobFromPath(r)
	if err != nil {
		return err
	}
	b, err := s.store.JobLog(r.Context(), j.RequestID)
	if err != nil {
		return storeError(err, pipelines.TypeKeyJobNotFound, "job "+strconv.FormatInt(j.RequestID, 10))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, err = w.Write(b)
	return err
}
