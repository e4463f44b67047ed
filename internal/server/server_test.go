package server_test

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server"
	"github.com/agentry-dev/agentry/internal/server/servertest"
)

func ptr[T any](v T) *T { return &v }

// TestJobLifecycle drives one job through the whole protocol, as an agent
// would: register, token, session, poll, decrypt, renew, report, complete.
func TestJobLifecycle(t *testing.T) {
	tests := []struct {
		name   string
		fips   bool
		result pipelines.TaskResult
	}{
		{"sha1 session, succeeded", false, pipelines.ResultSucceeded},
		{"fips session, failed", true, pipelines.ResultFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			inst := servertest.Start(t)
			inst.CreatePool(t, "default")
			a := newTestAgent(t, inst, "default", "agent-1")
			a.login(t)
			a.openSession(t, tc.fips)

			queued, err := inst.Jobs.QueueJob(ctx, jobapi.JobSpec{Pool: "default", Name: "hello", Steps: []jobapi.Step{
				{Script: "echo one"},
				{Task: "bash@3", Script: "echo two", DisplayName: "Second"},
			}, Variables: map[string]pipelines.VariableValue{"greeting": {Value: "hi"}}})
			if err != nil {
				t.Fatal(err)
			}
			if queued.State != jobapi.StateQueued {
				t.Errorf("queued job state %q, want queued", queued.State)
			}

			msg := a.poll(t)
			job := a.job(t, msg)
			if err := a.client.DeleteMessage(ctx, a.files.Settings.PoolID, a.session.SessionID, msg.MessageID); err != nil {
				t.Fatal(err)
			}

			// The message is the Azure shape.
			wantPlan := pipelines.PlanReference{ScopeIdentifier: server.ProjectID, PlanType: "Build", Version: 8, PlanID: job.Plan.PlanID}
			if diff := cmp.Diff(wantPlan, job.Plan); diff != "" || job.Plan.PlanID == "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			if job.RequestID != queued.ID || job.JobID != queued.JobID || job.Timeline.ID == "" || job.JobDisplayName != "hello" {
				t.Errorf("job ids: requestId %d jobId %s timeline %q name %q; want request %d job %s",
					job.RequestID, job.JobID, job.Timeline.ID, job.JobDisplayName, queued.ID, queued.JobID)
			}
			if job.LockedUntil == nil || job.LockedUntil.Before(time.Now().Add(9*time.Minute)) {
				t.Errorf("lockedUntil = %v, want about 10 minutes ahead", job.LockedUntil)
			}
			u, tok, _ := job.JobToken()
			if u != inst.URL+"/" || tok == "" {
				t.Errorf("SystemVssConnection = %q with token %t, want %q", u, tok != "", inst.URL+"/")
			}
			gotSteps := []pipelines.JobStep{}
			for _, st := range job.Steps {
				st.ID, st.Enabled = "", nil
				gotSteps = append(gotSteps, st)
			}
			wantSteps := []pipelines.JobStep{
				{Type: "task", Name: "CmdLine1", DisplayName: "Command Line Script", Condition: "succeeded()",
					Inputs: map[string]string{"script": "echo one"}, Reference: pipelines.TaskCmdLine},
				{Type: "task", Name: "Bash2", DisplayName: "Second", Condition: "succeeded()",
					Inputs: map[string]string{"script": "echo two", "targetType": "inline"}, Reference: pipelines.TaskBash},
			}
			if diff := cmp.Diff(wantSteps, gotSteps); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
			for name, want := range map[string]string{"system.jobId": queued.JobID, "system.planId": job.Plan.PlanID,
				"system.teamProjectId": server.ProjectID, "greeting": "hi"} {
				if got := job.Variables[name].Value; got != want {
					t.Errorf("variable %s = %q, want %q", name, got, want)
				}
			}

			// Renew, then report.
			renewed, err := a.client.RenewJobRequest(ctx, a.files.Settings.PoolID, job.RequestID)
			if err != nil {
				t.Fatal(err)
			}
			if renewed.LockedUntil == nil || renewed.LockedUntil.Before(time.Now().Add(9*time.Minute)) {
				t.Errorf("renewed lockedUntil = %v, want about 10 minutes ahead", renewed.LockedUntil)
			}
			if got, _ := inst.Jobs.GetJob(ctx, queued.ID); got.State != jobapi.StateRunning || got.AgentName != "agent-1" {
				t.Errorf("after renewal job = %+v, want running on agent-1", got)
			}
			jc := jobClient(t, job)
			rec := pipelines.TimelineRecord{ID: job.JobID, Type: "Job", Name: "hello", State: ptr(pipelines.StateInProgress)}
			if err := jc.UpdateTimelineRecords(ctx, job.Plan, job.Timeline.ID, []pipelines.TimelineRecord{rec}); err != nil {
				t.Fatal(err)
			}
			if err := jc.AppendFeed(ctx, job.Plan, job.Timeline.ID, job.JobID, pipelines.TimelineRecordFeedLines{
				Count: 1, Value: []string{"live line"}, StepID: job.Steps[0].ID}); err != nil {
				t.Fatal(err)
			}
			if l, _ := inst.Jobs.JobLog(ctx, queued.ID); l != "live line\n" {
				t.Errorf("log while running = %q, want the live feed", l)
			}
			log, err := jc.CreateLog(ctx, job.Plan, "logs/job.log")
			if err != nil {
				t.Fatal(err)
			}
			for _, chunk := range []string{"one\n", "two\n"} {
				if err := jc.UploadLog(ctx, job.Plan, log.ID, strings.NewReader(chunk)); err != nil {
					t.Fatal(err)
				}
			}
			rec.State, rec.Result = ptr(pipelines.StateCompleted), ptr(tc.result)
			if err := jc.UpdateTimelineRecords(ctx, job.Plan, job.Timeline.ID, []pipelines.TimelineRecord{rec}); err != nil {
				t.Fatal(err)
			}
			if err := jc.RaisePlanEvent(ctx, job.Plan, pipelines.JobEvent{
				Name: pipelines.JobCompletedEvent, JobID: job.JobID, RequestID: job.RequestID, Result: tc.result}); err != nil {
				t.Fatal(err)
			}

			done := inst.WaitJob(t, queued.ID, 10*time.Second)
			if done.Result != tc.result || done.FinishTime == nil || done.StartTime == nil {
				t.Errorf("finished job = %+v, want result %s with start and finish times", done, tc.result)
			}
			logText, err := inst.Jobs.JobLog(ctx, queued.ID)
			if err != nil || logText != "one\ntwo\n" {
				t.Errorf("JobLog = %q, %v; want the uploaded log", logText, err)
			}

			// The job token ends with the job.
			err = jc.UploadLog(ctx, job.Plan, log.ID, strings.NewReader("late\n"))
			wantAPIError(t, err, http.StatusUnauthorized, pipelines.TypeKeyJobTokenExpired)
			err = jc.RaisePlanEvent(ctx, job.Plan, pipelines.JobEvent{Name: pipelines.JobCompletedEvent, JobID: job.JobID, Result: pipelines.ResultSucceeded})
			wantAPIError(t, err, http.StatusUnauthorized, pipelines.TypeKeyJobTokenExpired)

			reqs, err := inst.Admin.ListJobRequests(ctx, a.files.Settings.PoolID)
			if err != nil || len(reqs) != 1 || reqs[0].Waiting() || reqs[0].Result == nil || *reqs[0].Result != tc.result {
				t.Errorf("ListJobRequests = %+v, %v; want the one finished request", reqs, err)
			}
			if err := a.client.DeleteSession(ctx, a.files.Settings.PoolID, a.session.SessionID); err != nil {
				t.Errorf("deleting the session: %v", err)
			}
		})
	}
}

