package server

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
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

// dispatch hands the pool's queued jobs, oldest first, to waiting idle
// agents that meet their demands, and wakes just those agents' polls.
func (s *Server) dispatch(ctx context.Context, poolID int) error {
	queued, err := s.store.ListJobs(ctx, store.JobFilter{PoolID: poolID, Queued: true})
	if err != nil {
		return err
	}
	for _, j := range queued {
		for {
			cands := s.polls.take(poolID, j.Spec.Demands, 4)
			if len(cands) == 0 {
				break // nobody waiting can run it; the next poll will look again
			}
			assigned := false
			for i, p := range cands {
				ok, err := s.assignTo(ctx, p.agentID, j, p.baseURL)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
				p.signal() // it looks at the store again, job or not
				if ok {
					for _, rest := range cands[i+1:] {
						rest.signal() // back in line on their next round
					}
					assigned = true
					break
				}
			}
			if assigned {
				break
			}
			if cur, err := s.store.GetJob(ctx, j.RequestID); err != nil || !cur.AssignTime.IsZero() || cur.Finished() {
				break // taken (or gone) in between: on to the next job
			}
		}
	}
	return nil
}

// assignTo tries to hand job j to the agent; false when the job or the
// agent was taken in between.
func (s *Server) assignTo(ctx context.Context, agentID int, j store.Job, baseURL string) (bool, error) {
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
