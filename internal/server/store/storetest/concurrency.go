package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// testConcurrentAssign races agents for jobs as the server's long-polls do:
// every agent tries every queued job. Each job goes to at most one agent and
// each agent takes at most one job, whatever the interleaving.
func testConcurrentAssign(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, first := fixture(t, s)
	const agents, jobs = 12, 8
	ids := []int{first.ID}
	for i := 2; i <= agents; i++ {
		a := must[store.Agent](t)(s.CreateAgent(ctx, store.Agent{PoolID: p.ID, Name: fmt.Sprintf("agent-%d", i), ClientID: fmt.Sprintf("c%d", i)}))
		ids = append(ids, a.ID)
	}
	for i := range jobs {
		queue(t, s, p.ID, fmt.Sprint(i))
	}
	var mu sync.Mutex
	took := map[int64][]int{} // request id → agents whose AssignJob succeeded
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			queued, err := s.ListJobs(ctx, store.JobFilter{PoolID: p.ID, Queued: true})
			if err != nil {
				t.Error(err)
				return
			}
			for _, j := range queued {
				_, err := s.AssignJob(ctx, store.Assignment{
					RequestID: j.RequestID, AgentID: id, TokenHash: fmt.Sprintf("tok-%d-%d", id, j.RequestID),
					LockedUntil: t0.Add(time.Minute), MessageType: pipelines.MessageTypeJobRequest, MessageBody: []byte("{}"), Now: t0,
				})
				switch {
				case errors.Is(err, store.ErrConflict):
				case err != nil:
					t.Error(err)
					return
				default:
					mu.Lock()
					took[j.RequestID] = append(took[j.RequestID], id)
					mu.Unlock()
					return // an agent takes one job
				}
			}
		})
	}
	wg.Wait()
	if len(took) != jobs {
		t.Errorf("%d of %d jobs were assigned with %d agents racing: %v", len(took), jobs, agents, took)
	}
	for req, by := range took {
		if len(by) != 1 {
			t.Errorf("job request %d was assigned to agents %v", req, by)
		}
		j := must[store.Job](t)(s.GetJob(ctx, req))
		if len(by) > 0 && j.AgentID != by[0] {
			t.Errorf("job request %d is stored as agent %d's, AssignJob said agent %d", req, j.AgentID, by[0])
		}
	}
	for _, id := range ids {
		n := 0
		for {
			m, err := s.NextMessage(ctx, id, t0)
			if errors.Is(err, store.ErrNotFound) {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			n++
			if err := s.DeleteMessage(ctx, id, m.ID); err != nil {
				t.Fatal(err)
			}
		}
		if n > 1 {
			t.Errorf("agent %d got %d job messages, want at most one", id, n)
		}
	}
}

