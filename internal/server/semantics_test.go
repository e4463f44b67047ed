package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server"
	"github.com/agentry-dev/agentry/internal/server/servertest"
)

// start runs a server on a fake clock with short long-polls; Sweep is
// called by the tests, never by a timer during them.
func start(t *testing.T) (*servertest.Instance, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: time.Now()}
	inst := servertest.Start(t, servertest.WithLongPoll(50*time.Millisecond), servertest.WithConfig(func(c *server.Config) {
		c.Now = clock.Now
		c.SweepInterval = time.Hour
	}))
	inst.CreatePool(t, "default")
	return inst, clock
}

func getJob(t *testing.T, inst *servertest.Instance, id int64) *jobapi.Job {
	t.Helper()
	j, err := inst.Jobs.GetJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func sweep(t *testing.T, inst *servertest.Instance) {
	t.Helper()
	if err := inst.Server.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestCancelQueuedJob(t *testing.T) {
	inst, _ := start(t)
	j := queue(t, inst, jobapi.JobSpec{})
	got, err := inst.Jobs.CancelJob(context.Background(), j.ID)
	if err != nil || got.State != jobapi.StateCompleted || got.Result != pipelines.ResultCanceled {
		t.Fatalf("CancelJob = %+v, %v; want completed, canceled", got, err)
	}
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	if m := a.poll(t); m != nil {
		t.Errorf("an agent got message %+v for a canceled job", m)
	}
	_, err = inst.Jobs.CancelJob(context.Background(), j.ID)
	wantAPIError(t, err, http.StatusConflict, "InvalidOperationException")
}

func TestCancelRunningJob(t *testing.T) {
	ctx := context.Background()
	inst, clock := start(t)
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	j := queue(t, inst, jobapi.JobSpec{})
	m := a.poll(t)
	job := a.job(t, m)
	if err := a.client.DeleteMessage(ctx, 1, a.session.SessionID, m.MessageID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.client.RenewJobRequest(ctx, 1, job.RequestID); err != nil {
		t.Fatal(err)
	}
	got, err := inst.Jobs.CancelJob(ctx, j.ID)
	if err != nil || got.State != jobapi.StateCanceling || got.CancelTime == nil {
		t.Fatalf("CancelJob = %+v, %v; want canceling", got, err)
	}
	if list, _ := inst.Jobs.ListJobs(ctx, "default", jobapi.StateCanceling); len(list) != 1 {
		t.Errorf("ListJobs(canceling) = %+v, want the job", list)
	}
	c := a.poll(t)
	if c == nil || c.MessageType != pipelines.MessageTypeJobCancellation {
		t.Fatalf("agent got %+v, want a JobCancellation", c)
	}
	var body pipelines.JobCancelMessage
	if err := json.Unmarshal(a.decrypt(t, c), &body); err != nil {
		t.Fatal(err)
	}
	if body.JobID != job.JobID || body.Timeout != "00:05:00" {
		t.Errorf("cancellation = %+v, want job %s with timeout 00:05:00", body, job.JobID)
	}
	// Still there until deleted.
	if again := a.poll(t); again == nil || again.MessageID != c.MessageID {
		t.Errorf("cancellation not redelivered before it was deleted: %+v", again)
	}
	if err := a.client.FinishJobRequest(ctx, 1, job.RequestID, pipelines.ResultCanceled, clock.Now()); err != nil {
		t.Fatal(err)
	}
	if got := getJob(t, inst, j.ID); got.State != jobapi.StateCompleted || got.Result != pipelines.ResultCanceled {
		t.Errorf("job = %+v, want completed, canceled", got)
	}
}

// startedJob has an agent take and start a job.
func startedJob(t *testing.T, inst *servertest.Instance, a *testAgent, spec jobapi.JobSpec) (*jobapi.Job, *pipelines.AgentJobRequestMessage) {
	t.Helper()
	ctx := context.Background()
	j := queue(t, inst, spec)
	m := a.poll(t)
	job := a.job(t, m)
	if err := a.client.DeleteMessage(ctx, 1, a.session.SessionID, m.MessageID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.client.RenewJobRequest(ctx, 1, job.RequestID); err != nil {
		t.Fatal(err)
	}
	return j, job
}

func TestUnrenewedLockAbandonsJob(t *testing.T) {
	inst, clock := start(t)
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	j, _ := startedJob(t, inst, a, jobapi.JobSpec{})

	clock.Advance(server.DefaultJobLock + server.DefaultLockGrace - time.Second)
	sweep(t, inst)
	if got := getJob(t, inst, j.ID); got.State != jobapi.StateRunning {
		t.Fatalf("job within lockedUntil + 5 min = %+v, want still running", got)
	}
	clock.Advance(2 * time.Second)
	sweep(t, inst)
	if got := getJob(t, inst, j.ID); got.Result != pipelines.ResultAbandoned {
		t.Errorf("job past lockedUntil + 5 min = %+v, want abandoned", got)
	}
}

func TestRenewedLockKeepsJob(t *testing.T) {
	ctx := context.Background()
	inst, clock := start(t)
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	j, job := startedJob(t, inst, a, jobapi.JobSpec{})
	for range 3 {
		clock.Advance(server.DefaultJobLock)
		if _, err := a.client.RenewJobRequest(ctx, 1, job.RequestID); err != nil {
			t.Fatal(err)
		}
		sweep(t, inst)
	}
	if got := getJob(t, inst, j.ID); got.State != jobapi.StateRunning {
		t.Errorf("renewed job = %+v, want running", got)
	}
}

func TestVanishedAgentsJobIsRequeuedBoundedTimes(t *testing.T) {
	ctx := context.Background()
	inst, clock := start(t)
	j := queue(t, inst, jobapi.JobSpec{})
	for attempt := 1; attempt <= 3; attempt++ {
		a := newTestAgent(t, inst, "default", "agent-"+string(rune('0'+attempt))).connect(t)
		job := a.job(t, a.poll(t)) // received, never renewed
		if got := job.Variables["system.jobAttempt"].Value; got != string(rune('0'+attempt)) {
			t.Errorf("attempt %d: system.jobAttempt = %q", attempt, got)
		}
		// The agent crashes: its session goes stale.
		clock.Advance(server.DefaultSessionIdleTimeout + time.Second)
		sweep(t, inst)
		got := getJob(t, inst, j.ID)
		if got.Attempts != attempt {
			t.Errorf("attempt %d: attempts = %d", attempt, got.Attempts)
		}
		if attempt < 3 && (got.State != jobapi.StateQueued || got.AgentID != 0) {
			t.Fatalf("attempt %d: job = %+v, want queued again", attempt, got)
		}
		if attempt == 3 && got.Result != pipelines.ResultAbandoned {
			t.Fatalf("after 3 attempts job = %+v, want abandoned", got)
		}
		// The stale agent cannot start it any more.
		r, err := a.client.RenewJobRequest(ctx, 1, job.RequestID)
		if attempt < 3 {
			wantAPIError(t, err, http.StatusNotFound, pipelines.TypeKeyJobNotFound)
		} else if err != nil || r.Result == nil || *r.Result != pipelines.ResultAbandoned {
			t.Errorf("renewing the abandoned job = %+v, %v; want its result, abandoned", r, err)
		}
	}
}

func TestJobTimeout(t *testing.T) {
	inst, clock := start(t)
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	j, job := startedJob(t, inst, a, jobapi.JobSpec{TimeoutInMinutes: 2})
	if v := job.Variables["system.jobTimeout"]; v.Value != "2" {
		t.Errorf("system.jobTimeout = %q, want the job's 2 minutes, so the agent enforces it too", v.Value)
	}
	for _, st := range job.Steps {
		if st.TimeoutInMinutes != 0 {
			t.Errorf("step %s timeoutInMinutes = %d, want none: a step's own budget is not the job's", st.Name, st.TimeoutInMinutes)
		}
	}
	clock.Advance(time.Minute)
	sweep(t, inst)
	if got := getJob(t, inst, j.ID); got.State != jobapi.StateRunning {
		t.Fatalf("job within its time-out = %+v", got)
	}
	clock.Advance(time.Minute + time.Second)
	sweep(t, inst)
	if got := getJob(t, inst, j.ID); got.State != jobapi.StateCanceling {
		t.Fatalf("job past its time-out = %+v, want canceling", got)
	}
	if m := a.poll(t); m == nil || m.MessageType != pipelines.MessageTypeJobCancellation {
		t.Fatalf("agent got %+v, want a JobCancellation", m)
	}
	// The agent keeps its lock but never stops: abandoned after the cancel timeout.
	if _, err := a.client.RenewJobRequest(context.Background(), 1, job.RequestID); err != nil {
		t.Fatal(err)
	}
	clock.Advance(server.DefaultCancelTimeout + time.Second)
	sweep(t, inst)
	if got := getJob(t, inst, j.ID); got.Result != pipelines.ResultAbandoned {
		t.Errorf("job that ignored its cancellation = %+v, want abandoned", got)
	}
}

func TestSecretVariablesAreNeverShown(t *testing.T) {
	ctx := context.Background()
	inst, _ := start(t)
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	const secret = "hunter2-s3cr3t"
	j, job := startedJob(t, inst, a, jobapi.JobSpec{Variables: map[string]pipelines.VariableValue{
		"password": {Value: secret, IsSecret: true}, "plain": {Value: "visible"},
	}})
	if v := job.Variables["password"]; v.Value != secret || !v.IsSecret {
		t.Errorf("the agent got password = %+v, want the secret marked secret", v)
	}
	resp := do(t, "GET", inst.URL+"/_apis/agentry/jobs/"+itoa(j.ID), "Bearer "+inst.AdminToken, "")
	list := do(t, "GET", inst.URL+"/_apis/agentry/jobs", "Bearer "+inst.AdminToken, "")
	for _, body := range []string{resp.body, list.body} {
		if strings.Contains(body, secret) {
			t.Errorf("the job API shows the secret: %s", body)
		}
	}
	// An agent that prints it unmasked: the server masks it.
	jc := jobClient(t, job)
	if err := jc.AppendFeed(ctx, job.Plan, job.Timeline.ID, job.JobID, pipelines.TimelineRecordFeedLines{
		Value: []string{"pw is " + secret, "plain is visible"}}); err != nil {
		t.Fatal(err)
	}
	log, err := inst.Jobs.JobLog(ctx, j.ID)
	if err != nil || log != "pw is ***\nplain is visible\n" {
		t.Errorf("JobLog = %q, %v; want the secret masked", log, err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestFollowJobLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst, _ := start(t)
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	j, job := startedJob(t, inst, a, jobapi.JobSpec{Variables: map[string]pipelines.VariableValue{"tok": {Value: "s3cret", IsSecret: true}}})
	jc := jobClient(t, job)
	feed := func(lines ...string) {
		t.Helper()
		if err := jc.AppendFeed(ctx, job.Plan, job.Timeline.ID, job.JobID, pipelines.TimelineRecordFeedLines{Value: lines}); err != nil {
			t.Fatal(err)
		}
	}
	feed("before the follow")

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := inst.Jobs.FollowJobLog(ctx, j.ID, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	lines := bufio.NewScanner(pr)
	next := func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("the followed log ended early: %v", lines.Err())
		}
		return lines.Text()
	}
	if got := next(); got != "before the follow" {
		t.Errorf("first line %q", got)
	}
	feed("live s3cret line") // arrives while the follow waits
	if got := next(); got != "live *** line" {
		t.Errorf("second line %q, want it masked", got)
	}
	if err := jc.RaisePlanEvent(ctx, job.Plan, pipelines.JobEvent{Name: pipelines.JobCompletedEvent, JobID: job.JobID, Result: pipelines.ResultSucceeded}); err != nil {
		t.Fatal(err)
	}
	if lines.Scan() {
		t.Errorf("unexpected line after the job ended: %q", lines.Text())
	}
	if err := <-done; err != nil {
		t.Errorf("FollowJobLog: %v", err)
	}
}

func TestQueueWatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inst, _ := start(t)
	first, err := inst.Jobs.WatchQueue(ctx, 1, 0, 0)
	if err != nil || first.Revision == 0 || len(first.JobRequests) != 0 {
		t.Fatalf("WatchQueue = %+v, %v; want a revision and no jobs", first, err)
	}
	// Nothing changed: with no wait, the same revision at once.
	r := do(t, "GET", inst.URL+"/_apis/agentry/pools/1/queue?wait=0&after="+itoa(first.Revision), "Bearer "+inst.AdminToken, "")
	if want := `{"revision":` + itoa(first.Revision) + `,"jobRequests":[]}`; r.status != http.StatusOK || r.body != want {
		t.Fatalf("watch with after=revision, wait=0 = %d %s; want %s", r.status, r.body, want)
	}

	got := make(chan *jobapi.QueueState, 1)
	go func() {
		s, err := inst.Jobs.WatchQueue(ctx, 1, first.Revision, time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- s
	}()
	j := queue(t, inst, jobapi.JobSpec{})
	var s *jobapi.QueueState
	select {
	case s = <-got:
	case <-ctx.Done():
		t.Fatal("the waiting watch did not answer after a job was queued")
	}
	if s == nil || s.Revision <= first.Revision || len(s.JobRequests) != 1 || s.JobRequests[0].RequestID != j.ID || !s.JobRequests[0].Waiting() {
		t.Fatalf("watch answer = %+v, want a newer revision with the waiting job %d", s, j.ID)
	}

	// Each step of the job's life is a new revision; a finished job leaves the list.
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	job := a.job(t, a.poll(t))
	afterTake, _ := inst.Jobs.WatchQueue(ctx, 1, s.Revision, time.Minute)
	if afterTake.Revision <= s.Revision || afterTake.JobRequests[0].Waiting() {
		t.Errorf("after the agent took the job: %+v, want a newer revision, not waiting", afterTake)
	}
	if err := a.client.FinishJobRequest(ctx, 1, job.RequestID, pipelines.ResultSucceeded, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A finished job stays listed, finished and reserved for its agent,
	// while that agent is registered: a scaler sees the agent is spent.
	finished, _ := inst.Jobs.WatchQueue(ctx, 1, afterTake.Revision, time.Minute)
	if finished.Revision <= afterTake.Revision || len(finished.JobRequests) != 1 || finished.JobRequests[0].Result == nil ||
		finished.JobRequests[0].ReservedAgent == nil || finished.JobRequests[0].ReservedAgent.ID != a.files.Settings.AgentID {
		t.Errorf("after the job finished: %+v, want a newer revision and the finished job, reserved for agent %d", finished, a.files.Settings.AgentID)
	}
	// Once the agent is deleted, the job leaves the list.
	if err := inst.Admin.DeleteAgent(ctx, 1, a.files.Settings.AgentID); err != nil {
		t.Fatal(err)
	}
	end, _ := inst.Jobs.WatchQueue(ctx, 1, finished.Revision, time.Minute)
	if end.Revision <= finished.Revision || len(end.JobRequests) != 0 {
		t.Errorf("after the agent was deleted: %+v, want a newer revision and no jobs", end)
	}
}

func TestRouteDiscovery(t *testing.T) {
	inst, _ := start(t)
	resp := do(t, "OPTIONS", inst.URL+"/_apis", "", "")
	var l pipelines.List[struct {
		ID, Area, ResourceName, RouteTemplate, MinVersion, MaxVersion, ReleasedVersion string
		ResourceVersion                                                                int
	}]
	if err := json.Unmarshal([]byte(resp.body), &l); err != nil || resp.status != http.StatusOK || l.Count != len(l.Value) {
		t.Fatalf("OPTIONS /_apis = %d %s (%v)", resp.status, resp.body, err)
	}
	byID := map[string]string{}
	for _, v := range l.Value {
		if v.RouteTemplate == "" || v.MinVersion == "" || v.MaxVersion == "" || v.ReleasedVersion == "" || v.ResourceVersion == 0 {
			t.Errorf("location %+v lacks a field", v)
		}
		byID[v.ID] = v.Area + "/" + v.ResourceName
	}
	for id, want := range map[string]string{
		"e298ef32-5878-4cab-993c-043836571f42": "distributedtask/agents",
		"a8c47e17-4d56-4a56-92bb-de7ea7dc65be": "distributedtask/pools",
		"134e239e-2df3-4794-a6f6-24f1f19ec8dc": "distributedtask/sessions",
		"c3a054f6-7a8a-49c0-944e-3a8e5d7adfd7": "distributedtask/messages",
		"fc825784-c92a-4299-9221-998a02d1b54f": "distributedtask/jobrequests",
		"8893bc5b-35b2-4be7-83cb-99e683551db4": "distributedtask/records",
		"858983e4-19bd-4c5e-864c-507b59b58b12": "distributedtask/feed",
		"46f5667d-263a-4684-91b1-dff7fdcf64e2": "distributedtask/logs",
		"557624af-b29e-4c20-8ab0-0399d2204f3f": "distributedtask/events",
		"e81700f7-3be2-46de-8624-2eb35882fcaa": "Location/ResourceAreas",
	} {
		if byID[id] != want {
			t.Errorf("location %s = %q, want %s", id, byID[id], want)
		}
	}
	if r := do(t, "GET", inst.URL+"/_apis/ResourceAreas", "", ""); r.status != http.StatusOK || r.body != `{"count":0,"value":[]}` {
		t.Errorf("ResourceAreas = %d %s, want an empty list", r.status, r.body)
	}
	cd := do(t, "GET", inst.URL+"/_apis/connectionData?connectOptions=1&lastChangeId=-1", "Bearer "+inst.AdminToken, "")
	var data struct {
		AuthenticatedUser   struct{ ProviderDisplayName string }
		LocationServiceData struct {
			AccessMappings     []struct{ AccessPoint string }
			ServiceDefinitions []struct{ Identifier, RelativePath string }
		}
	}
	if err := json.Unmarshal([]byte(cd.body), &data); err != nil || cd.status != http.StatusOK {
		t.Fatalf("connectionData = %d %s", cd.status, cd.body)
	}
	if data.AuthenticatedUser.ProviderDisplayName != "agentry admin" || len(data.LocationServiceData.ServiceDefinitions) != len(l.Value) ||
		len(data.LocationServiceData.AccessMappings) != 1 || data.LocationServiceData.AccessMappings[0].AccessPoint != inst.URL {
		t.Errorf("connectionData = %+v", data)
	}
}

func TestAPIVersionInEveryPlace(t *testing.T) {
	inst, _ := start(t)
	for _, h := range []struct{ header, value, query string }{
		{"Accept", "application/json; api-version=7.1-preview.1", ""},
		{"Accept", "application/json;api-version=5.0, text/plain", ""},
		{"Content-Type", "application/json; charset=utf-8; api-version=7.1", ""},
		{"", "", "?api-version=6.0-preview"},
	} {
		req, _ := http.NewRequest("GET", inst.URL+"/_apis/distributedtask/pools"+h.query, nil)
		req.Header.Set("Authorization", "Bearer "+inst.AdminToken)
		if h.header != "" {
			req.Header.Set(h.header, h.value)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s %q %s: got %d", h.header, h.value, h.query, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", inst.URL+"/_apis/distributedtask/pools", nil)
	req.Header.Set("Authorization", "Bearer "+inst.AdminToken)
	req.Header.Set("Accept", "application/json; api-version=latest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed api-version in Accept: got %d, want 400", resp.StatusCode)
	}
}

func TestPatchAgent(t *testing.T) {
	ctx := context.Background()
	inst, _ := start(t)
	a := newTestAgent(t, inst, "default", "agent-1")
	enabled := false
	var got pipelines.TaskAgent
	if _, err := inst.Admin.Do(ctx, http.MethodPatch, "/_apis/distributedtask/pools/1/agents/1", nil,
		pipelines.TaskAgent{Enabled: &enabled, UserCapabilities: map[string]string{"gpu": "1"}}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != "agent-1" || got.Enabled == nil || *got.Enabled || got.UserCapabilities["gpu"] != "1" {
		t.Errorf("patched agent = %+v; want name kept, disabled, gpu added", got)
	}
	// A disabled agent takes no job.
	a.connect(t)
	queue(t, inst, jobapi.JobSpec{})
	if m := a.poll(t); m != nil {
		t.Errorf("a disabled agent got message %d", m.MessageID)
	}
}
