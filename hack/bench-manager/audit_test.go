package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Lines as kube-apiserver writes them with the policy auditFlags writes
// (trimmed to the fields the benchmark reads).
const auditLines = `{"stage":"ResponseComplete","verb":"create","objectRef":{"resource":"agents","namespace":"ns"},"responseStatus":{"code":201},"responseObject":{"metadata":{"name":"linux-a"}},"stageTimestamp":"2026-11-26T10:00:00.100000Z"}
{"stage":"ResponseComplete","verb":"create","objectRef":{"resource":"pods","namespace":"ns","name":"linux-a"},"responseStatus":{"code":201},"stageTimestamp":"2026-11-26T10:00:00.250000Z"}
{"stage":"ResponseComplete","verb":"create","objectRef":{"resource":"pods","namespace":"ns","name":"linux-b"},"responseStatus":{"code":409},"stageTimestamp":"2026-11-26T10:00:00.260000Z"}
{"stage":"ResponseComplete","verb":"patch","objectRef":{"resource":"agents","namespace":"ns","name":"linux-a","subresource":"status"},"responseStatus":{"code":200},"stageTimestamp":"2026-11-26T10:00:05.000000Z"}
{"stage":"ResponseComplete","verb":"delete","objectRef":{"resource":"agents","namespace":"ns","name":"linux-a"},"responseStatus":{"code":200},"stageTimestamp":"2026-11-26T10:00:01.300000Z"}
{"stage":"ResponseComplete","verb":"patch","objectRef":{"resource":"agents","namespace":"ns","name":"linux-a"},"responseStatus":{"code":200},"stageTimestamp":"2026-11-26T10:00:01.200000Z"}
{"stage":"ResponseComplete","verb":"patch","objectRef":{"resource":"agents","namespace":"ns","name":"linux-a"},"responseStatus":{"code":404},"stageTimestamp":"2026-11-26T10:00:02.000000Z"}
{"stage":"ResponseComplete","verb":"patch","objectRef":{"resource":"agents","namespace":"ns","name":"linux-c"},"responseStatus":{"code":200},"stageTimestamp":"2026-11-26T10:00:03.000000Z"}
{"stage":"ResponseComplete","verb":"delete","objectRef":{"resource":"agents","namespace":"ns","name":"linux-c"},"responseStatus":{"code":200},"stageTimestamp":"2026-11-26T10:00:03.500000Z"}
`

func TestReadAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(auditLines), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readAudit(path)
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		what string
		got  time.Time
		ok   bool
		want time.Time
	}{
		// An Agent's name is in the create's response only (generateName).
		{"Agent linux-a created", got.created["agents"]["linux-a"], true, at("2026-11-26T10:00:00.1Z")},
		{"pod linux-a created", got.created["pods"]["linux-a"], true, at("2026-11-26T10:00:00.25Z")},
		// The later of the delete and the finalizer's removal; not the
		// status write, nor the failed patch after it was gone.
		{"Agent linux-a removed", got.agentRemoved["linux-a"], true, at("2026-11-26T10:00:01.3Z")},
		{"Agent linux-c removed", got.agentRemoved["linux-c"], true, at("2026-11-26T10:00:03.5Z")},
	} {
		if !c.got.Equal(c.want) {
			t.Errorf("%s at %v, want %v", c.what, c.got, c.want)
		}
	}
	if _, ok := got.created["pods"]["linux-b"]; ok {
		t.Error("a create that failed (409) counted as a creation")
	}
}

func TestReadAuditRefusesAGarbledLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(auditLines+"{not json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readAudit(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("readAudit of a garbled log: %v, want an error naming the file", err)
	}
}

func TestMedianBurst(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	results := []burstResult{
		{toPod: ms(100, 200, 900)}, // p50 200ms
		{toPod: ms(500, 600, 700)}, // p50 600ms
		{toPod: ms(300, 400, 800)}, // p50 400ms
	}
	pick := func(r burstResult) []time.Duration { return r.toPod }
	if got, ok := medianOf(results, pick, 50); !ok || got != 400*time.Millisecond {
		t.Errorf("median burst's p50 = %v, %v; want 400ms", got, ok)
	}
	if got, ok := medianOf(results, pick, 99); !ok || got != 800*time.Millisecond {
		t.Errorf("median burst's p99 = %v, %v; want 800ms (of 900, 700, 800)", got, ok)
	}
	if got := eachBurst(results, pick, 50); got != "200ms, 600ms, 400ms" {
		t.Errorf("each burst's p50 = %q", got)
	}
	// Two bursts: the lower middle one, never an average nobody measured.
	if got, _ := medianOf(results[:2], pick, 50); got != 200*time.Millisecond {
		t.Errorf("median of two bursts' p50 = %v, want 200ms", got)
	}
	if _, ok := medianOf([]burstResult{{}}, pick, 50); ok {
		t.Error("a burst with no figures gave a median")
	}
}
