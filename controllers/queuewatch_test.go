package controllers

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

// watchServer answers the queue watch from a channel; everything else of
// Server is left unimplemented.
type watchServer struct {
	Server
	answers chan watchAnswer
}

type watchAnswer struct {
	state *jobapi.QueueState
	err   error
}

func (s *watchServer) WatchQueue(ctx context.Context, _ int, _ int64, _ time.Duration) (*jobapi.QueueState, error) {
	select {
	case a := <-s.answers:
		return a.state, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func TestQueueWatchWakesThePoolAndFallsBackOn404(t *testing.T) {
	w := newQueueWatchers()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error)
	go func() { stopped <- w.Start(ctx) }()
	defer func() { cancel(); <-stopped }()

	pool := &agentryv1.AgentPool{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "linux"}}
	srv := &watchServer{answers: make(chan watchAnswer)}
	// Queue starts watches only once the manager has started the watchers.
	select {
	case <-w.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the queue watchers did not start")
	}
	if _, current, _ := w.Queue(pool, srv, "token", 1); current {
		t.Fatal("the queue is current before the watch answered")
	}

	want := []pipelines.TaskAgentJobRequest{{RequestID: 7}}
	srv.answers <- watchAnswer{state: &jobapi.QueueState{Revision: 3, JobRequests: want}}
	ev := <-w.events
	if ev.Object.GetName() != "linux" || ev.Object.GetNamespace() != "ns" {
		t.Fatalf("woke %s/%s, want ns/linux", ev.Object.GetNamespace(), ev.Object.GetName())
	}
	got, current, _ := w.Queue(pool, srv, "token", 1)
	if !current || len(got) != 1 || got[0].RequestID != 7 {
		t.Fatalf("Queue() = %v, current %v; want the watched request 7", got, current)
	}

	// A failing call makes the queue not current, so the reconciler reads
	// it itself; a 404 says the server has no watch.
	srv.answers <- watchAnswer{err: &pipelines.Error{StatusCode: http.StatusNotFound}}
	<-w.events
	if _, current, unsupported := w.Queue(pool, srv, "token", 1); current || !unsupported {
		t.Fatalf("after a 404: current %v, unsupported %v; want false, true", current, unsupported)
	}

	// A new token restarts the watch.
	if _, current, unsupported := w.Queue(pool, srv, "new-token", 1); current || unsupported {
		t.Fatalf("after a token change: current %v, unsupported %v; want a fresh watch", current, unsupported)
	}
	srv.answers <- watchAnswer{err: errors.New("connection refused")}
	<-w.events
	if _, current, unsupported := w.Queue(pool, srv, "new-token", 1); current || unsupported {
		t.Fatalf("after a transient error: current %v, unsupported %v; want false, false", current, unsupported)
	}
}

// timedWatchServer answers every queue watch call at once with a new
// revision, as the server does in a burst, and records when each call came.
type timedWatchServer struct {
	Server
	calls chan time.Time
	rev   int64
}

func (s *timedWatchServer) WatchQueue(ctx context.Context, _ int, _ int64, _ time.Duration) (*jobapi.QueueState, error) {
	select {
	case s.calls <- time.Now():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.rev++
	return &jobapi.QueueState{Revision: s.rev}, nil
}

func TestQueueWatchCallsAtMostEveryInterval(t *testing.T) {
	w := newQueueWatchers()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error)
	go func() { stopped <- w.Start(ctx) }()
	defer func() { cancel(); <-stopped }()
	// The pool's wake-ups are not what this test reads.
	go func() {
		for {
			select {
			case <-w.events:
			case <-ctx.Done():
				return
			}
		}
	}()
	select {
	case <-w.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the queue watchers did not start")
	}
	srv := &timedWatchServer{calls: make(chan time.Time)}
	w.Queue(&agentryv1.AgentPool{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "linux"}}, srv, "token", 1)

	// A queue that changes on every call is read at most once per
	// queueWatchEvery, the first time at once.
	var calls []time.Time
	for range 6 {
		select {
		case at := <-srv.calls:
			calls = append(calls, at)
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d queue watch calls", len(calls))
		}
	}
	for i := 1; i < len(calls); i++ {
		if gap := calls[i].Sub(calls[i-1]); gap < queueWatchEvery {
			t.Errorf("call %d came %v after the one before, want at least %v", i, gap, queueWatchEvery)
		}
	}
}
