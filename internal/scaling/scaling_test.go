package scaling

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

func TestDecide(t *testing.T) {
	tests := []struct {
		name                                          string
		waiting, minIdle, maxAgents, available, total int
		want                                          int
	}{
		{name: "nothing to do", want: 0, maxAgents: 10},
		{name: "burst of N creates N", waiting: 5, maxAgents: 10, want: 5},
		{name: "starting agents already cover the burst", waiting: 5, maxAgents: 10, available: 5, total: 5, want: 0},
		{name: "partly covered", waiting: 5, maxAgents: 10, available: 3, total: 3, want: 2},
		{name: "busy agents do not cover waiting jobs", waiting: 2, maxAgents: 10, available: 0, total: 4, want: 2},
		{name: "capped by maxAgents", waiting: 20, maxAgents: 10, want: 10},
		{name: "capped by room left", waiting: 5, maxAgents: 10, available: 0, total: 8, want: 2},
		{name: "at the cap", waiting: 5, maxAgents: 3, total: 3, want: 0},
		{name: "over the cap after maxAgents shrank", waiting: 5, maxAgents: 2, total: 4, want: 0},
		{name: "warm agents", minIdle: 2, maxAgents: 10, want: 2},
		{name: "warm agents on top of waiting jobs", waiting: 3, minIdle: 2, maxAgents: 10, available: 1, total: 1, want: 4},
		{name: "more available than wanted never scales down", waiting: 1, maxAgents: 10, available: 4, total: 4, want: 0},
		{name: "maxAgents 0 pauses the pool", waiting: 5, minIdle: 0, maxAgents: 0, want: 0},
		{name: "negative inputs are treated as 0", waiting: 1, minIdle: -3, maxAgents: -1, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(tt.waiting, tt.minIdle, tt.maxAgents, tt.available, tt.total); got != tt.want {
				t.Errorf("Decide(waiting=%d, minIdle=%d, maxAgents=%d, available=%d, total=%d) = %d, want %d",
					tt.waiting, tt.minIdle, tt.maxAgents, tt.available, tt.total, got, tt.want)
			}
		})
	}
}

