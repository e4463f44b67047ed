package server

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

func (s *Server) poolFromPath(r *http.Request) (store.Pool, error) {
	id, err := parseID("poolId", r.PathValue("poolId"), 32)
	if err != nil {
		return store.Pool{}, err
	}
	p, err := s.store.GetPool(r.Context(), int(id))
	if err != nil {
		return store.Pool{}, storeError(err, pipelines.TypeKeyPoolNotFound, "agent pool "+r.PathValue("poolId"))
	}
	return p, nil
}

func (s *Server) poolByName(ctx context.Context, name string) (store.Pool, error) {
	pools, err := s.store.ListPools(ctx)
	if err != nil {
		return store.Pool{}, err
	}
	for _, p := range pools {
		if strings.EqualFold(p.Name, name) {
			return p, nil
		}
	}
	return store.Pool{}, errorf(http.StatusNotFound, pipelines.TypeKeyPoolNotFound, "agent pool %q does not exist", truncate(name, maxNameLen))
}

func (s *Server) wirePool(ctx context.Context, p store.Pool) (pipelines.TaskAgentPool, error) {
	// Counted, not listed: agentry-manager looks its pool up by name on
	// every reconcile, and a pool may have thousands of agents.
	n, err := s.store.CountAgents(ctx, p.ID)
	return toTaskAgentPool(p, n), err
}

func (s *Server) listPools(w http.ResponseWriter, r *http.Request) error {
	pools, err := s.store.ListPools(r.Context())
	if err != nil {
		return err
	}
	name := r.URL.Query().Get("poolName")
	out := []pipelines.TaskAgentPool{}
	for _, p := range pools {
		if name != "" && !strings.EqualFold(p.Name, name) {
			continue
		}
		wp, err := s.wirePool(r.Context(), p)
		if err != nil {
			return err
		}
		out = append(out, wp)
	}
	writeJSON(w, http.StatusOK, pipelines.NewList(out))
	return nil
}

func (s *Server) createPool(w http.ResponseWriter, r *http.Request) error {
	b, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	name, err := decodePool(b)
	if err != nil {
		return err
	}
	p, err := s.store.CreatePool(r.Context(), name, s.now())
	if errors.Is(err, store.ErrExists) {
		return errorf(http.StatusConflict, pipelines.TypeKeyPoolExists, "agent pool %q already exists", name)
	} else if err != nil {
		return err
	}
	s.log.Info("Created an agent pool", "poolId", p.ID, "pool", p.Name)
	writeJSON(w, http.StatusOK, toTaskAgentPool(p, 0))
	return nil
}

func (s *Server) getPool(w http.ResponseWriter, r *http.Request) error {
	p, err := s.poolFromPath(r)
	if err != nil {
		return err
	}
	wp, err := s.wirePool(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wp)
	return nil
}

// wireAgent adds what the store does not keep: whether the agent is online
// and the job it holds.
func (s *Server) wireAgent(ctx context.Context, a store.Agent) (pipelines.TaskAgent, error) {
	online := false
	sess, err := s.store.GetAgentSession(ctx, a.ID)
	switch {
	case err == nil:
		online = !sess.LastSeen.Before(s.now().Add(-s.cfg.SessionIdleTimeout))
	case !errors.Is(err, store.ErrNotFound):
		return pipelines.TaskAgent{}, err
	}
	var assigned *pipelines.TaskAgentJobRequest
	if a.RequestID != 0 {
		j, err := s.store.GetJob(ctx, a.RequestID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return pipelines.TaskAgent{}, err
		}
		if err == nil && !j.Finished() {
			jr := toJobRequest(j)
			assigned = &jr
		}
	}
	return toTaskAgent(a, online, assigned), nil
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) error {
	p, err := s.poolFromPath(r)
	if err != nil {
		return err
	}
	agents, err := s.store.ListAgents(r.Context(), p.ID)
	if err != nil {
		return err
	}
	name := r.URL.Query().Get("agentName")
	out := []pipelines.TaskAgent{}
	for _, a := range agents {
		if name != "" && !strings.EqualFold(a.Name, name) {
			continue
		}
		wa, err := s.wireAgent(r.Context(), a)
		if err != nil {
			return err
		}
		out = append(out, wa)
	}
	writeJSON(w, http.StatusOK, pipelines.NewList(out))
	return nil
}