func TestTokenEndpoint(t *testing.T) {
	inst := servertest.Start(t)
	inst.CreatePool(t, "default")
	a := newTestAgent(t, inst, "default", "agent-1")
	other := newTestAgent(t, inst, "default", "agent-2")
	now := time.Now()
	signedBy := func(b *testAgent, clientID, aud string, at time.Time) string {
		s, err := newAssertion(b, clientID, aud, at)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	clientID, aud := a.files.Credentials.Data.ClientID, a.files.Credentials.Data.AuthorizationURL
	valid := signedBy(a, clientID, aud, now)
	tampered := []byte(valid)
	// One character of the signature, for another that is still base64url
	// (flipping a bit of '-' or '_' gives one that is not, and a 400).
	if i := len(tampered) - 5; tampered[i] == 'A' {
		tampered[i] = 'B'
	} else {
		tampered[i] = 'A'
	}
	parts := strings.Split(valid, ".")
	otherClaims := strings.Split(signedBy(other, other.files.Credentials.Data.ClientID, aud, now), ".")[1]

	tests := []struct {
		name      string
		assertion string
		status    int
		typeKey   string
	}{
		{"signed by another agent's key", signedBy(other, clientID, aud, now), http.StatusUnauthorized, pipelines.TypeKeyUnauthorized},
		{"tampered signature", string(tampered), http.StatusUnauthorized, pipelines.TypeKeyUnauthorized},
		{"claims swapped for another agent's", parts[0] + "." + otherClaims + "." + parts[2], http.StatusUnauthorized, pipelines.TypeKeyUnauthorized},
		{"expired", signedBy(a, clientID, aud, now.Add(-10*time.Minute)), http.StatusUnauthorized, pipelines.TypeKeyUnauthorized},
		{"not yet valid", signedBy(a, clientID, aud, now.Add(10*time.Minute)), http.StatusUnauthorized, pipelines.TypeKeyUnauthorized},
		{"audience of another server", signedBy(a, clientID, "https://elsewhere.example/_apis/oauth2/token", now), http.StatusUnauthorized, pipelines.TypeKeyUnauthorized},
		{"unknown client id", signedBy(a, "8a7f2d2e-0000-0000-0000-000000000000", aud, now), http.StatusUnauthorized, pipelines.TypeKeyAgentNotFound},
		{"not a JWT", "not-a-jwt", http.StatusBadRequest, pipelines.TypeKeyBadRequest},
		{"unsigned", parts[0] + "." + parts[1] + ".", http.StatusUnauthorized, pipelines.TypeKeyUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := a.client.GetListenerToken(context.Background(), aud, tc.assertion)
			if tok != nil {
				t.Fatalf("got a token for a bad assertion")
			}
			wantAPIError(t, err, tc.status, tc.typeKey)
		})
	}

	t.Run("valid once, not twice", func(t *testing.T) {
		if _, err := a.client.GetListenerToken(context.Background(), aud, valid); err != nil {
			t.Fatalf("valid assertion refused: %v", err)
		}
		_, err := a.client.GetListenerToken(context.Background(), aud, valid)
		wantAPIError(t, err, http.StatusUnauthorized, pipelines.TypeKeyUnauthorized)
	})

	formTests := []struct {
		name string
		form url.Values
		want string
	}{
		{"wrong grant type", url.Values{"grant_type": {"password"}, "client_assertion_type": {pipelines.ClientAssertionTypeJWT}, "client_assertion": {valid}}, "unsupported_grant_type"},
		{"wrong assertion type", url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {"saml"}, "client_assertion": {valid}}, "invalid_request"},
		{"no assertion", url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {pipelines.ClientAssertionTypeJWT}}, "invalid_request"},
	}
	for _, tc := range formTests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.PostForm(aud, tc.form)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"error":"`+tc.want+`"`) {
				t.Errorf("got %d %s, want 400 with error %s", resp.StatusCode, b, tc.want)
			}
		})
	}
}

func TestDeletedAgentIsLockedOut(t *testing.T) {
	ctx := context.Background()
	inst := servertest.Start(t)
	inst.CreatePool(t, "default")
	a := newTestAgent(t, inst, "default", "agent-1")
	a.login(t)
	if err := inst.Admin.DeleteAgent(ctx, a.files.Settings.PoolID, a.files.Settings.AgentID); err != nil {
		t.Fatal(err)
	}
	_, err := a.client.CreateSession(ctx, a.files.Settings.PoolID, pipelines.TaskAgentSession{OwnerName: "x"})
	wantAPIError(t, err, http.StatusUnauthorized, pipelines.TypeKeyAccessTokenExpired)
	var e *pipelines.Error
	if asErr(err, &e); e == nil || !strings.HasPrefix(e.Challenge, "Bearer") {
		t.Errorf("401 without a Bearer challenge: %v", err)
	}
	_, err = a.client.GetListenerToken(ctx, a.files.Credentials.TokenURL(), a.assertion(t, time.Now()))
	wantAPIError(t, err, http.StatusUnauthorized, pipelines.TypeKeyAgentNotFound)
}

func TestSessionConflict(t *testing.T) {
	ctx := context.Background()
	inst := servertest.Start(t)
	inst.CreatePool(t, "default")
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	_, err := a.client.CreateSession(ctx, a.files.Settings.PoolID, pipelines.TaskAgentSession{OwnerName: "second"})
	wantAPIError(t, err, http.StatusConflict, pipelines.TypeKeySessionConflict)

	agents, err := inst.Admin.ListAgents(ctx, a.files.Settings.PoolID, "agent-1")
	if err != nil || len(agents) != 1 || agents[0].Status != pipelines.AgentOnline {
		t.Errorf("agent with a session = %+v, %v; want it online", agents, err)
	}
	if err := a.client.DeleteSession(ctx, a.files.Settings.PoolID, a.session.SessionID); err != nil {
		t.Fatal(err)
	}
	_, err = a.client.GetMessage(ctx, a.files.Settings.PoolID, a.session.SessionID, 0)
	wantAPIError(t, err, http.StatusNotFound, pipelines.TypeKeySessionExpired)
	a.openSession(t, false) // the conflict is gone with the old session
}

func TestSessionIdleTimeoutEndsConflict(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	inst := servertest.Start(t, servertest.WithConfig(func(c *server.Config) {
		c.Now = clock.Now
		c.SessionIdleTimeout = time.Minute
	}))
	inst.CreatePool(t, "default")
	a := newTestAgent(t, inst, "default", "agent-1").connect(t)
	clock.Advance(2 * time.Minute) // the agent crashed without closing its session
	a.openSession(t, false)
}

func TestAdminRoutesNeedTheAdminToken(t *testing.T) {
	inst := servertest.Start(t)
	p := inst.CreatePool(t, "default")
	routes := []struct{ method, path string }{
		{"GET", "/_apis/distributedtask/pools"},
		{"POST", "/_apis/distributedtask/pools"},
		{"GET", "/_apis/distributedtask/pools/1/agents"},
		{"POST", "/_apis/distributedtask/pools/1/agents"},
		{"DELETE", "/_apis/distributedtask/pools/1/agents/1"},
		{"GET", "/_apis/distributedtask/pools/1/jobrequests"},
		{"POST", "/_apis/agentry/jobs"},
		{"GET", "/_apis/agentry/jobs"},
		{"GET", "/_apis/agentry/jobs/1"},
		{"GET", "/_apis/agentry/jobs/1/log"},
	}
	creds := []struct{ name, header string }{
		{"none", ""},
		{"wrong bearer", "Bearer " + inst.AdminToken + "x"},
		{"wrong basic", "Basic " + base64.StdEncoding.EncodeToString([]byte(":nope"))},
		{"basic without password", "Basic " + base64.StdEncoding.EncodeToString([]byte(inst.AdminToken))},
		{"other scheme", "Token " + inst.AdminToken},
	}
	for _, r := range routes {
		for _, c := range creds {
			t.Run(r.method+" "+r.path+" "+c.name, func(t *testing.T) {
				resp := do(t, r.method, inst.URL+r.path, c.header, "")
				if resp.status != http.StatusUnauthorized || resp.challenge != "Bearer" || !strings.Contains(resp.body, pipelines.TypeKeyUnauthorized) {
					t.Errorf("got %d %q %s; want 401, WWW-Authenticate Bearer and a VssUnauthorizedException", resp.status, resp.challenge, resp.body)
				}
			})
		}
	}
	for _, h := range []string{
		"Bearer " + inst.AdminToken,
		"Basic " + base64.StdEncoding.EncodeToString([]byte(":"+inst.AdminToken)),
		"basic " + base64.StdEncoding.EncodeToString([]byte("anyone:"+inst.AdminToken)),
	} {
		if resp := do(t, "GET", inst.URL+"/_apis/distributedtask/pools?api-version=7.1", h, ""); resp.status != http.StatusOK || !strings.Contains(resp.body, p.Name) {
			t.Errorf("admin token as %q: got %d %s", strings.Fields(h)[0], resp.status, resp.body)
		}
	}
}

func TestErrorAnswers(t *testing.T) {
	inst := servertest.Start(t)
	inst.CreatePool(t, "default")
	a := newTestAgent(t, inst, "default", "agent-1")
	bearer := "Bearer " + inst.AdminToken
	tests := []struct {
		name, method, path, body string
		status                   int
		typeKey, contains        string
	}{
		{"malformed JSON", "POST", "/_apis/distributedtask/pools", `{"name": `, 400, pipelines.TypeKeyBadRequest, "JSON"},
		{"wrong field type", "POST", "/_apis/agentry/jobs", `{"pool":"default","steps":"echo"}`, 400, pipelines.TypeKeyBadRequest, `field \"steps\"`},
		{"no steps", "POST", "/_apis/agentry/jobs", `{"pool":"default"}`, 400, pipelines.TypeKeyBadRequest, "at least one step"},
		{"unknown task", "POST", "/_apis/agentry/jobs", `{"pool":"default","steps":[{"task":"PowerShell@2","script":"x"}]}`, 400, pipelines.TypeKeyBadRequest, "not supported"},
		{"unsupported demand", "POST", "/_apis/agentry/jobs", `{"pool":"default","steps":[{"script":"x"}],"demands":["Agent.Version -ltVersion 2.0"]}`, 400, pipelines.TypeKeyBadRequest, "-ltVersion"},
		{"demand version not a version", "POST", "/_apis/agentry/jobs", `{"pool":"default","steps":[{"script":"x"}],"demands":["Agent.Version -gtVersion two"]}`, 400, pipelines.TypeKeyBadRequest, "not a version"},
		{"malformed api-version", "GET", "/_apis/distributedtask/pools?api-version=seven", "", 400, "VssInvalidApiVersionException", "seven"},
		{"cancel a missing job", "POST", "/_apis/agentry/jobs/42/cancel", "", 404, pipelines.TypeKeyJobNotFound, "42"},
		{"watch a missing pool", "GET", "/_apis/agentry/pools/42/queue", "", 404, pipelines.TypeKeyPoolNotFound, "42"},
		{"watch with a bad revision", "GET", "/_apis/agentry/pools/1/queue?after=x", "", 400, pipelines.TypeKeyBadRequest, "revision"},
		{"queue in a missing pool", "POST", "/_apis/agentry/jobs", `{"pool":"nope","steps":[{"script":"x"}]}`, 404, pipelines.TypeKeyPoolNotFound, "nope"},
		{"pool exists", "POST", "/_apis/distributedtask/pools", `{"name":"DEFAULT"}`, 409, pipelines.TypeKeyPoolExists, "already exists"},
		{"missing pool", "GET", "/_apis/distributedtask/pools/99/agents", "", 404, pipelines.TypeKeyPoolNotFound, "99"},
		{"missing agent", "GET", "/_apis/distributedtask/pools/1/agents/99", "", 404, pipelines.TypeKeyAgentNotFound, "99"},
		{"agent without key", "POST", "/_apis/distributedtask/pools/1/agents", `{"name":"x"}`, 400, pipelines.TypeKeyBadRequest, "publicKey"},
		{"missing job", "GET", "/_apis/agentry/jobs/42", "", 404, pipelines.TypeKeyJobNotFound, "42"},
		{"bad job id", "GET", "/_apis/agentry/jobs/abc", "", 400, pipelines.TypeKeyBadRequest, "positive integer"},
		{"unknown route", "GET", "/_apis/nothing", "", 404, "VssResourceNotFoundException", "no route"},
		{"body too large", "POST", "/_apis/distributedtask/pools", `{"name":"` + strings.Repeat("x", 2<<20) + `"}`, 413, pipelines.TypeKeyBadRequest, "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := do(t, tc.method, inst.URL+tc.path, bearer, tc.body)
			if resp.status != tc.status || !strings.Contains(resp.body, `"typeKey":"`+tc.typeKey+`"`) || !strings.Contains(resp.body, tc.contains) {
				t.Errorf("got %d %s; want %d %s mentioning %q", resp.status, resp.body, tc.status, tc.typeKey, tc.contains)
			}
			if !strings.HasPrefix(resp.contentType, "application/json") {
				t.Errorf("Content-Type %q, want JSON", resp.contentType)
			}
		})
	}
	t.Run("agent name taken", func(t *testing.T) {
		pub := agentcrypto.PublicKeyOf(&a.key.PublicKey)
		_, err := inst.Admin.AddAgent(context.Background(), 1, pipelines.TaskAgent{Name: "AGENT-1",
			Authorization: &pipelines.TaskAgentAuthorization{PublicKey: &pub}})
		wantAPIError(t, err, http.StatusConflict, pipelines.TypeKeyAgentExists)
	})
}

func TestListenerTokenExpires(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	inst := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.Now = clock.Now }))
	inst.CreatePool(t, "default")
	a := newTestAgent(t, inst, "default", "agent-1")
	a.login(t)
	clock.Advance(server.DefaultListenerTokenLifetime + time.Second)
	_, err := a.client.CreateSession(context.Background(), a.files.Settings.PoolID, pipelines.TaskAgentSession{OwnerName: "x"})
	wantAPIError(t, err, http.StatusUnauthorized, pipelines.TypeKeyAccessTokenExpired)
}
