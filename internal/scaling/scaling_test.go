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
			want:     Tally{Waiting: 1, Idle: 1, Busy: 1, Total: 2, JobRequests: map[int]int64{7: 1}},
		},
		{
			name:     "assigned but not received still waits and its agent is idle",
			requests: []pipelines.TaskAgentJobRequest{assigned(1, 7)},
			agents:   []AgentState{{AgentID: 7, Running: true}},
			want:     Tally{Waiting: 1, Idle: 1, Total: 1, JobRequests: map[int]int64{}},
		},
		{
			name:     "finished requests count for nothing",
			requests: []pipelines.TaskAgentJobRequest{finished(1, 7)},
			agents:   []AgentState{{AgentID: 7, Running: true}},
			want:     Tally{Idle: 1, Total: 1, JobRequests: map[int]int64{}},
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
			want:     Tally{Idle: 1, Total: 1, JobRequests: map[int]int64{99: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Count(tt.requests, tt.agents)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Count() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
