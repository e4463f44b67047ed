// Package scaling holds the operator's demand math: which of a server pool's
// job requests an AgentPool's agents can take, how the pool's agents divide
// into starting, idle and busy, how many new agents that asks for, and which
// idle agents are surplus. Everything here is a pure function of plain data.
package scaling

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// Decide returns how many agents to start: enough that every waiting job and
// minIdle warm agents have an agent that is starting or idle (available), but
// never more than maxAgents agents in total.
func Decide(waiting, minIdle, maxAgents, available, total int) int {
	n := min(waiting+max(minIdle, 0)-available, max(maxAgents, 0)-total)
	return max(n, 0)
}

// AgentState is what the operator knows about one of a pool's agents.
type AgentState struct {
	// Name is the Agent object's name.
	Name string
	// AgentID is the server's id for the agent; 0 while not registered.
	AgentID int
	// Running is true once the agent's pod runs.
	Running bool
	// RunningSince is when the pod started running; an ephemeral agent is
	// idle from then until it takes its one job.
	RunningSince time.Time
	// Finished is true once the agent's pod has ended; a finished agent
	// counts for nothing, it is on its way out.
	Finished bool
	// Deleting is true when the agent is being deleted: it still counts
	// towards the total (its pod may run) but is no longer available.
	Deleting bool
	// HeldJob is the job request the agent was seen holding, 0 if none. An
	// ephemeral agent runs one job: once that job is no longer unfinished,
	// the agent is spent, on its way out, even before its pod has ended.
	HeldJob int64
}

// Tally is a pool's demand and supply at one moment.
type Tally struct {
	// Waiting is the number of job requests no agent holds whose demands
	// the pool's agents meet.
	Waiting int
	// Unmatched is the number of waiting job requests whose demands the
	// pool's agents do not meet; they are some other pool's demand.
	Unmatched int
	// Starting, Idle and Busy count live agents.
	Starting, Idle, Busy int
	// Total counts every agent that is not finished.
	Total int
	// JobRequests maps an agent id to the unfinished request it holds, for
	// every request reserved for an agent (the pool's or another's).
	JobRequests map[int]int64
	// IdleAgents are the idle agents, the only ones scale-down may remove.
	IdleAgents []AgentState
}

// Available is the number of agents that can still take a job.
func (t Tally) Available() int { return t.Starting + t.Idle }

// Count tallies one snapshot of the job queue against the pool's agents.
// matches says whether the pool's agents meet a request's demands; nil
// matches everything.
//
// A request that is unfinished and reserved for an agent is held by that
// agent, received or not: the agent is busy and must never be removed, and
// the request is no longer anyone's demand. An unreserved, unreceived,
// unfinished request is waiting (KEDA's rule) — the pool's demand if its
// agents meet the request's demands.
func Count(requests []pipelines.TaskAgentJobRequest, agents []AgentState, matches func(demands []string) bool) Tally {
	t := Tally{JobRequests: map[int]int64{}}
	unfinished := map[int64]bool{}
	// spent are the agents a finished request names (a queue that lists
	// finished requests, as Azure DevOps' does, tells who ran them).
	spent := map[int]bool{}
	// The same by agent name, for an Agent whose registration id the pool
	// does not see yet (the status write that records it has not reached
	// the pool's cache): it has its name from birth, and the server names
	// the agent a request is reserved for. Counted as available, an agent
	// that already holds a job would leave a waiting job without one.
	busyByName, spentByName := map[string]bool{}, map[string]bool{}
	for i := range requests {
		r := &requests[i]
		finished := r.FinishTime != nil || r.Result != nil
		if !finished {
			unfinished[r.RequestID] = true
		}
		switch {
		case finished:
			if r.ReservedAgent != nil && r.ReservedAgent.ID != 0 {
				spent[r.ReservedAgent.ID] = true
				spentByName[strings.ToLower(r.ReservedAgent.Name)] = true
			}
		case r.ReservedAgent != nil && r.ReservedAgent.ID != 0:
			t.JobRequests[r.ReservedAgent.ID] = r.RequestID
			busyByName[strings.ToLower(r.ReservedAgent.Name)] = true
		case r.ReceiveTime != nil:
			// Received by nobody we can name; not demand either way.
		case matches == nil || matches(r.Demands):
			t.Waiting++
		default:
			t.Unmatched++
		}
	}
	for _, a := range agents {
		if a.Finished {
			continue
		}
		t.Total++
		_, busy := t.JobRequests[a.AgentID]
		name := strings.ToLower(a.Name)
		switch {
		case a.AgentID != 0 && busy, a.AgentID == 0 && name != "" && busyByName[name]:
			t.Busy++
		case a.Deleting || (a.HeldJob != 0 && !unfinished[a.HeldJob]) || (a.AgentID != 0 && spent[a.AgentID]) ||
			(a.AgentID == 0 && name != "" && spentByName[name]):
			// Neither available nor busy: it only takes room.
		case !a.Running:
			t.Starting++
		default:
			t.Idle++
			t.IdleAgents = append(t.IdleAgents, a)
		}
	}
	return t
}

// Surplus returns the idle agents to remove, longest idle first: those
// beyond what the waiting jobs and minIdle ask for (and beyond maxAgents,
// should it have shrunk), that have been idle for at least delay. When more
// agents are surplus but not yet idle long enough, next is how long until the
// first of them is; otherwise it is 0.
func Surplus(t Tally, minIdle, maxAgents int, delay time.Duration, now time.Time) (remove []AgentState, next time.Duration) {
	surplus := max(t.Available()-t.Waiting-max(minIdle, 0), t.Total-max(maxAgents, 0))
	surplus = min(surplus, len(t.IdleAgents))
	if surplus <= 0 {
		return nil, 0
	}
	idle := slices.Clone(t.IdleAgents)
	slices.SortStableFunc(idle, func(a, b AgentState) int {
		return cmp.Or(a.RunningSince.Compare(b.RunningSince), cmp.Compare(a.Name, b.Name))
	})
	for _, a := range idle[:surplus] {
		if wait := a.RunningSince.Add(delay).Sub(now); wait > 0 {
			// Sorted by idle time: the rest are younger still.
			return remove, wait
		}
		remove = append(remove, a)
	}
	return remove, 0
}

// Start retry back-off: after consecutive agents that failed to start, the
// pool waits firstStartRetry, doubling per further failure up to maxStartRetry,
// before it starts another.
const (
	firstStartRetry = 10 * time.Second
	maxStartRetry   = 5 * time.Minute
)

// StartRetryAfter returns how long a pool must still wait before starting
// agents, after failures consecutive start failures, the last at last.
func StartRetryAfter(failures int, last, now time.Time) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := maxStartRetry
	if failures <= 16 {
		d = min(firstStartRetry<<(failures-1), maxStartRetry)
	}
	return max(last.Add(d).Sub(now), 0)
}
