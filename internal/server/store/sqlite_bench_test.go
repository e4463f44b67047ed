package store_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/agentry-dev/agentry/internal/server/store"
)

// benchJob is a small write of the kind a burst of CI agents makes: queue a
// job and read it back.
func benchJob(b *testing.B) (*store.SQLite, store.Job) {
	b.Helper()
	s, err := store.NewSQLite(filepath.Join(b.TempDir(), "agentry.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	p, err := s.CreatePool(context.Background(), "default", t0)
	if err != nil {
		b.Fatal(err)
	}
	return s, store.Job{PoolID: p.ID, PoolName: "default", JobID: "j", Name: "build", QueueTime: t0}
}

// BenchmarkSQLiteConcurrentWrites is a burst: 64 goroutines writing at once,
// as 64 agents' requests do. ns/op is the store's throughput.
func BenchmarkSQLiteConcurrentWrites(b *testing.B) {
	const writers = 64
	s, job := benchJob(b)
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range writers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := s.CreateJob(ctx, job); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkSQLiteWrite is one writer alone: the latency of a write nothing
// else competes with.
func BenchmarkSQLiteWrite(b *testing.B) {
	s, job := benchJob(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := s.CreateJob(ctx, job); err != nil {
			b.Fatal(err)
		}
	}
}
