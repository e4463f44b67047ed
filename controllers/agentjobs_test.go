package controllers

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// The Agent reconciler is woken once per change the server reports of an
// agent's job: assigned, then finished. An unchanged queue wakes nobody,
// and a finished job wins over anything else named for the same agent.
func TestAgentJobsWakeOnChange(t *testing.T) {
	ctx := context.Background()
	pool := types.NamespacedName{Namespace: "ns", Name: "wake-on-change"}
	queued := time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)
	received := queued.Add(3 * time.Second)
	done := queued.Add(time.Minute)
	succeeded := pipelines.ResultSucceeded
	held := func(id int64, agentID int, name string) pipelines.TaskAgentJobRequest {
		return pipelines.TaskAgentJobRequest{RequestID: id, QueueTime: &queued, ReceiveTime: &received,
			ReservedAgent: &pipelines.TaskAgentReference{ID: agentID, Name: name}}
	}
	finished := func(r pipelines.TaskAgentJobRequest) pipelines.TaskAgentJobRequest {
		r.FinishTime, r.Result = &done, &succeeded
		return r
	}
	waiting := pipelines.TaskAgentJobRequest{RequestID: 9, QueueTime: &queued}

	b := newAgentJobs()
	drain := func() []agentWake {
		var got []agentWake
		for {
			select {
			case ev := <-b.events:
				got = append(got, ev.Object)
			default:
				return got
			}
		}
	}
	key := func(name string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: name} }
	steps := []struct {
		name     string
		requests []pipelines.TaskAgentJobRequest
		want     []agentWake
		lookup   map[int]agentJob
		started  uint64 // queued → started observations so far
	}{
		{"a job waits", []pipelines.TaskAgentJobRequest{waiting}, nil, map[int]agentJob{1: {}}, 0},
		{"agent 1 takes job 1", []pipelines.TaskAgentJobRequest{waiting, held(1, 1, "linux-a")},
			[]agentWake{{agent: key("linux-a")}}, map[int]agentJob{1: {RequestID: 1}}, 1},
		{"nothing changed", []pipelines.TaskAgentJobRequest{held(1, 1, "linux-a"), waiting}, nil,
			map[int]agentJob{1: {RequestID: 1}}, 1},
		{"job 1 finished", []pipelines.TaskAgentJobRequest{finished(held(1, 1, "linux-a")), held(7, 1, "linux-a")},
			[]agentWake{{agent: key("linux-a"), finished: true}}, map[int]agentJob{1: {RequestID: 1, Finished: true}}, 1},
		{"agent 1 gone from the queue", nil, nil, map[int]agentJob{1: {}}, 1},
	}
	// The histogram is the process's: -count runs this test again on it.
	base := startedObservations(t, pool)
	for _, s := range steps {
		b.observe(ctx, pool, s.requests)
		if diff := cmp.Diff(s.want, drain(), cmp.AllowUnexported(agentWake{})); diff != "" {
			t.Errorf("%s: wakes (-want +got):\n%s", s.name, diff)
		}
		if got := startedObservations(t, pool) - base; got != s.started {
			t.Errorf("%s: %d queued → started observations, want %d", s.name, got, s.started)
		}
		for id, want := range s.lookup {
			got, _ := b.lookup(pool, id)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s: lookup(%d) (-want +got):\n%s", s.name, id, diff)
			}
		}
	}
	if _, ok := b.lookup(types.NamespacedName{Namespace: "ns", Name: "other"}, 1); ok {
		t.Error("another pool's lookup found agent 1")
	}

	// A restarted manager finds job 2 held already: not a start it saw.
	restarted := types.NamespacedName{Namespace: "ns", Name: "wake-after-restart"}
	before := startedObservations(t, restarted)
	newAgentJobs().observe(ctx, restarted, []pipelines.TaskAgentJobRequest{held(2, 2, "linux-b")})
	if got := startedObservations(t, restarted) - before; got != 0 {
		t.Errorf("after a restart: %d queued → started observations, want 0", got)
	}
}

func startedObservations(t *testing.T, pool types.NamespacedName) uint64 {
	t.Helper()
	var m dto.Metric
	if err := queuedToJobStarted.WithLabelValues(pool.Namespace, pool.Name).(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}