func TestCount(t *testing.T) {
	now := time.Now()
	waiting := func(id int64) pipelines.TaskAgentJobRequest { return pipelines.TaskAgentJobRequest{RequestID: id} }
	assigned := func(id int64, agent int) pipelines.TaskAgentJobRequest {
		return pipelines.TaskAgentJobRequest{RequestID: id, AssignTime: &now, ReservedAgent: &pipelines.TaskAgentReference{ID: agent}}
	}
	running := func(id int64, agent int) pipelines.TaskAgentJobRequest {
		r := assigned(id, agent)
		r.ReceiveTime = &now
		return r
	}
	demanding := func(id int64, demands ...string) pipelines.TaskAgentJobRequest {
		return pipelines.TaskAgentJobRequest{RequestID: id, Demands: demands}
	}
	named := func(r pipelines.TaskAgentJobRequest, agent string) pipelines.TaskAgentJobRequest {
		r.ReservedAgent.Name = agent
		return r
	}
	finished := func(id int64, agent int) pipelines.TaskAgentJobRequest {
		r := running(id, agent)
		r.FinishTime, r.Result = &now, ptr(pipelines.ResultSucceeded)
		return r
	}

	tests := []struct {
		name     string
		requests []pipelines.TaskAgentJobRequest
		agents   []AgentState
		want     Tally
	}{
		{
			name: "empty",
			want: Tally{JobRequests: map[int]int64{}},
		},
		{
			name:     "waiting jobs and starting agents",
			requests: []pipelines.TaskAgentJobRequest{waiting(1), waiting(2)},
			agents:   []AgentState{{}, {AgentID: 7}},
			want:     Tally{Waiting: 2, Starting: 2, Total: 2, JobRequests: map[int]int64{}},
		},
		{
			name:     "a running agent with a received job is busy",
			requests: []pipelines.TaskAgentJobRequest{running(1, 7), waiting(2)},
			agents:   []AgentState{{AgentID: 7, Running: true}, {AgentID: 8, Running: true}},
			want: Tally{Waiting: 1, Idle: 1, Busy: 1, Total: 2, JobRequests: map[int]int64{7: 1},
				IdleAgents: []AgentState{{AgentID: 8, Running: true}}},
		},
		{
			name:     "assigned but not received: the agent holds it and is busy, the job no longer waits",
			requests: []pipelines.TaskAgentJobRequest{assigned(1, 7)},
			agents:   []AgentState{{AgentID: 7, Running: true}},
			want:     Tally{Busy: 1, Total: 1, JobRequests: map[int]int64{7: 1}},
		},
		{
			name:     "jobs whose demands the pool does not meet are not its demand",
			requests: []pipelines.TaskAgentJobRequest{waiting(1), demanding(2, "Agent.OS -equals Windows_NT"), demanding(3, "Agent.OS -equals Linux")},
			want:     Tally{Waiting: 2, Unmatched: 1, JobRequests: map[int]int64{}},
		},
		{
			name:     "finished requests are no demand, and the agent that ran one is spent",
			requests: []pipelines.TaskAgentJobRequest{finished(1, 7), finished(2, 99)},
			agents:   []AgentState{{AgentID: 7, Running: true}, {AgentID: 8, Running: true}},
			want: Tally{Idle: 1, Total: 2, JobRequests: map[int]int64{},
				IdleAgents: []AgentState{{AgentID: 8, Running: true}}},
		},
		{
			// The queue watch lists unfinished requests only: an agent seen
			// holding a job that has left the queue ran it and is on its way
			// out, pod still running or not.
			name:     "an agent whose held job left the queue is spent",
			requests: []pipelines.TaskAgentJobRequest{waiting(2), running(3, 9)},
			agents: []AgentState{{AgentID: 7, Running: true, HeldJob: 1}, {AgentID: 8, Running: true},
				{AgentID: 9, Running: true, HeldJob: 3}},
			want: Tally{Waiting: 1, Idle: 1, Busy: 1, Total: 3, JobRequests: map[int]int64{9: 3},
				IdleAgents: []AgentState{{AgentID: 8, Running: true}}},
		},
		{
			// The status write that records an agent's id may not have
			// reached the pool's cache when the server already shows the
			// agent holding (or having run) a job: matched by name, it is
			// busy (or spent), not available for a waiting job.
			name: "an agent whose id the pool does not see yet is matched by name",
			requests: []pipelines.TaskAgentJobRequest{waiting(1), named(assigned(2, 7), "Linux-A"), named(finished(3, 8), "linux-b"),
				named(assigned(4, 9), "linux-c")},
			agents: []AgentState{{Name: "linux-a"}, {Name: "linux-b"}, {Name: "linux-c", AgentID: 10}, {Name: "linux-d"}},
			want:   Tally{Waiting: 1, Busy: 1, Starting: 2, Total: 4, JobRequests: map[int]int64{7: 2, 9: 4}},
		},
		{
			name:   "finished agents count for nothing",
			agents: []AgentState{{AgentID: 7, Finished: true}, {AgentID: 8, Finished: true, Deleting: true}},
			want:   Tally{JobRequests: map[int]int64{}},
		},
		{
			name:   "deleting agents take room but are not available",
			agents: []AgentState{{AgentID: 7, Running: true, Deleting: true}, {Deleting: true}},
			want:   Tally{Total: 2, JobRequests: map[int]int64{}},
		},
		{
			name:     "a request reserved for an unknown agent makes nobody busy",
			requests: []pipelines.TaskAgentJobRequest{running(1, 99)},
			agents:   []AgentState{{AgentID: 7, Running: true}},
			want:     Tally{Idle: 1, Total: 1, JobRequests: map[int]int64{99: 1}, IdleAgents: []AgentState{{AgentID: 7, Running: true}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Count(tt.requests, tt.agents, linuxPool.Satisfy)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Count() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

var linuxPool = pipelines.NewCapabilities(map[string]string{"Agent.OS": "Linux"}, nil)

func TestSurplus(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	idle := func(name string, idleFor time.Duration) AgentState {
		return AgentState{Name: name, AgentID: len(name), Running: true, RunningSince: now.Add(-idleFor)}
	}
	const delay = 30 * time.Second
	tests := []struct {
		name              string
		tally             Tally
		minIdle, maxAgent int
		wantRemove        []string
		wantNext          time.Duration
	}{
		{
			name:     "idle agents matched by waiting jobs stay",
			tally:    Tally{Waiting: 2, Idle: 2, Total: 2, IdleAgents: []AgentState{idle("a", time.Hour), idle("b", time.Hour)}},
			maxAgent: 10,
		},
		{
			name:       "surplus idle for longer than the delay goes, longest idle first",
			tally:      Tally{Idle: 3, Total: 3, IdleAgents: []AgentState{idle("a", time.Minute), idle("b", time.Hour), idle("c", 31*time.Second)}},
			minIdle:    1,
			maxAgent:   10,
			wantRemove: []string{"b", "a"},
		},
		{
			name:     "surplus idle for less than the delay waits",
			tally:    Tally{Idle: 1, Total: 1, IdleAgents: []AgentState{idle("a", 10*time.Second)}},
			maxAgent: 10,
			wantNext: 20 * time.Second,
		},
		{
			name:       "one goes now, the next later",
			tally:      Tally{Idle: 2, Total: 2, IdleAgents: []AgentState{idle("a", time.Minute), idle("b", 25*time.Second)}},
			maxAgent:   10,
			wantRemove: []string{"a"},
			wantNext:   5 * time.Second,
		},
		{
			name:     "minIdle keeps the warm pool",
			tally:    Tally{Idle: 2, Total: 2, IdleAgents: []AgentState{idle("a", time.Hour), idle("b", time.Hour)}},
			minIdle:  2,
			maxAgent: 10,
		},
		{
			name:       "starting agents count as supply: the idle one is surplus",
			tally:      Tally{Waiting: 1, Starting: 1, Idle: 1, Total: 2, IdleAgents: []AgentState{idle("a", time.Hour)}},
			maxAgent:   10,
			wantRemove: []string{"a"},
		},
		{
			name:     "busy agents are never surplus",
			tally:    Tally{Busy: 3, Total: 3},
			maxAgent: 1,
		},
		{
			name:       "maxAgents shrank below the idle agents",
			tally:      Tally{Waiting: 5, Idle: 3, Total: 3, IdleAgents: []AgentState{idle("a", time.Hour), idle("b", time.Hour), idle("c", time.Hour)}},
			maxAgent:   1,
			wantRemove: []string{"a", "b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			remove, next := Surplus(tt.tally, tt.minIdle, tt.maxAgent, delay, now)
			var names []string
			for _, a := range remove {
				names = append(names, a.Name)
			}
			if diff := cmp.Diff(tt.wantRemove, names); diff != "" {
				t.Errorf("removed (-want +got):\n%s", diff)
			}
			if next != tt.wantNext {
				t.Errorf("next = %s, want %s", next, tt.wantNext)
			}
		})
	}
}

// TestBurst replays a burst of jobs through Count and Decide as the pool
// reconciler does, reconcile after reconcile, and checks the pool starts
// exactly one agent per job and never more than maxAgents at once.
func TestBurst(t *testing.T) {
	for _, tt := range []struct{ jobs, maxAgents, minIdle, wantStarted int }{
		{jobs: 30, maxAgents: 10, wantStarted: 30},
		{jobs: 5, maxAgents: 10, wantStarted: 5},
		{jobs: 5, maxAgents: 10, minIdle: 2, wantStarted: 7},
	} {
		var requests []pipelines.TaskAgentJobRequest
		for i := range tt.jobs {
			requests = append(requests, pipelines.TaskAgentJobRequest{RequestID: int64(i + 1)})
		}
		var agents []AgentState
		started, peak, nextID := 0, 0, 1
		for round := 0; round < 10*tt.jobs; round++ {
			tally := Count(requests, agents, nil)
			n := Decide(tally.Waiting, tt.minIdle, tt.maxAgents, tally.Available(), tally.Total)
			for range n {
				agents = append(agents, AgentState{AgentID: nextID})
				nextID++
			}
			started += n
			// One step of the world: agents come up, an idle agent takes
			// the oldest waiting job, a busy one finishes it and leaves.
			live := agents[:0]
			for _, a := range agents {
				switch job, busy := tally.JobRequests[a.AgentID]; {
				case busy:
					for i := range requests {
						if requests[i].RequestID == job {
							requests[i].Result = ptr(pipelines.ResultSucceeded)
						}
					}
					continue // finished and removed
				case !a.Running:
					a.Running = true
				default:
					for i := range requests {
						if requests[i].ReservedAgent == nil && requests[i].Result == nil {
							requests[i].ReservedAgent = &pipelines.TaskAgentReference{ID: a.AgentID}
							break
						}
					}
				}
				live = append(live, a)
			}
			agents = live
			peak = max(peak, len(agents))
		}
		if started != tt.wantStarted || peak > tt.maxAgents {
			t.Errorf("%d jobs, maxAgents %d, minIdle %d: started %d agents (want %d), peak %d (max %d)",
				tt.jobs, tt.maxAgents, tt.minIdle, started, tt.wantStarted, peak, tt.maxAgents)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestStartRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		failures int
		ago      time.Duration
		want     time.Duration
	}{
		{failures: 0, want: 0},
		{failures: 1, ago: 0, want: 10 * time.Second},
		{failures: 1, ago: 4 * time.Second, want: 6 * time.Second},
		{failures: 1, ago: time.Minute, want: 0},
		{failures: 3, ago: 0, want: 40 * time.Second},
		{failures: 10, ago: 0, want: 5 * time.Minute},
		{failures: 1000, ago: time.Minute, want: 4 * time.Minute},
	}
	for _, tt := range tests {
		if got := StartRetryAfter(tt.failures, now.Add(-tt.ago), now); got != tt.want {
			t.Errorf("StartRetryAfter(%d failures, last %s ago) = %s, want %s", tt.failures, tt.ago, got, tt.want)
		}
	}
}
