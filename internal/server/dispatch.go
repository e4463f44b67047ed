package server

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"

	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// poll is one waiting GET …/messages. A job for its agent, a cancellation
// or the agent's deletion wakes just this poll, never the whole pool: with
// thousands of idle agents a broadcast would make every one of them query
// the store for each queued job.
type poll struct {
	agentID int
	poolID  int
	// caps are the agent's capabilities (see pipelines.NewCapabilities) and idle whether
	// it may take a job, as read when the poll last looked at the store.
	caps    pipelines.Capabilities
	idle    bool
	baseURL string
	wake    chan struct{} // capacity 1: a wake is never lost, never blocks
	elem    *list.Element // in idlePolls.pools while idle
}

func newPoll(a store.Agent, baseURL string) *poll {
	return &poll{agentID: a.ID, poolID: a.PoolID, baseURL: baseURL, wake: make(chan struct{}, 1)}
}

func (p *poll) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// idlePolls indexes the waiting polls: per pool, the idle ones oldest first
// (the next job goes to the agent that has waited longest); per agent, all.
type idlePolls struct {
	mu     sync.Mutex
	pools  map[int]*list.List
	agents map[int]map[*poll]struct{}
}

func newIdlePolls() *idlePolls {
	return &idlePolls{pools: map[int]*list.List{}, agents: map[int]map[*poll]struct{}{}}
}

// add registers p, or updates it; an idle poll keeps its place in line.
func (ip *idlePolls) add(p *poll, a store.Agent) {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	p.caps = pipelines.NewCapabilities(a.SystemCapabilities, a.UserCapabilities)
	p.idle = a.RequestID == 0 && a.Enabled
	if ip.agents[p.agentID] == nil {
		ip.agents[p.agentID] = map[*poll]struct{}{}
	}
	ip.agents[p.agentID][p] = struct{}{}
	switch {
	case p.idle && p.elem == nil:
		l := ip.pools[p.poolID]
		if l == nil {
			l = list.New()
			ip.pools[p.poolID] = l
		}
		p.elem = l.PushBack(p)
	case !p.idle && p.elem != nil:
		ip.pools[p.poolID].Remove(p.elem)
		p.elem = nil
	}
}

func (ip *idlePolls) remove(p *poll) {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	ip.busyLocked(p)
	if m := ip.agents[p.agentID]; m != nil {
		delete(m, p)
		if len(m) == 0 {
			delete(ip.agents, p.agentID)
		}
	}
}

func (ip *idlePolls) busyLocked(p *poll) {
	if p.elem != nil {
		ip.pools[p.poolID].Remove(p.elem)
		p.elem = nil
	}
	p.idle = false
}

// wakeAgent wakes every waiting poll of the agent.
func (ip *idlePolls) wakeAgent(agentID int) {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	for p := range ip.agents[agentID] {
		p.signal()
	}
}

// count is the number of waiting polls.
func (ip *idlePolls) count() int {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	n := 0
	for _, m := range ip.agents {
		n += len(m)
	}
	return n
}

// hasIdle reports whether any poll of the pool is waiting for a job.
func (ip *idlePolls) hasIdle(poolID int) bool {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	l := ip.pools[poolID]
	return l != nil && l.Len() > 0
}

// take removes from line and returns the idle polls of the pool whose
// agents meet demands, oldest first, at most n of them, one per agent.
func (ip *idlePolls) take(poolID int, demands []string, n int) []*poll {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	l := ip.pools[poolID]
	if l == nil {
		return nil
	}
	var out []*poll
	seen := map[int]bool{}
	for e := l.Front(); e != nil && len(out) < n; {
		p := e.Value.(*poll)
		e = e.Next()
		if seen[p.agentID] || !p.caps.Satisfy(demands) {
			continue
		}
		seen[p.agentID] = true
		ip.busyLocked(p)
		out = append(out, p)
	}
	return out
}

// jobClaims keeps, per pool, the queued jobs an assignment is under way
// for. Jobs are handed out from two places at once: dispatch, after the
// queue changed, and each agent's own poll. Left alone, every assigner
// reaches for the oldest queued job, all but one lose, and each lost race
// is a write to the store: in a burst of 500 jobs on 500 waiting agents
// that was about 70 AssignJob calls per job. So an assigner picks its job
// under the pool's lock, from a list it reads under that lock, passes over
// the jobs others have claimed, and claims its own until its AssignJob has
// returned. A claim ends under the same lock, so a list read under it shows
// a job either claimed or as the store has it after that assignment.
type jobClaims struct {
	mu    sync.Mutex
	pools map[int]*poolClaims
}

type poolClaims struct {
	mu      sync.Mutex
	claimed map[int64]bool
}

func newJobClaims() *jobClaims { return &jobClaims{pools: map[int]*poolClaims{}} }

