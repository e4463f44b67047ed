package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// agentJob is what the server last said of the one job an agent holds.
type agentJob struct {
	RequestID int64
	// Finished: the server has the job's result (or gave the job up). The
	// agent has run its one job and is spent, whatever its pod still does.
	Finished bool
}

// agentJobs is the server's view of the jobs the pools' agents hold, as the
// queue watch (or the pool's poll) last read it. The Agent reconciler reads
// it: a busy agent's pod is marked busy as soon as the server assigns it a
// job, and an agent whose job finished is deregistered and removed then,
// without waiting for its pod to be reported ended (a kubelet may take a
// second or more) or for the pool's next reconcile.
type agentJobs struct {
	// events wakes the Agent reconciler for an agent whose job changed.
	events chan event.TypedGenericEvent[agentWake]

	mu    sync.Mutex
	pools map[types.NamespacedName]map[int]agentJob // pool → agent id → job
}

func newAgentJobs() *agentJobs {
	return &agentJobs{events: make(chan event.TypedGenericEvent[agentWake], 1024), pools: map[types.NamespacedName]map[int]agentJob{}}
}

// agentWake asks for a reconcile of an Agent whose job changed.
type agentWake struct {
	agent types.NamespacedName
	// finished: the job finished, and the agent is to be removed.
	finished bool
}

// heldJobs returns, per agent id, the job each agent in requests holds: an
// unfinished request reserved for it, or a finished one that names it (an
// agent runs one job, so a finished one means it is spent).
func heldJobs(requests []pipelines.TaskAgentJobRequest) (jobs map[int]agentJob, names map[int]string) {
	jobs, names = map[int]agentJob{}, map[int]string{}
	for i := range requests {
		r := &requests[i]
		if r.ReservedAgent == nil || r.ReservedAgent.ID == 0 {
			continue
		}
		id := r.ReservedAgent.ID
		finished := r.FinishTime != nil || r.Result != nil
		if held, ok := jobs[id]; ok && held.Finished && !finished {
			continue
		}
		jobs[id] = agentJob{RequestID: r.RequestID, Finished: finished}
		names[id] = r.ReservedAgent.Name
	}
	return jobs, names
}

// startDelay is how long the request waited from being queued to being
// received (or, if the server does not say, assigned) by its agent, from the
// server's own times; false when it does not say.
func startDelay(r *pipelines.TaskAgentJobRequest) (time.Duration, bool) {
	started := r.ReceiveTime
	if started == nil {
		started = r.AssignTime
	}
	if r.QueueTime == nil || started == nil {
		return 0, false
	}
	return max(started.Sub(*r.QueueTime), 0), true
}

// observe records a pool's queue and wakes the Agents whose job is new or
// has finished since the last one. The Agent's name is the one the agent
// was registered with; a name that is no Agent costs one empty reconcile.
func (b *agentJobs) observe(ctx context.Context, pool types.NamespacedName, requests []pipelines.TaskAgentJobRequest) {
	jobs, names := heldJobs(requests)
	b.mu.Lock()
	old, seen := b.pools[pool]
	b.pools[pool] = jobs
	var wake []agentWake
	for id, job := range jobs {
		if was, ok := old[id]; !ok || was.RequestID != job.RequestID || was.Finished != job.Finished {
			wake = append(wake, agentWake{agent: types.NamespacedName{Namespace: pool.Namespace, Name: names[id]}, finished: job.Finished})
		}
	}
	b.mu.Unlock()
	// queued → started, once per job an agent takes, from the server's
	// times: not for the jobs a restarted manager finds held already.
	for i := range requests {
		r := &requests[i]
		if r.ReservedAgent == nil || r.ReservedAgent.ID == 0 || !seen || jobs[r.ReservedAgent.ID].RequestID != r.RequestID {
			continue
		}
		if was, ok := old[r.ReservedAgent.ID]; ok && was.RequestID == r.RequestID {
			continue
		}
		if d, ok := startDelay(r); ok {
			queuedToJobStarted.WithLabelValues(pool.Namespace, pool.Name).Observe(d.Seconds())
		}
	}
	for _, w := range wake {
		b.wake(ctx, w)
	}
}

// wake queues a reconcile of the named Agent. It waits while the Agent
// reconciler's intake is full rather than drop the wake-up: a busy agent
// must be marked busy.
func (b *agentJobs) wake(ctx context.Context, w agentWake) {
	select {
	case b.events <- event.TypedGenericEvent[agentWake]{Object: w}:
	case <-ctx.Done():
	}
}

// lookup returns the job the server last said the pool's agent holds.
func (b *agentJobs) lookup(pool types.NamespacedName, agentID int) (agentJob, bool) {
	if b == nil || agentID == 0 {
		return agentJob{}, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	job, ok := b.pools[pool][agentID]
	return job, ok
}

// forget drops a deleted pool's jobs.
func (b *agentJobs) forget(pool types.NamespacedName) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.pools, pool)
}
