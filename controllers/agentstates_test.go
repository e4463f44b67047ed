package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/scaling"
)

// maxAgents caps pods as well as Agents: a pod that outlives its Agent (a
// finished agent's Agent goes as its pod is told to stop) takes room until
// it is gone, and an Agent whose pod ended takes room without being
// available.
func TestPodsWithoutTheirAgentTakeRoom(t *testing.T) {
	running := agentryv1.Agent{ObjectMeta: metav1.ObjectMeta{Name: "linux-a"},
		Status: agentryv1.AgentStatus{Phase: agentryv1.AgentRunning, AgentID: 1, PodName: "linux-a"}}
	ended := agentryv1.Agent{ObjectMeta: metav1.ObjectMeta{Name: "linux-b"},
		Status: agentryv1.AgentStatus{Phase: agentryv1.AgentRunning, AgentID: 2, PodName: "linux-b"}}
	creating := agentryv1.Agent{} // a create under way: no name, no pod yet
	pods := map[string]bool{"linux-a": false, "linux-b": true, "linux-gone": false}

	tally := scaling.Count(nil, agentStates([]agentryv1.Agent{running, ended, creating}, pods), nil)
	if tally.Total != 4 {
		t.Errorf("total = %d, want 4: two Agents with pods, one being created, one pod without its Agent", tally.Total)
	}
	if tally.Idle != 1 || tally.Starting != 1 {
		t.Errorf("idle %d, starting %d; want 1 and 1 (the running agent, the one being created)", tally.Idle, tally.Starting)
	}
	if got := scaling.Decide(1, 0, 4, tally.Available(), tally.Total); got != 0 {
		t.Errorf("with maxAgents 4 and four taken, a waiting job starts %d agents, want 0 (the idle one takes it)", got)
	}
	if got := scaling.Decide(3, 0, 4, tally.Available(), tally.Total); got != 0 {
		t.Errorf("with maxAgents 4 and four taken, 3 waiting jobs start %d agents, want 0", got)
	}
	if got := scaling.Decide(3, 0, 5, tally.Available(), tally.Total); got != 1 {
		t.Errorf("with maxAgents 5 and four taken, 3 waiting jobs start %d agents, want 1", got)
	}
}