func (s *Server) addAgent(w http.ResponseWriter, r *http.Request) error {
	p, err := s.poolFromPath(r)
	if err != nil {
		return err
	}
	b, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	in, err := decodeAgent(b)
	if err != nil {
		return err
	}
	a := store.Agent{
		PoolID: p.ID, Name: in.Name, Version: in.Version, OSDescription: in.OSDescription,
		Enabled: in.Enabled == nil || *in.Enabled, MaxParallelism: max(in.MaxParallelism, 1),
		ProvisioningState: in.ProvisioningState,
		ClientID:          uuid.NewString(), AuthorizationURL: s.publicURL(r) + TokenPath,
		PublicKey:          *in.Authorization.PublicKey,
		SystemCapabilities: in.SystemCapabilities, UserCapabilities: in.UserCapabilities,
		CreatedOn: s.now(),
	}
	if a.ProvisioningState == "" {
		a.ProvisioningState = "Provisioned"
	}
	a, err = s.store.CreateAgent(r.Context(), a)
	switch {
	case errors.Is(err, store.ErrExists):
		return errorf(http.StatusConflict, pipelines.TypeKeyAgentExists, "pool %q already has an agent named %q", p.Name, in.Name)
	case err != nil:
		return storeError(err, pipelines.TypeKeyPoolNotFound, "agent pool "+p.Name)
	}
	s.log.Info("Registered an agent", "poolId", p.ID, "agentId", a.ID, "agent", a.Name)
	writeJSON(w, http.StatusOK, toTaskAgent(a, false, nil))
	return nil
}

// agentFromPath finds the agent of the path in the pool of the path.
func (s *Server) agentFromPath(r *http.Request) (store.Pool, store.Agent, error) {
	p, err := s.poolFromPath(r)
	if err != nil {
		return p, store.Agent{}, err
	}
	id, err := parseID("agentId", r.PathValue("agentId"), 32)
	if err != nil {
		return p, store.Agent{}, err
	}
	a, err := s.store.GetAgent(r.Context(), int(id))
	if err == nil && a.PoolID != p.ID {
		err = store.ErrNotFound
	}
	if err != nil {
		return p, a, storeError(err, pipelines.TypeKeyAgentNotFound, "agent "+r.PathValue("agentId")+" of pool "+p.Name)
	}
	return p, a, nil
}

func (s *Server) getAgent(w http.ResponseWriter, r *http.Request) error {
	_, a, err := s.agentFromPath(r)
	if err != nil {
		return err
	}
	wa, err := s.wireAgent(r.Context(), a)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wa)
	return nil
}

// replaceAgent is PUT agents/{id}: a new registration for an existing
// agent (new key, which revokes its listener tokens; user capabilities
// merged, system capabilities replaced when sent).
func (s *Server) replaceAgent(w http.ResponseWriter, r *http.Request) error {
	return s.changeAgent(w, r, decodeAgent)
}

// updateAgent is PATCH agents/{id}: the same, with every field optional.
func (s *Server) updateAgent(w http.ResponseWriter, r *http.Request) error {
	return s.changeAgent(w, r, decodeAgentUpdate)
}