// testConcurrentFinish finishes one job from many goroutines at once: exactly
// one call wins and the stored result is the winner's.
func testConcurrentFinish(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	j := assign(t, s, queue(t, s, p.ID, "one"), a.ID, "tok")
	results := []pipelines.TaskResult{pipelines.ResultSucceeded, pipelines.ResultFailed, pipelines.ResultCanceled, pipelines.ResultSkipped}
	var mu sync.Mutex
	var winners []pipelines.TaskResult
	var wg sync.WaitGroup
	for i := range 16 {
		r := results[i%len(results)]
		wg.Go(func() {
			_, err := s.FinishJob(ctx, j.RequestID, r, t0.Add(time.Duration(i)*time.Second))
			switch {
			case errors.Is(err, store.ErrConflict):
			case err != nil:
				t.Error(err)
			default:
				mu.Lock()
				winners = append(winners, r)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("%d FinishJob calls succeeded (%v), want exactly one", len(winners), winners)
	}
	if got := must[store.Job](t)(s.GetJob(ctx, j.RequestID)); got.Result != winners[0] {
		t.Errorf("stored result %q, the winning call set %q", got.Result, winners[0])
	}
}

// testIDsNotReused: a deleted agent's id is never given to a new agent (an
// operator holding the old id must not delete the new one).
func testIDsNotReused(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	b := must[store.Agent](t)(s.CreateAgent(ctx, store.Agent{PoolID: p.ID, Name: "agent-2", ClientID: "c2"}))
	must[store.AgentDeletion](t)(s.DeleteAgent(ctx, b.ID, t0))
	c := must[store.Agent](t)(s.CreateAgent(ctx, store.Agent{PoolID: p.ID, Name: "agent-3", ClientID: "c3"}))
	if c.ID == b.ID || c.ID == a.ID {
		t.Errorf("new agent got id %d; ids in use or deleted: %d, %d", c.ID, a.ID, b.ID)
	}
}

func testAdminTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	ci := must[store.AdminToken](t)(s.CreateAdminToken(ctx, store.AdminToken{Name: "ci", Hash: "h1", CreatedOn: t0, ExpiresAt: t0.Add(time.Hour)}))
	ops := must[store.AdminToken](t)(s.CreateAdminToken(ctx, store.AdminToken{Name: "ops", Hash: "h2", CreatedOn: t0}))
	if ci.ID == 0 || ci.ID == ops.ID {
		t.Fatalf("token ids %d, %d: want distinct and non-zero", ci.ID, ops.ID)
	}
	_, err := s.CreateAdminToken(ctx, store.AdminToken{Name: "CI", Hash: "h3", CreatedOn: t0})
	wantErr(t, err, store.ErrExists)
	_, err = s.CreateAdminToken(ctx, store.AdminToken{Name: "other", Hash: "h1", CreatedOn: t0})
	wantErr(t, err, store.ErrExists)

	got := must[store.AdminToken](t)(s.GetAdminTokenByHash(ctx, "h1"))
	if diff := cmp.Diff(ci, got); diff != "" {
		t.Errorf("GetAdminTokenByHash (-want +got):\n%s", diff)
	}
	if !got.Valid(t0.Add(time.Minute)) || got.Valid(t0.Add(time.Hour)) {
		t.Errorf("token valid for an hour: Valid(+1m)=%v Valid(+1h)=%v", got.Valid(t0.Add(time.Minute)), got.Valid(t0.Add(time.Hour)))
	}
	_, err = s.GetAdminTokenByHash(ctx, "nope")
	wantErr(t, err, store.ErrNotFound)
	_, err = s.GetAdminTokenByHash(ctx, "")
	wantErr(t, err, store.ErrNotFound)

	r := must[store.AdminToken](t)(s.RevokeAdminToken(ctx, ci.ID, t0.Add(time.Minute)))
	if !r.RevokedAt.Equal(t0.Add(time.Minute)) || r.Valid(t0.Add(time.Minute)) {
		t.Errorf("revoked token = %+v, want revoked and not valid", r)
	}
	r = must[store.AdminToken](t)(s.RevokeAdminToken(ctx, ci.ID, t0.Add(2*time.Minute)))
	if !r.RevokedAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("revoking again moved RevokedAt to %v", r.RevokedAt)
	}
	if got := must[store.AdminToken](t)(s.GetAdminTokenByHash(ctx, "h1")); !got.Revoked() {
		t.Errorf("stored token %+v is not revoked", got)
	}
	_, err = s.RevokeAdminToken(ctx, 999, t0)
	wantErr(t, err, store.ErrNotFound)

	// A revoked token's name may be used again.
	ci2 := must[store.AdminToken](t)(s.CreateAdminToken(ctx, store.AdminToken{Name: "ci", Hash: "h4", CreatedOn: t0}))
	list := must[[]store.AdminToken](t)(s.ListAdminTokens(ctx))
	if diff := cmp.Diff([]store.AdminToken{r, ops, ci2}, list); diff != "" {
		t.Errorf("ListAdminTokens (-want +got):\n%s", diff)
	}
}
