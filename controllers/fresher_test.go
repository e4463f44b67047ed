package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
)

// A reconcile that meets the version its own status writes replaced works
// on what it wrote; once the cache shows any other version, the cache wins
// and the written copy is forgotten.
func TestFresherUsesTheWrittenAgentUntilTheCacheMovesOn(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	r := &AgentReconciler{Now: func() time.Time { return t0 }}
	version := agentVersion

	if got := freshest(r, version("1", 0)); got.ResourceVersion != "1" {
		t.Fatalf("with nothing written, fresher gave version %s, want the cache's 1", got.ResourceVersion)
	}
	// Two writes in a row: registered (1 → 2), then busy (2 → 3).
	r.rememberWritten(version("2", 7), "1")
	r.rememberWritten(version("3", 7), "2")
	got := freshest(r, version("1", 0))
	if got.ResourceVersion != "3" || got.Status.AgentID != 7 {
		t.Errorf("the cache still at 1: fresher gave version %s with agentId %d, want the written 3 with 7", got.ResourceVersion, got.Status.AgentID)
	}
	got.Status.AgentID = 99 // a reconcile's changes must not reach the kept copy
	if again := freshest(r, version("1", 0)); again.Status.AgentID != 7 {
		t.Errorf("a reconcile's change leaked into the written copy: agentId %d", again.Status.AgentID)
	}
	// The cache shows the write in between: it is used, and the written
	// copy forgotten even when the cache later shows 1 again (it cannot,
	// but nothing is kept to offer).
	if got := freshest(r, version("2", 7)); got.ResourceVersion != "2" {
		t.Errorf("the cache at 2: fresher gave version %s, want the cache's", got.ResourceVersion)
	}
	if got := freshest(r, version("1", 0)); got.ResourceVersion != "1" {
		t.Errorf("after the cache moved on, fresher gave version %s, want the cache's 1", got.ResourceVersion)
	}

	// A write on top of someone else's version starts a new run of writes.
	r.rememberWritten(version("5", 7), "4")
	if got := freshest(r, version("4", 7)); got.ResourceVersion != "5" {
		t.Errorf("the cache at 4: fresher gave version %s, want the written 5", got.ResourceVersion)
	}
	// A removed Agent's written copy goes with it.
	r.rememberRemoved("uid-a")
	if got := freshest(r, version("4", 7)); got.ResourceVersion != "4" {
		t.Errorf("after removal, fresher gave version %s, want the cache's 4", got.ResourceVersion)
	}
}

// Written copies of Agents that were never reconciled again are pruned,
// by later writes as by removals.
func TestWrittenAgentsArePruned(t *testing.T) {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	r := &AgentReconciler{Now: func() time.Time { return now }}
	agent := func(name string) *agentryv1.Agent {
		return &agentryv1.Agent{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ci", UID: types.UID("uid-" + name), ResourceVersion: "2"}}
	}
	r.rememberWritten(agent("a"), "1")
	now = now.Add(removedMemory + time.Second)
	r.rememberWritten(agent("b"), "1")
	if _, ok := r.written.Load(types.UID("uid-a")); ok {
		t.Errorf("a written copy older than %s was kept past another write", removedMemory)
	}
	if _, ok := r.written.Load(types.UID("uid-b")); !ok {
		t.Errorf("the new written copy was pruned")
	}
	now = now.Add(removedMemory + time.Second)
	r.rememberRemoved("uid-other")
	if _, ok := r.written.Load(types.UID("uid-b")); ok {
		t.Errorf("a written copy older than %s was kept past a removal", removedMemory)
	}
}

// freshest is fresher's Agent.
func freshest(r *AgentReconciler, cached *agentryv1.Agent) *agentryv1.Agent {
	a, _ := r.fresher(cached)
	return a
}

// A new agent's status is held: reconciles see it while the cache shows the
// version it is to be written on, the write at the hold's end replaces it
// with the written copy, and any other change to the Agent drops it.
func TestHeldStatusIsSeenUntilWrittenOrOvertaken(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	r := &AgentReconciler{Now: func() time.Time { return t0 }}
	version := agentVersion
	until := t0.Add(statusHold)
	r.hold(version("1", 7), "1", until)
	got, held := r.fresher(version("1", 0))
	if got.Status.AgentID != 7 || !held.Equal(until) {
		t.Fatalf("fresher = agent %d, held until %v; want the held agent 7 until %v", got.Status.AgentID, held, until)
	}
	if s := r.heldStatus("uid-a"); s == nil || s.AgentID != 7 {
		t.Fatalf("heldStatus = %v, want agent 7's", s)
	}

	// The write at the hold's end: the copy kept is the written one, not held.
	r.rememberWritten(version("2", 7), "1")
	if got, held := r.fresher(version("1", 0)); got.ResourceVersion != "2" || !held.IsZero() {
		t.Fatalf("after the write, fresher = version %s, held until %v; want the written 2, not held", got.ResourceVersion, held)
	}
	if s := r.heldStatus("uid-a"); s != nil {
		t.Fatalf("heldStatus after the write = %v, want none", s)
	}

	// Another change first (a deletion, an edit): the held status goes, and
	// the cache's Agent is used.
	r.hold(version("1", 7), "1", until)
	if got, held := r.fresher(version("3", 0)); got.ResourceVersion != "3" || got.Status.AgentID != 0 || !held.IsZero() {
		t.Fatalf("overtaken: fresher = version %s agent %d held until %v; want the cache's 3", got.ResourceVersion, got.Status.AgentID, held)
	}
	if s := r.heldStatus("uid-a"); s != nil {
		t.Fatalf("heldStatus after being overtaken = %v, want none", s)
	}
}

// agentVersion is Agent linux-a at resourceVersion rv, registered as
// agentID (0: not yet).
func agentVersion(rv string, agentID int32) *agentryv1.Agent {
	a := &agentryv1.Agent{ObjectMeta: metav1.ObjectMeta{Name: "linux-a", Namespace: "ci", UID: "uid-a", ResourceVersion: rv}}
	a.Status.AgentID = agentID
	return a
}

func TestMinPositiveIgnoresAZeroWait(t *testing.T) {
	for _, tt := range []struct{ a, b, want time.Duration }{
		{0, 0, 0},
		{0, time.Second, time.Second},
		{time.Second, 0, time.Second}, // a pending pod's timeout with nothing else to wait for
		{time.Second, 2 * time.Second, time.Second},
		{3 * time.Second, 2 * time.Second, 2 * time.Second},
	} {
		if got := minPositive(tt.a, tt.b); got != tt.want {
			t.Errorf("minPositive(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
