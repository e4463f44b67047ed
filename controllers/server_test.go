package controllers_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/server/servertest"
)

// testServer is a real agentry-server with the pool serverPool.
type testServer struct {
	*servertest.Instance
}

func startServer(t *testing.T) *testServer {
	t.Helper()
	srv := servertest.Start(t)
	srv.CreatePool(t, serverPool)
	return &testServer{srv}
}

// queueJobs queues n one-step jobs in serverPool and returns their ids.
func (s *testServer) queueJobs(t *testing.T, n int) []int64 {
	t.Helper()
	var ids []int64
	for i := range n {
		j, err := s.Jobs.QueueJob(context.Background(), jobapi.JobSpec{
			Pool:  serverPool,
			Name:  fmt.Sprintf("job-%d", i),
			Steps: []jobapi.Step{{Script: "echo hello"}},
		})
		if err != nil {
			t.Fatalf("queueing a job: %v", err)
		}
		ids = append(ids, j.ID)
	}
	return ids
}
