// Package scaling holds the operator's demand math: how a pool's agents
// divide into starting, idle and busy given the server's job queue, and how
// many new agents that asks for. Everything here is a pure function of plain
// data.
package scaling

import "github.com/agentry-dev/agentry/internal/pipelines"

// Decide returns how many agents to start: enough that every waiting job and
// minIdle warm agents have an agent that is starting or idle (available), but
// never more than maxAgents agents in total.
func Decide(waiting, minIdle, maxAgents, available, total int) int {
	n := min(waiting+max(minIdle, 0)-available, max(maxAgents, 0)-total)
	return max(n, 0)
}

// AgentState is what the operator knows about one of a pool's agents.
type AgentState struct {
	// AgentID is the server's id for the agent; 0 while not registered.
	AgentID int
	// Running is true once the agent's pod runs.
	Running bool
	// Finished is true once the agent's pod has ended; a finished agent
	// counts for nothing, it is on its way out.
	Finished bool
	// Deleting is true when the agent is being deleted: it still counts
	// towards the total (its pod may run) but is no longer available.
	Deleting bool
}

// Tally is a pool's demand and supply at one moment.
type Tally struct {
	// Waiting is the number of job requests no agent has taken.
	Waiting int
	// Starting, Idle and Busy count live agents.
	Starting, Idle, Busy int
	// Total counts every agent that is not finished.
	Total int
	// JobRequests maps an agent id to the request it runs, for busy agents.
	JobRequests map[int]int64
}

// Available is the number of agents that can still take a job.
func (t Tally) Available() int { return t.Starting + t.Idle }

// Count tallies one snapshot of the job queue against the pool's agents.
//
// An agent is busy when a request that is no longer waiting (an agent
// received it) and not finished names it as reserved agent. A request that
// was assigned but not yet received still counts as waiting, and its agent as
// idle, so the two cancel out and no extra agent is started for it.
func Count(requests []pipelines.TaskAgentJobRequest, agents []AgentState) Tally {
	t := Tally{JobRequests: map[int]int64{}}
	for i := range requests {
		r := &requests[i]
		switch {
		case r.Waiting():
			t.Waiting++
		case r.FinishTime == nil && r.Result == nil && r.ReservedAgent != nil && r.ReservedAgent.ID != 0:
			t.JobRequests[r.ReservedAgent.ID] = r.RequestID
		}
	}
	for _, a := range agents {
		if a.Finished {
			continue
		}
		t.Total++
		_, busy := t.JobRequests[a.AgentID]
		switch {
		case a.AgentID != 0 && busy:
			t.Busy++
		case a.Deleting:
			// Neither available nor known to be busy: it only takes room.
		case !a.Running:
			t.Starting++
		default:
			t.Idle++
		}
	}
	return t
}
