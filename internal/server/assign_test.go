package server_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server"
	"github.com/agentry-dev/agentry/internal/server/servertest"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// countingStore counts the store's AssignJob calls.
type countingStore struct {
	store.Store
	assigns atomic.Int64
}

func (c *countingStore) AssignJob(ctx context.Context, a store.Assignment) (store.Job, error) {
	c.assigns.Add(1)
	return c.Store.AssignJob(ctx, a)
}

// stores are the stores the tests below run the server on.
var stores = []struct {
	name string
	open func(t *testing.T) store.Store
}{
	{"memory", func(*testing.T) store.Store { return store.NewMemory() }},
	{"sqlite", func(t *testing.T) store.Store {
		s, err := store.NewSQLite(filepath.Join(t.TempDir(), "agentry.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
}

// TestBurstAssignsEachJobOnce queues a burst of jobs at once onto as many
// waiting agents: each agent gets one job, every job reaches an agent, and
// the store is asked to assign each job once. Before assigners claimed jobs,
// every waiting agent raced for the oldest job, and each lost race was a
// write: a burst cost many AssignJob calls per job.
func TestBurstAssignsEachJobOnce(t *testing.T) {
	const n = 8
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			counting := &countingStore{Store: st.open(t)}
			inst := servertest.Start(t, servertest.WithLongPoll(time.Minute), servertest.WithConfig(func(c *server.Config) {
				c.Store = counting
			}))
			inst.CreatePool(t, "default")
			waiting := make(chan int, n)
			inst.Server.SetLongPollWaitHook(func(agentID int) { waiting <- agentID })

			agents := make([]*testAgent, n)
			got := make(chan *pipelines.AgentJobRequestMessage, n)
			for i := range agents {
				a := newTestAgent(t, inst, "default", fmt.Sprintf("agent-%d", i)).connect(t)
				agents[i] = a
				go func() {
					m, err := a.client.GetMessage(ctx, a.files.Settings.PoolID, a.session.SessionID, 0)
					if err != nil {
						t.Errorf("agent %d polling: %v", i, err)
						got <- nil
						return
					}
					got <- a.job(t, m)
				}()
			}
			for range n {
				<-waiting // every poll is parked on the server
			}

			var wg sync.WaitGroup
			queued := make([]int64, n)
			for i := range n {
				wg.Go(func() {
					j, err := inst.Jobs.QueueJob(ctx, jobapi.JobSpec{Pool: "default", Steps: []jobapi.Step{{Script: "echo hi"}}})
					if err != nil {
						t.Error(err)
						return
					}
					queued[i] = j.ID
				})
			}
			wg.Wait()
			var delivered []int64
			for range n {
				if job := <-got; job != nil {
					delivered = append(delivered, job.RequestID)
				}
			}
			slices.Sort(queued)
			slices.Sort(delivered)
			if !slices.Equal(delivered, queued) {
				t.Errorf("delivered requests %v, want each of %v once", delivered, queued)
			}
			if calls := counting.assigns.Load(); calls != n {
				t.Errorf("the store was asked %d times to assign %d jobs to %d waiting agents, want once per job", calls, n, n)
			}
		})
	}
}

// TestQueueWatchShowsEveryWrite reads the queue right after each change
// that a caller has seen succeed, from several callers at once: the answer
// (shared between callers per revision) always shows the change, never an
// answer from before it.
func TestQueueWatchShowsEveryWrite(t *testing.T) {
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			inst := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.Store = st.open(t) }))
			inst.CreatePool(t, "default")
			listed := func(id int64) (pipelines.TaskAgentJobRequest, bool) {
				s, err := inst.Jobs.WatchQueue(ctx, 1, 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				i := slices.IndexFunc(s.JobRequests, func(r pipelines.TaskAgentJobRequest) bool { return r.RequestID == id })
				if i < 0 {
					return pipelines.TaskAgentJobRequest{}, false
				}
				return s.JobRequests[i], true
			}
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Go(func() {
					for i := range 10 {
						name := fmt.Sprintf("w%d-%d", w, i)
						j, err := inst.Jobs.QueueJob(ctx, jobapi.JobSpec{Pool: "default", Name: name, Demands: []string{"gpu"},
							Steps: []jobapi.Step{{Script: "echo hi"}}})
						if err != nil {
							t.Error(err)
							return
						}
						if r, ok := listed(j.ID); !ok || !r.Waiting() || !slices.Equal(r.Demands, []string{"gpu"}) {
							t.Errorf("queue read after queueing job %d: %+v, listed %t; want it waiting, with its demand", j.ID, r, ok)
						}
						if _, err := inst.Jobs.CancelJob(ctx, j.ID); err != nil {
							t.Error(err)
							return
						}
						if r, ok := listed(j.ID); ok {
							t.Errorf("queue read after canceling job %d still lists it: %+v", j.ID, r)
						}
					}
				})
			}
			wg.Wait()

			// A job's steps through an agent, each read right after it.
			j := queue(t, inst, jobapi.JobSpec{})
			a := newTestAgent(t, inst, "default", "agent-1").connect(t)
			job := a.job(t, a.poll(t))
			if r, ok := listed(j.ID); !ok || r.ReservedAgent == nil || r.ReceiveTime == nil {
				t.Errorf("after the agent received the job: %+v, listed %t; want it reserved and received", r, ok)
			}
			if err := a.client.FinishJobRequest(ctx, 1, job.RequestID, pipelines.ResultSucceeded, time.Now()); err != nil {
				t.Fatal(err)
			}
			if r, ok := listed(j.ID); !ok || r.Result == nil {
				t.Errorf("after the job finished: %+v, listed %t; want it listed (its agent is registered) with a result", r, ok)
			}
			if err := inst.Admin.DeleteAgent(ctx, 1, a.files.Settings.AgentID); err != nil {
				t.Fatal(err)
			}
			if r, ok := listed(j.ID); ok {
				t.Errorf("after its agent was deleted the finished job is still listed: %+v", r)
			}
		})
	}
}

// TestPollsKeepSessionLive checks that polls keep a session live though
// the server records them only every so often: an agent that polls within
// the idle timeout keeps its session, and a new one is refused, until it
// stops polling for the idle timeout.
func TestPollsKeepSessionLive(t *testing.T) {
	ctx := context.Background()
	inst, clock := start(t)
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	for range 3 {
		clock.Advance(server.DefaultSessionIdleTimeout * 2 / 3)
		if m := a.poll(t); m != nil {
			t.Fatalf("poll got message %+v, want none", m)
		}
		a.poll(t) // again at once: nothing to record
	}
	_, err := a.client.CreateSession(ctx, a.files.Settings.PoolID, pipelines.TaskAgentSession{OwnerName: "second"})
	wantAPIError(t, err, http.StatusConflict, pipelines.TypeKeySessionConflict)
	clock.Advance(server.DefaultSessionIdleTimeout + time.Second)
	a.openSession(t, false) // the agent went quiet: its session may be replaced
}
