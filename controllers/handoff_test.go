package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
)

// A created Agent is offered, as a copy, until the cache has it or
// newAgentMemory has passed, and its reconcile is woken once.
func TestNewAgentsAreOfferedUntilSeen(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	n := newNewAgents()
	key := types.NamespacedName{Namespace: "ci", Name: "linux-a"}
	n.add(&agentryv1.Agent{ObjectMeta: metav1.ObjectMeta{Namespace: "ci", Name: "linux-a", UID: "uid-a"}}, t0)
	select {
	case e := <-n.events:
		if e.Object != key {
			t.Errorf("woke %v, want %v", e.Object, key)
		}
	default:
		t.Error("adding an Agent woke no reconcile")
	}
	got := n.get(key, t0.Add(time.Second))
	if got == nil || got.UID != "uid-a" {
		t.Fatalf("get a second after = %v, want the created Agent", got)
	}
	got.Name = "changed"
	if again := n.get(key, t0.Add(time.Second)); again == nil || again.Name != "linux-a" {
		t.Errorf("a caller's change reached the kept Agent: %v", again)
	}
	if n.get(types.NamespacedName{Namespace: "ci", Name: "linux-b"}, t0) != nil {
		t.Error("get of an Agent never added returned one")
	}
	n.seen(key)
	if n.get(key, t0) != nil {
		t.Error("an Agent the cache has seen is still offered")
	}

	n.add(&agentryv1.Agent{ObjectMeta: metav1.ObjectMeta{Namespace: "ci", Name: "linux-a", UID: "uid-a"}}, t0)
	if n.get(key, t0.Add(newAgentMemory+time.Second)) != nil {
		t.Errorf("an Agent created more than %s ago is still offered", newAgentMemory)
	}
	// Old entries go when others are added.
	n.add(&agentryv1.Agent{ObjectMeta: metav1.ObjectMeta{Namespace: "ci", Name: "linux-c"}}, t0)
	n.add(&agentryv1.Agent{ObjectMeta: metav1.ObjectMeta{Namespace: "ci", Name: "linux-d"}}, t0.Add(newAgentMemory+time.Second))
	if len(n.agents) != 1 {
		t.Errorf("%d Agents kept after the older ones expired, want 1", len(n.agents))
	}

	var none *newAgents // a reconciler without a pool's hand-over
	none.add(&agentryv1.Agent{}, t0)
	none.seen(key)
	if none.get(key, t0) != nil {
		t.Error("a nil newAgents offered an Agent")
	}
}
