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

	got := c.pending(linux, map[string]bool{"linux-a": true}, t0.Add(time.Second))
	if !slices.Equal(got, []string{"linux-b"}) {
		t.Errorf("pending with linux-a in the cache = %v, want [linux-b]", got)
	}
	// Seen once is enough: it is not counted twice when the cache later
	// drops it (deleted).
	if got := c.pending(linux, nil, t0.Add(2*time.Second)); !slices.Equal(got, []string{"linux-b"}) {
		t.Errorf("pending after linux-a was seen = %v, want [linux-b]", got)
	}
	if got := c.pending(linux, nil, t0.Add(createdAgentsMemory+time.Second)); len(got) != 0 {
		t.Errorf("pending after %s = %v, want none", createdAgentsMemory, got)
	}
	if got := c.pending(windows, nil, t0.Add(time.Second)); !slices.Equal(got, []string{"windows-a"}) {
		t.Errorf("the other pool's pending = %v, want [windows-a]", got)
	}
	c.forget(windows)
	if got := c.pending(windows, nil, t0.Add(time.Second)); len(got) != 0 {
		t.Errorf("pending after forget = %v, want none", got)
	}
}
