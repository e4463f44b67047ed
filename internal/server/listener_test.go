package server_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/servertest"
)

func queue(t *testing.T, inst *servertest.Instance, spec jobapi.JobSpec) *jobapi.Job {
	t.Helper()
	if spec.Pool == "" {
		spec.Pool = "default"
	}
	if spec.Steps == nil {
		spec.Steps = []jobapi.Step{{Script: "echo hi"}}
	}
	j, err := inst.Jobs.QueueJob(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestQueuedJobReachesWaitingLongPoll(t *testing.T) {
	inst := servertest.Start(t, servertest.WithLongPoll(time.Minute))
	inst.CreatePool(t, "default")
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)

	waiting := make(chan struct{}, 1)
	inst.Server.SetLongPollWaitHook(func(int) {
		select {
		case waiting <- struct{}{}:
		default:
		}
	})
	got := make(chan *pipelines.TaskAgentMessage, 1)
	errc := make(chan error, 1)
	go func() {
		m, err := a.client.GetMessage(context.Background(), a.files.Settings.PoolID, a.session.SessionID, 0)
		errc <- err
		got <- m
	}()
	<-waiting // the poll is parked on the server, with no job anywhere
	j := queue(t, inst, jobapi.JobSpec{})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if job := a.job(t, <-got); job.RequestID != j.ID {
		t.Errorf("delivered request %d, want %d", job.RequestID, j.ID)
	}
}

func TestLongPollAnswersEmptyWhenNothingComes(t *testing.T) {
	inst := servertest.Start(t, servertest.WithLongPoll(50*time.Millisecond))
	inst.CreatePool(t, "default")
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	resp := do(t, "GET", inst.URL+"/_apis/distributedtask/pools/1/messages?sessionId="+a.session.SessionID,
		"Bearer "+string(a.client.Auth.(pipelines.BearerToken)), "")
	if resp.status != http.StatusAccepted || resp.body != "" {
		t.Errorf("got %d %q, want 202 with an empty body", resp.status, resp.body)
	}
}

func TestMessageRedeliveredUntilDeleted(t *testing.T) {
	ctx := context.Background()
	inst := servertest.Start(t, servertest.WithLongPoll(50*time.Millisecond))
	inst.CreatePool(t, "default")
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	queue(t, inst, jobapi.JobSpec{})

	first := a.poll(t)
	again := a.poll(t)
	if first == nil || again == nil || again.MessageID != first.MessageID {
		t.Fatalf("second poll = %+v, want message %+v again", again, first)
	}
	if string(again.IV) == string(first.IV) {
		t.Error("redelivery reused the IV")
	}
	if diff := cmp.Diff(string(a.decrypt(t, first)), string(a.decrypt(t, again))); diff != "" {
		t.Errorf("redelivered body differs (-first +again):\n%s", diff)
	}
	if err := a.client.DeleteMessage(ctx, a.files.Settings.PoolID, a.session.SessionID, first.MessageID); err != nil {
		t.Fatal(err)
	}
	if m := a.poll(t); m != nil {
		t.Errorf("after delete got message %d, want none", m.MessageID)
	}

	// A new session (say, after a crash) gets the undeleted message too,
	// encrypted with the new key.
	b := newTestAgent(t, inst, "default", "agent-2").connect(t)
	queue(t, inst, jobapi.JobSpec{})
	m1 := b.poll(t)
	if err := b.client.DeleteSession(ctx, b.files.Settings.PoolID, b.session.SessionID); err != nil {
		t.Fatal(err)
	}
	b.openSession(t, false)
	if m2 := b.poll(t); m2 == nil || m2.MessageID != m1.MessageID || b.job(t, m2).RequestID == 0 {
		t.Errorf("after a new session got %+v, want message %d", m2, m1.MessageID)
	}
}

func TestOneJobPerAgentOldestFirst(t *testing.T) {
	inst := servertest.Start(t, servertest.WithLongPoll(50*time.Millisecond))
	inst.CreatePool(t, "default")
	j1 := queue(t, inst, jobapi.JobSpec{Name: "first"})
	j2 := queue(t, inst, jobapi.JobSpec{Name: "second"})
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	m := a.poll(t)
	if got := a.job(t, m).RequestID; got != j1.ID {
		t.Errorf("agent got request %d, want the oldest, %d", got, j1.ID)
	}
	if err := a.client.DeleteMessage(context.Background(), 1, a.session.SessionID, m.MessageID); err != nil {
		t.Fatal(err)
	}
	if m := a.poll(t); m != nil {
		t.Errorf("agent got a second job (message %d); an agent takes one job in its life", m.MessageID)
	}
	b := newTestAgent(t, inst, "default", "agent-2").connect(t)
	if got := b.job(t, b.poll(t)).RequestID; got != j2.ID {
		t.Errorf("second agent got request %d, want %d", got, j2.ID)
	}
}

func TestDemands(t *testing.T) {
	tests := []struct {
		name    string
		demands []string
		user    map[string]string
		want    bool
	}{
		{"no demands", nil, nil, true},
		{"bare name present", []string{"gpu"}, map[string]string{"GPU": "1"}, true},
		{"bare name missing", []string{"gpu"}, nil, false},
		{"equals system capability", []string{"Agent.OS -equals linux"}, nil, true},
		{"equals other value", []string{"Agent.OS -equals Windows_NT"}, nil, false},
		{"user capability wins", []string{"Agent.OS -equals Darwin"}, map[string]string{"Agent.OS": "Darwin"}, true},
		{"all must hold", []string{"gpu", "Agent.OS -equals Linux", "docker"}, map[string]string{"gpu": "1"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inst := servertest.Start(t, servertest.WithLongPoll(50*time.Millisecond))
			inst.CreatePool(t, "default")
			a := agentFromFiles(t, inst.RegisterAgentWith(t, "default", pipelines.TaskAgent{Name: "a", UserCapabilities: tc.user})).connect(t)
			queue(t, inst, jobapi.JobSpec{Demands: tc.demands})
			if got := a.poll(t) != nil; got != tc.want {
				t.Errorf("agent got the job: %t, want %t", got, tc.want)
			}
		})
	}
}

func TestDeleteAgentWithJob(t *testing.T) {
	ctx := context.Background()
	inst := servertest.Start(t, servertest.WithLongPoll(50*time.Millisecond))
	inst.CreatePool(t, "default")

	// Started and not finished: abandoned.
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	j1 := queue(t, inst, jobapi.JobSpec{})
	job := a.job(t, a.poll(t))
	if _, err := a.client.RenewJobRequest(ctx, 1, job.RequestID); err != nil {
		t.Fatal(err)
	}
	if err := inst.Admin.DeleteAgent(ctx, 1, a.files.Settings.AgentID); err != nil {
		t.Fatal(err)
	}
	got, err := inst.Jobs.GetJob(ctx, j1.ID)
	if err != nil || got.State != jobapi.StateCompleted || got.Result != pipelines.ResultAbandoned {
		t.Errorf("job of a deleted agent = %+v, %v; want completed, abandoned", got, err)
	}
	err = jobClient(t, job).AppendFeed(ctx, job.Plan, job.Timeline.ID, job.JobID, pipelines.TimelineRecordFeedLines{Value: []string{"x"}})
	wantAPIError(t, err, http.StatusUnauthorized, pipelines.TypeKeyJobTokenExpired)

	// Queued while its would-be agent was deleted: still queued, for the next agent.
	b := newTestAgent(t, inst, "default", "agent-2")
	j2 := queue(t, inst, jobapi.JobSpec{})
	if err := inst.Admin.DeleteAgent(ctx, 1, b.files.Settings.AgentID); err != nil {
		t.Fatal(err)
	}
	c := newTestAgent(t, inst, "default", "agent-3").connect(t)
	if got := c.job(t, c.poll(t)).RequestID; got != j2.ID {
		t.Errorf("next agent got request %d, want %d", got, j2.ID)
	}
}

func TestJobRequestsShowTheQueue(t *testing.T) {
	ctx := context.Background()
	inst := servertest.Start(t, servertest.WithLongPoll(50*time.Millisecond))
	p := inst.CreatePool(t, "default")
	j1 := queue(t, inst, jobapi.JobSpec{Demands: []string{"gpu"}})
	j2 := queue(t, inst, jobapi.JobSpec{})
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	a.job(t, a.poll(t)) // takes j2: it cannot meet j1's demand

	reqs, err := inst.Admin.ListJobRequests(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		ID      int64
		Waiting bool
		Agent   string
		Demands []string
	}
	var got []row
	for _, r := range reqs {
		agent := ""
		if r.ReservedAgent != nil {
			agent = r.ReservedAgent.Name
		}
		if r.QueueTime == nil {
			t.Errorf("request %d has no queueTime", r.RequestID)
		}
		got = append(got, row{r.RequestID, r.Waiting(), agent, r.Demands})
	}
	want := []row{{j1.ID, true, "", []string{"gpu"}}, {j2.ID, false, "agent-1", nil}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("job requests (-want +got):\n%s", diff)
	}
	list, err := inst.Jobs.ListJobs(ctx, "default", jobapi.StateQueued)
	if err != nil || len(list) != 1 || list[0].ID != j1.ID {
		t.Errorf("ListJobs(queued) = %+v, %v; want only request %d", list, err, j1.ID)
	}
}

func TestJobTokenScope(t *testing.T) {
	ctx := context.Background()
	inst := servertest.Start(t, servertest.WithLongPoll(50*time.Millisecond))
	inst.CreatePool(t, "default")
	queue(t, inst, jobapi.JobSpec{})
	queue(t, inst, jobapi.JobSpec{})
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	b := newTestAgent(t, inst, "default", "agent-2").connect(t)
	ja, jb := a.job(t, a.poll(t)), b.job(t, b.poll(t))
	ca := jobClient(t, ja)

	_, err := ca.CreateLog(ctx, jb.Plan, "x")
	wantAPIError(t, err, http.StatusForbidden, pipelines.TypeKeyAccessDenied)
	err = ca.UpdateTimelineRecords(ctx, ja.Plan, jb.Timeline.ID, []pipelines.TimelineRecord{{ID: ja.JobID}})
	wantAPIError(t, err, http.StatusNotFound, pipelines.TypeKeyTimelineNotFound)
	err = ca.RaisePlanEvent(ctx, ja.Plan, pipelines.JobEvent{Name: pipelines.JobCompletedEvent, JobID: jb.JobID, Result: pipelines.ResultSucceeded})
	wantAPIError(t, err, http.StatusBadRequest, pipelines.TypeKeyBadRequest)
	_, err = ca.WithAuth(pipelines.BearerToken("forged")).CreateLog(ctx, ja.Plan, "x")
	wantAPIError(t, err, http.StatusUnauthorized, pipelines.TypeKeyUnauthorized)
	// The listener token is not a job token, nor the job token a listener token.
	_, err = a.client.WithAuth(a.client.Auth).CreateLog(ctx, ja.Plan, "x")
	wantAPIError(t, err, http.StatusUnauthorized, pipelines.TypeKeyUnauthorized)
	_, err = ca.RenewJobRequest(ctx, 1, ja.RequestID)
	wantAPIError(t, err, http.StatusUnauthorized, pipelines.TypeKeyAccessTokenExpired)
	// Another agent cannot renew or finish this agent's job.
	_, err = b.client.RenewJobRequest(ctx, 1, ja.RequestID)
	wantAPIError(t, err, http.StatusNotFound, pipelines.TypeKeyJobNotFound)
}

func TestFinishByJobRequestPatch(t *testing.T) {
	ctx := context.Background()
	inst := servertest.Start(t, servertest.WithLongPoll(50*time.Millisecond))
	inst.CreatePool(t, "default")
	j := queue(t, inst, jobapi.JobSpec{})
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	job := a.job(t, a.poll(t))
	if err := a.client.FinishJobRequest(ctx, 1, job.RequestID, pipelines.ResultSucceededWithIssues, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := inst.WaitJob(t, j.ID, 5*time.Second); got.Result != pipelines.ResultSucceededWithIssues {
		t.Errorf("result %q, want succeededWithIssues", got.Result)
	}
	// Renewing a finished job answers how it ended, so the agent stops.
	r, err := a.client.RenewJobRequest(ctx, 1, job.RequestID)
	if err != nil || r.Result == nil || *r.Result != pipelines.ResultSucceededWithIssues {
		t.Errorf("renew after finish = %+v, %v", r, err)
	}
}

func TestAPIVersionAccepted(t *testing.T) {
	inst := servertest.Start(t)
	inst.CreatePool(t, "default")
	for _, q := range []string{"", "?api-version=7.1-preview.1", "?api-version=5.0"} {
		resp := do(t, "GET", inst.URL+"/_apis/distributedtask/pools"+q, "Bearer "+inst.AdminToken, "")
		if resp.status != http.StatusOK || !strings.Contains(resp.body, `"count":1`) {
			t.Errorf("query %q: got %d %s", q, resp.status, resp.body)
		}
	}
}

func TestDeletedAgentsLongPollEnds(t *testing.T) {
	inst := servertest.Start(t, servertest.WithLongPoll(time.Minute))
	inst.CreatePool(t, "default")
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	waiting := make(chan struct{}, 1)
	inst.Server.SetLongPollWaitHook(func(int) {
		select {
		case waiting <- struct{}{}:
		default:
		}
	})
	errc := make(chan error, 1)
	go func() {
		_, err := a.client.GetMessage(context.Background(), a.files.Settings.PoolID, a.session.SessionID, 0)
		errc <- err
	}()
	<-waiting
	if err := inst.Admin.DeleteAgent(context.Background(), a.files.Settings.PoolID, a.files.Settings.AgentID); err != nil {
		t.Fatal(err)
	}
	wantAPIError(t, <-errc, http.StatusNotFound, pipelines.TypeKeyAgentNotFound)
}

// A pool's request list keeps every unfinished request but only the latest
// finished ones (50 unless completedRequestCount says otherwise), so polling
// it costs the same however many jobs the pool ran.
func TestJobRequestsKeepTheLatestFinished(t *testing.T) {
	ctx := context.Background()
	inst := servertest.Start(t)
	p := inst.CreatePool(t, "default")
	var cancelled []int64
	for range 3 {
		j := queue(t, inst, jobapi.JobSpec{})
		if _, err := inst.Jobs.CancelJob(ctx, j.ID); err != nil {
			t.Fatal(err)
		}
		cancelled = append(cancelled, j.ID)
	}
	waiting := queue(t, inst, jobapi.JobSpec{})

	list := func(query url.Values) ([]int64, error) {
		var l pipelines.List[pipelines.TaskAgentJobRequest]
		_, err := inst.Admin.Do(ctx, http.MethodGet, "/_apis/distributedtask/pools/"+strconv.Itoa(p.ID)+"/jobrequests", query, nil, &l)
		var ids []int64
		for _, r := range l.Value {
			ids = append(ids, r.RequestID)
		}
		return ids, err
	}
	for _, tc := range []struct {
		query url.Values
		want  []int64
	}{
		{nil, append(slices.Clone(cancelled), waiting.ID)},
		{url.Values{"completedRequestCount": {"1"}}, []int64{cancelled[2], waiting.ID}},
		{url.Values{"completedRequestCount": {"0"}}, []int64{waiting.ID}},
	} {
		got, err := list(tc.query)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("jobrequests?%s = %v, %v; want %v", tc.query.Encode(), got, err, tc.want)
		}
	}
	_, err := list(url.Values{"completedRequestCount": {"-1"}})
	if pipelines.StatusCode(err) != http.StatusBadRequest || !strings.Contains(err.Error(), `completedRequestCount "-1" is not a count`) {
		t.Errorf("completedRequestCount=-1: %v; want 400 saying it is not a count", err)
	}
}