func (c *jobClaims) pool(poolID int) *poolClaims {
	c.mu.Lock()
	defer c.mu.Unlock()
	pc := c.pools[poolID]
	if pc == nil {
		pc = &poolClaims{claimed: map[int64]bool{}}
		c.pools[poolID] = pc
	}
	return pc
}

// claim reads the pool's queued jobs (brief: only their demands of the
// spec), oldest first and without the claimed ones, lets pick choose one
// and claims it. ok is false when pick chose none.
func (c *jobClaims) claim(ctx context.Context, st store.Store, poolID int, pick func(queued []store.Job) (store.Job, bool)) (j store.Job, ok bool, err error) {
	pc := c.pool(poolID)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	queued, err := st.ListJobs(ctx, store.JobFilter{PoolID: poolID, Queued: true, Brief: true})
	if err != nil {
		return store.Job{}, false, err
	}
	queued = slices.DeleteFunc(queued, func(j store.Job) bool { return pc.claimed[j.RequestID] })
	if j, ok = pick(queued); ok {
		pc.claimed[j.RequestID] = true
	}
	return j, ok, nil
}

// release ends a claim.
func (c *jobClaims) release(poolID int, requestID int64) {
	pc := c.pool(poolID)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	delete(pc.claimed, requestID)
}

// maxLostAssignments bounds one dispatch's failed assignments (the job
// went, or the agent took another one in between); past it, the jobs left
// wait for the agents' own polls.
const maxLostAssignments = 64

// dispatch hands the pool's queued jobs, oldest first, to waiting idle
// agents that meet their demands, one agent per job, and wakes just those
// agents' polls.
func (s *Server) dispatch(ctx context.Context, poolID int) error {
	for lost := 0; lost < maxLostAssignments && s.polls.hasIdle(poolID); {
		var p *poll
		more := false // queued jobs after the one taken
		j, ok, err := s.claims.claim(ctx, s.store, poolID, func(queued []store.Job) (store.Job, bool) {
			for i, j := range queued {
				if taken := s.polls.take(poolID, j.Spec.Demands, 1); len(taken) == 1 {
					p, more = taken[0], i+1 < len(queued)
					return j, true
				}
			}
			return store.Job{}, false
		})
		if err != nil || !ok {
			return err // nobody waiting can run what is queued; the next poll will look again
		}
		assigned, err := s.assignTo(ctx, p.agentID, j.RequestID, p.baseURL)
		s.claims.release(poolID, j.RequestID)
		p.signal() // it looks at the store again, job or not
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		switch {
		case !assigned:
			lost++
		case !more:
			// The jobs passed over had no waiting agent that could take
			// them, and there are fewer now; a job queued since then is
			// dispatched by whoever queued it.
			return nil
		}
	}
	return nil
}

// assignTo tries to hand the job to the agent; false when the job or the
// agent was taken in between, or the job finished.
func (s *Server) assignTo(ctx context.Context, agentID int, requestID int64, baseURL string) (bool, error) {
	// The whole job, for its message: assigners pick from brief lists.
	j, err := s.store.GetJob(ctx, requestID)
	if err != nil {
		return false, err
	}
	if !j.AssignTime.IsZero() || j.Finished() {
		return false, nil
	}
	token, err := newToken()
	if err != nil {
		return false, err
	}
	now := s.now()
	j.LockedUntil = now.Add(s.cfg.JobLock)
	body, err := json.Marshal(jobMessage(j, baseURL, token))
	if err != nil {
		return false, err
	}
	_, err = s.store.AssignJob(ctx, store.Assignment{
		RequestID: j.RequestID, AgentID: agentID, TokenHash: hashToken(token), LockedUntil: j.LockedUntil,
		MessageType: pipelines.MessageTypeJobRequest, MessageBody: body, Now: now,
	})
	s.uncertainWrite(ctx, err)
	if errors.Is(err, store.ErrConflict) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	s.queues.bump(int64(j.PoolID))
	s.log.Info("Assigned a job to an agent", "requestId", j.RequestID, "agentId", agentID, "poolId", j.PoolID)
	return true, nil
}

// queueChanged records a change of the pool's queue and, when jobs may be
// waiting, hands them out.
func (s *Server) queueChanged(ctx context.Context, poolID int, redispatch bool) {
	s.queues.bump(int64(poolID))
	if !redispatch {
		return
	}
	if err := s.dispatch(ctx, poolID); err != nil {
		s.log.Error(err, "Failed to hand out queued jobs; waiting agents will pick them up", "poolId", poolID)
	}
}

// uncertainWrite takes every pool's queue as changed when a write to the
// store failed because its caller's context ended: the store may have
// kept the write all the same (see store.SQLite), and a queue watch must
// not miss a change, nor serve an answer cached from before it.
func (s *Server) uncertainWrite(ctx context.Context, err error) {
	if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
		s.queues.bumpAll()
	}
}
