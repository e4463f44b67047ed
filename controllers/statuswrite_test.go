package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
)

// A status write that changes only the counts waits until a second has
// passed since the last write; any other change is written at once.
func TestPoolStatusCountsWait(t *testing.T) {
	now := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	key := types.NamespacedName{Namespace: "ci", Name: "linux"}
	r := &AgentPoolReconciler{Now: func() time.Time { return now }}
	before := agentryv1.AgentPoolStatus{WaitingJobs: 3, Agents: agentryv1.AgentCounts{Starting: 1, Total: 1}}
	counts := before
	counts.WaitingJobs, counts.Agents = 1, agentryv1.AgentCounts{Starting: 3, Total: 3}
	condition := counts
	condition.Conditions = []metav1.Condition{{Type: agentryv1.PoolReady, Status: metav1.ConditionFalse, Reason: "StartBackoff"}}

	if w := r.countsWait(key, &before, &counts); w != 0 {
		t.Errorf("first write waits %s, want 0", w)
	}
	r.lastStatusWrite.Store(key, now.Add(-300*time.Millisecond))
	if w := r.countsWait(key, &before, &counts); w != 700*time.Millisecond {
		t.Errorf("counts 300ms after the last write wait %s, want 700ms", w)
	}
	if w := r.countsWait(key, &before, &condition); w != 0 {
		t.Errorf("a condition change waits %s, want 0", w)
	}
	r.lastStatusWrite.Store(key, now.Add(-statusCountsInterval))
	if w := r.countsWait(key, &before, &counts); w != 0 {
		t.Errorf("counts a second after the last write wait %s, want 0", w)
	}
}