func (s *Server) changeAgent(w http.ResponseWriter, r *http.Request, decode func([]byte) (pipelines.TaskAgent, error)) error {
	_, old, err := s.agentFromPath(r)
	if err != nil {
		return err
	}
	b, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	in, err := decode(b)
	if err != nil {
		return err
	}
	if in.ID != 0 && in.ID != old.ID {
		return badRequest("the body is agent %d, the path agent %d", in.ID, old.ID)
	}
	a := old
	setString(&a.Name, in.Name)
	setString(&a.Version, in.Version)
	setString(&a.OSDescription, in.OSDescription)
	setString(&a.ProvisioningState, in.ProvisioningState)
	if in.Enabled != nil {
		a.Enabled = *in.Enabled
	}
	if in.MaxParallelism > 0 {
		a.MaxParallelism = in.MaxParallelism
	}
	if in.Authorization != nil && in.Authorization.PublicKey != nil {
		a.PublicKey = *in.Authorization.PublicKey
	}
	if in.SystemCapabilities != nil {
		a.SystemCapabilities = in.SystemCapabilities
	}
	if in.UserCapabilities != nil {
		a.UserCapabilities = maps.Clone(old.UserCapabilities)
		if a.UserCapabilities == nil {
			a.UserCapabilities = map[string]string{}
		}
		maps.Copy(a.UserCapabilities, in.UserCapabilities)
	}
	a, err = s.store.ReplaceAgent(r.Context(), a)
	switch {
	case errors.Is(err, store.ErrExists):
		return errorf(http.StatusConflict, pipelines.TypeKeyAgentExists, "the pool already has an agent named %q", in.Name)
	case err != nil:
		return storeError(err, pipelines.TypeKeyAgentNotFound, "agent "+r.PathValue("agentId"))
	}
	newKey := !old.PublicKey.Equal(a.PublicKey)
	if newKey {
		if err := s.store.DeleteListenerTokens(r.Context(), a.ID); err != nil {
			return err
		}
	}
	s.polls.wakeAgent(a.ID) // its capabilities or enabled flag may have changed
	s.log.Info("Changed an agent's registration", "poolId", a.PoolID, "agentId", a.ID, "method", r.Method, "newKey", newKey)
	wa, err := s.wireAgent(r.Context(), a)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wa)
	return nil
}

func setString(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func (s *Server) deleteAgent(w http.ResponseWriter, r *http.Request) error {
	p, a, err := s.agentFromPath(r)
	if err != nil {
		return err
	}
	d, err := s.store.DeleteAgent(r.Context(), a.ID, s.now())
	s.uncertainWrite(r.Context(), err)
	if err != nil {
		return storeError(err, pipelines.TypeKeyAgentNotFound, "agent "+r.PathValue("agentId"))
	}
	// The agent's own long-poll ends; a requeued job finds a new agent.
	s.polls.wakeAgent(a.ID)
	// An agent that held a job changes the queue watch's answer: that job
	// was listed as held by a live agent (or is requeued or abandoned now).
	// Held is read in the deletion itself: the agent read above may predate
	// the job it took.
	if d.Held != 0 || d.Requeued != 0 || d.Abandoned != 0 {
		s.queueChanged(r.Context(), p.ID, d.Requeued != 0)
		s.jobs.bump(d.Abandoned)
	}
	s.log.Info("Deleted an agent", "poolId", p.ID, "agentId", a.ID, "requeuedRequestId", d.Requeued, "abandonedRequestId", d.Abandoned)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// A pool's job request list holds every unfinished request, the finished
// ones of agents still registered, and this many of the latest finished
// (completedRequestCount asks for another number, up to the maximum): a
// scaler's poll costs the same after a million jobs as after ten.
const (
	defaultCompletedRequests = 50
	maxCompletedRequests     = 1000
)

func (s *Server) listJobRequests(w http.ResponseWriter, r *http.Request) error {
	p, err := s.poolFromPath(r)
	if err != nil {
		return err
	}
	completed := defaultCompletedRequests
	if v := r.URL.Query().Get("completedRequestCount"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return badRequest("completedRequestCount %q is not a count (a non-negative integer)", truncate(v, 32))
		}
		completed = min(n, maxCompletedRequests)
	}
	jobs, err := s.store.ListJobs(r.Context(), store.JobFilter{PoolID: p.ID, Unfinished: true, OrHeld: true, Finished: completed, Brief: true})
	if err != nil {
		return err
	}
	out := make([]pipelines.TaskAgentJobRequest, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, toJobRequest(j))
	}
	writeJSON(w, http.StatusOK, pipelines.NewList(out))
	return nil
}
