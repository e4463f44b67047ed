package controllers

import (
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// A created Agent counts until the cache shows it, or until it has been
// missing from the cache for createdAgentsMemory; each pool has its own.
func TestCreatedAgentsCountUntilSeen(t *testing.T) {
	var c createdAgents
	linux := types.NamespacedName{Namespace: "ci", Name: "linux"}
	windows := types.NamespacedName{Namespace: "ci", Name: "windows"}
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	c.add(linux, "linux-a", t0)
	c.add(linux, "linux-b", t0)
	c.add(windows, "windows-a", t0)

	got, _ := c.pending(linux, map[string]bool{"linux-a": true}, t0.Add(time.Second))
	if !slices.Equal(got, []string{"linux-b"}) {
		t.Errorf("pending with linux-a in the cache = %v, want [linux-b]", got)
	}
	// Seen once is enough: it is not counted twice when the cache later
	// drops it (deleted).
	if got, _ := c.pending(linux, nil, t0.Add(2*time.Second)); !slices.Equal(got, []string{"linux-b"}) {
		t.Errorf("pending after linux-a was seen = %v, want [linux-b]", got)
	}
	if got, _ := c.pending(linux, nil, t0.Add(createdAgentsMemory+time.Second)); len(got) != 0 {
		t.Errorf("pending after %s = %v, want none", createdAgentsMemory, got)
	}
	if got, _ := c.pending(windows, nil, t0.Add(time.Second)); !slices.Equal(got, []string{"windows-a"}) {
		t.Errorf("the other pool's pending = %v, want [windows-a]", got)
	}
	c.forget(windows)
	if got, _ := c.pending(windows, nil, t0.Add(time.Second)); len(got) != 0 {
		t.Errorf("pending after forget = %v, want none", got)
	}
}

// A create under way counts until it returns; then the Agent it made counts
// by name, in the same step, and a failed one not at all.
func TestCreatesUnderWayCount(t *testing.T) {
	var c createdAgents
	linux := types.NamespacedName{Namespace: "ci", Name: "linux"}
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	count := func() int {
		names, creating := c.pending(linux, nil, t0)
		return len(names) + creating
	}
	c.begin(linux, 3)
	if n := count(); n != 3 {
		t.Fatalf("3 creates under way count %d", n)
	}
	c.done(linux, "linux-a", t0)
	c.done(linux, "", t0) // failed
	if names, creating := c.pending(linux, nil, t0); !slices.Equal(names, []string{"linux-a"}) || creating != 1 {
		t.Errorf("after one create and one failure: names %v, creating %d; want [linux-a], 1", names, creating)
	}
	c.done(linux, "linux-b", t0)
	if n := count(); n != 2 {
		t.Errorf("after all returned: %d counted, want the 2 created", n)
	}

	// A pool deleted while its creates are under way is not brought back
	// by their return.
	c.begin(linux, 1)
	c.forget(linux)
	c.done(linux, "linux-c", t0)
	if names, creating := c.pending(linux, nil, t0); len(names) != 0 || creating != 0 {
		t.Errorf("after forget: names %v, creating %d; want none", names, creating)
	}
}
