// Package storetest is the conformance suite every store.Store passes: the
// in-memory store now, the durable one next. Run it from the
// implementation's tests with a constructor for a fresh, empty store.
package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// Run runs every conformance test against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Pools", testPools},
		{"Agents", testAgents},
		{"ValuesAreCopies", testCopies},
		{"ListenerTokens", testListenerTokens},
		{"Sessions", testSessions},
		{"AssignJob", testAssignJob},
		{"BriefJobLists", testBriefJobLists},
		{"LatestFinishedJobs", testLatestFinishedJobs},
		{"MessagesRedeliveredUntilDeleted", testMessages},
		{"DeleteAgentRequeuesUnreceivedJob", testDeleteAgentRequeues},
		{"DeleteAgentAbandonsReceivedJob", testDeleteAgentAbandons},
		{"RenewAndFinish", testRenewFinish},
		{"CancelJob", testCancelJob},
		{"RequeueJobBoundedAttempts", testRequeueJob},
		{"DeleteAgentRequeuesReceivedUnstartedJob", testDeleteAgentRequeuesUnstarted},
		{"Reporting", testReporting},
		{"ConcurrentAssign", testConcurrentAssign},
		{"ConcurrentFinish", testConcurrentFinish},
		{"IDsNotReused", testIDsNotReused},
		{"AdminTokens", testAdminTokens},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func fixture(t *testing.T, s store.Store) (store.Pool, store.Agent) {
	t.Helper()
	ctx := context.Background()
	p := must[store.Pool](t)(s.CreatePool(ctx, "default", t0))
	a := must[store.Agent](t)(s.CreateAgent(ctx, store.Agent{
		PoolID: p.ID, Name: "agent-1", ClientID: "c1", Enabled: true, MaxParallelism: 1,
		PublicKey:          agentcrypto.PublicKey{Exponent: []byte{1, 0, 1}, Modulus: []byte{0xAB, 0xCD}},
		SystemCapabilities: map[string]string{"Agent.OS": "Linux"},
		CreatedOn:          t0,
	}))
	return p, a
}

func queue(t *testing.T, s store.Store, poolID int, name string) store.Job {
	t.Helper()
	return must[store.Job](t)(s.CreateJob(context.Background(), store.Job{
		PoolID: poolID, PoolName: "default", JobID: "j-" + name, PlanID: "p-" + name, TimelineID: "t-" + name,
		Name: name, QueueTime: t0,
		Spec: jobapi.JobSpec{Pool: "default", Steps: []jobapi.Step{{Script: "echo " + name}}},
	}))
}

func assign(t *testing.T, s store.Store, j store.Job, agentID int, hash string) store.Job {
	t.Helper()
	return must[store.Job](t)(s.AssignJob(context.Background(), store.Assignment{
		RequestID: j.RequestID, AgentID: agentID, TokenHash: hash, LockedUntil: t0.Add(10 * time.Minute),
		MessageType: pipelines.MessageTypeJobRequest, MessageBody: []byte(`{"jobId":"` + j.JobID + `"}`), Now: t0,
	}))
}

func testPools(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := must[store.Pool](t)(s.CreatePool(ctx, "alpha", t0))
	b := must[store.Pool](t)(s.CreatePool(ctx, "beta", t0))
	if a.ID == b.ID || a.ID == 0 {
		t.Fatalf("pool ids %d, %d: want distinct and non-zero", a.ID, b.ID)
	}
	_, err := s.CreatePool(ctx, "ALPHA", t0)
	wantErr(t, err, store.ErrExists)
	got := must[[]store.Pool](t)(s.ListPools(ctx))
	if diff := cmp.Diff([]store.Pool{a, b}, got); diff != "" {
		t.Errorf("ListPools (-want +got):\n%s", diff)
	}
	_, err = s.GetPool(ctx, 999)
	wantErr(t, err, store.ErrNotFound)
}

func testAgents(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	if a.ID == 0 {
		t.Fatal("agent got no id")
	}
	_, err := s.CreateAgent(ctx, store.Agent{PoolID: p.ID, Name: "AGENT-1", ClientID: "c2"})
	wantErr(t, err, store.ErrExists)
	_, err = s.CreateAgent(ctx, store.Agent{PoolID: 999, Name: "x", ClientID: "c3"})
	wantErr(t, err, store.ErrNotFound)

	got := must[store.Agent](t)(s.GetAgentByClientID(ctx, "c1"))
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("GetAgentByClientID (-want +got):\n%s", diff)
	}
	repl := a
	repl.ClientID, repl.PoolID, repl.Version = "other", 999, "2.0"
	repl.UserCapabilities = map[string]string{"gpu": "1"}
	r := must[store.Agent](t)(s.ReplaceAgent(ctx, repl))
	want := a
	want.Version, want.UserCapabilities = "2.0", map[string]string{"gpu": "1"}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("ReplaceAgent kept the wrong fields (-want +got):\n%s", diff)
	}
	if err := s.SetSystemCapabilities(ctx, a.ID, map[string]string{"Agent.OS": "Windows_NT"}); err != nil {
		t.Fatal(err)
	}
	list := must[[]store.Agent](t)(s.ListAgents(ctx, p.ID))
	if len(list) != 1 || list[0].SystemCapabilities["Agent.OS"] != "Windows_NT" {
		t.Errorf("ListAgents = %+v, want the agent with updated capabilities", list)
	}
	other := must[store.Pool](t)(s.CreatePool(ctx, "other", t0))
	must[store.Agent](t)(s.CreateAgent(ctx, store.Agent{PoolID: other.ID, Name: "agent-1", ClientID: "c4"}))
	must[store.Agent](t)(s.CreateAgent(ctx, store.Agent{PoolID: p.ID, Name: "agent-2", ClientID: "c5"}))
	for _, c := range []struct{ pool, want int }{{p.ID, 2}, {other.ID, 1}, {999, 0}} {
		if n := must[int](t)(s.CountAgents(ctx, c.pool)); n != c.want {
			t.Errorf("CountAgents(pool %d) = %d, want %d", c.pool, n, c.want)
		}
	}
	must[store.AgentDeletion](t)(s.DeleteAgent(ctx, a.ID, t0))
	if n := must[int](t)(s.CountAgents(ctx, p.ID)); n != 1 {
		t.Errorf("CountAgents after a deletion = %d, want 1", n)
	}
	_, err = s.GetAgent(ctx, a.ID)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.DeleteAgent(ctx, a.ID, t0)
	wantErr(t, err, store.ErrNotFound)
}

func testCopies(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, a := fixture(t, s)
	a.SystemCapabilities["Agent.OS"] = "changed"
	a.PublicKey.Modulus[0] = 0
	got := must[store.Agent](t)(s.GetAgent(ctx, a.ID))
	if got.SystemCapabilities["Agent.OS"] != "Linux" || got.PublicKey.Modulus[0] != 0xAB {
		t.Errorf("changing a returned agent changed the stored one: %+v", got)
	}
	j := queue(t, s, a.PoolID, "one")
	j.Spec.Steps[0].Script = "changed"
	got2 := must[store.Job](t)(s.GetJob(ctx, j.RequestID))
	if got2.Spec.Steps[0].Script != "echo one" {
		t.Errorf("changing a returned job changed the stored one: %+v", got2.Spec)
	}
}

func testListenerTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, a := fixture(t, s)
	old := store.ListenerToken{Hash: "h-old", AgentID: a.ID, ExpiresAt: t0}
	cur := store.ListenerToken{Hash: "h-cur", AgentID: a.ID, ExpiresAt: t0.Add(2 * time.Hour)}
	if err := s.PutListenerToken(ctx, old, t0.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutListenerToken(ctx, cur, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetListenerToken(ctx, "h-old")
	wantErr(t, err, store.ErrNotFound) // expired before the second Put
	got := must[store.ListenerToken](t)(s.GetListenerToken(ctx, "h-cur"))
	if diff := cmp.Diff(cur, got); diff != "" {
		t.Errorf("GetListenerToken (-want +got):\n%s", diff)
	}
	wantErr(t, s.PutListenerToken(ctx, store.ListenerToken{Hash: "x", AgentID: 999}, t0), store.ErrNotFound)
	if err := s.DeleteListenerTokens(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetListenerToken(ctx, "h-cur")
	wantErr(t, err, store.ErrNotFound)
}

func testSessions(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, a := fixture(t, s)
	s1 := store.Session{ID: "s1", AgentID: a.ID, PoolID: a.PoolID, Key: []byte("k1"), CreatedOn: t0, LastSeen: t0}
	must[store.Session](t)(s.CreateSession(ctx, s1, t0.Add(-time.Minute)))
	_, err := s.CreateSession(ctx, store.Session{ID: "s2", AgentID: a.ID, LastSeen: t0}, t0.Add(-time.Minute))
	wantErr(t, err, store.ErrConflict)
	if err := s.TouchSession(ctx, "s1", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := must[store.Session](t)(s.GetAgentSession(ctx, a.ID))
	if got.ID != "s1" || !got.LastSeen.Equal(t0.Add(time.Minute)) {
		t.Errorf("GetAgentSession = %+v, want s1 last seen a minute later", got)
	}
	// A session idle since before staleBefore gives way to a new one.
	must[store.Session](t)(s.CreateSession(ctx, store.Session{ID: "s3", AgentID: a.ID, LastSeen: t0.Add(time.Hour)}, t0.Add(2*time.Minute)))
	_, err = s.GetSession(ctx, "s1")
	wantErr(t, err, store.ErrNotFound)
	if err := s.DeleteSession(ctx, "s3"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.DeleteSession(ctx, "s3"), store.ErrNotFound)
}

func testAssignJob(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	b := must[store.Agent](t)(s.CreateAgent(ctx, store.Agent{PoolID: p.ID, Name: "agent-2", ClientID: "c2"}))
	j1 := queue(t, s, p.ID, "one")
	j2 := queue(t, s, p.ID, "two")
	got := assign(t, s, j1, a.ID, "tok1")
	if got.AgentID != a.ID || got.AgentName != a.Name || !got.AssignTime.Equal(t0) || got.TokenHash != "tok1" {
		t.Errorf("assigned job = %+v", got)
	}
	tests := []struct {
		name  string
		req   int64
		agent int
	}{
		{"job already taken", j1.RequestID, b.ID},
		{"agent already has a job", j2.RequestID, a.ID},
	}
	for _, tc := range tests {
		_, err := s.AssignJob(ctx, store.Assignment{RequestID: tc.req, AgentID: tc.agent, Now: t0})
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: got %v, want ErrConflict", tc.name, err)
		}
	}
	byTok := must[store.Job](t)(s.GetJobByTokenHash(ctx, "tok1"))
	if byTok.RequestID != j1.RequestID {
		t.Errorf("GetJobByTokenHash = request %d, want %d", byTok.RequestID, j1.RequestID)
	}
	_, err := s.GetJobByTokenHash(ctx, "")
	wantErr(t, err, store.ErrNotFound)
	ag := must[store.Agent](t)(s.GetAgent(ctx, a.ID))
	if ag.RequestID != j1.RequestID {
		t.Errorf("agent.RequestID = %d, want %d", ag.RequestID, j1.RequestID)
	}
	list := must[[]store.Job](t)(s.ListJobs(ctx, store.JobFilter{PoolID: p.ID}))
	if len(list) != 2 || list[0].RequestID != j1.RequestID || list[1].RequestID != j2.RequestID {
		t.Errorf("ListJobs = %+v, want both jobs by id", list)
	}
	queued := must[[]store.Job](t)(s.ListJobs(ctx, store.JobFilter{PoolID: p.ID, Queued: true}))
	if len(queued) != 1 || queued[0].RequestID != j2.RequestID {
		t.Errorf("ListJobs(Queued) = %+v, want only job two", queued)
	}

	// A finished job stays in the Unfinished+OrHeld list while its agent is
	// registered, and leaves it with the agent.
	must[store.Job](t)(s.FinishJob(ctx, j1.RequestID, pipelines.ResultSucceeded, t0.Add(time.Minute)))
	ids := func(f store.JobFilter) []int64 {
		var out []int64
		for _, j := range must[[]store.Job](t)(s.ListJobs(ctx, f)) {
			out = append(out, j.RequestID)
		}
		return out
	}
	if got := ids(store.JobFilter{PoolID: p.ID, Unfinished: true}); !slices.Equal(got, []int64{j2.RequestID}) {
		t.Errorf("ListJobs(Unfinished) = %v, want [%d]", got, j2.RequestID)
	}
	if got := ids(store.JobFilter{PoolID: p.ID, Unfinished: true, OrHeld: true}); !slices.Equal(got, []int64{j1.RequestID, j2.RequestID}) {
		t.Errorf("ListJobs(Unfinished, OrHeld) with the agent registered = %v, want [%d %d]", got, j1.RequestID, j2.RequestID)
	}
	if d := must[store.AgentDeletion](t)(s.DeleteAgent(ctx, a.ID, t0.Add(2*time.Minute))); d != (store.AgentDeletion{Held: j1.RequestID}) {
		t.Errorf("deleting the agent of finished job %d = %+v, want it held, neither requeued nor abandoned", j1.RequestID, d)
	}
	if got := ids(store.JobFilter{PoolID: p.ID, Unfinished: true, OrHeld: true}); !slices.Equal(got, []int64{j2.RequestID}) {
		t.Errorf("ListJobs(Unfinished, OrHeld) with the agent deleted = %v, want [%d]", got, j2.RequestID)
	}
}

// testLatestFinishedJobs checks JobFilter.Finished: the unfinished jobs,
// the held ones, and that many of the latest finished, each once, of this
// pool only.
func testLatestFinishedJobs(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	other := must[store.Pool](t)(s.CreatePool(ctx, "other", t0))
	create := func(poolID int) store.Job {
		return must[store.Job](t)(s.CreateJob(ctx, store.Job{PoolID: poolID, PoolName: "default", JobID: "j", Name: "n",
			Spec: jobapi.JobSpec{Pool: "default", Steps: []jobapi.Step{{Script: "echo hi"}}}, QueueTime: t0}))
	}
	var finished []int64
	for range 4 {
		j := create(p.ID)
		must[store.Job](t)(s.FinishJob(ctx, j.RequestID, pipelines.ResultSucceeded, t0))
		finished = append(finished, j.RequestID)
	}
	waiting := create(p.ID)
	held := create(p.ID) // the latest finished: held by a still registered agent
	assign(t, s, held, a.ID, "tok")
	must[store.Job](t)(s.FinishJob(ctx, held.RequestID, pipelines.ResultSucceeded, t0))
	otherFinished := create(other.ID)
	must[store.Job](t)(s.FinishJob(ctx, otherFinished.RequestID, pipelines.ResultSucceeded, t0))

	ids := func(f store.JobFilter) []int64 {
		var out []int64
		for _, j := range must[[]store.Job](t)(s.ListJobs(ctx, f)) {
			out = append(out, j.RequestID)
		}
		return out
	}
	for _, tc := range []struct {
		f    store.JobFilter
		want []int64
	}{
		{store.JobFilter{PoolID: p.ID, Unfinished: true, OrHeld: true}, []int64{waiting.RequestID, held.RequestID}},
		// The held job is the latest finished: one more is the latest
		// before it, and the held job is listed once.
		{store.JobFilter{PoolID: p.ID, Unfinished: true, OrHeld: true, Finished: 2}, []int64{finished[3], waiting.RequestID, held.RequestID}},
		{store.JobFilter{PoolID: p.ID, Unfinished: true, Finished: 2}, []int64{finished[3], waiting.RequestID, held.RequestID}},
		{store.JobFilter{PoolID: p.ID, Unfinished: true, OrHeld: true, Finished: 100}, append(slices.Clone(finished), waiting.RequestID, held.RequestID)},
		{store.JobFilter{PoolID: p.ID, Unfinished: true, Finished: 1, Brief: true}, []int64{waiting.RequestID, held.RequestID}},
	} {
		if got := ids(tc.f); !slices.Equal(got, tc.want) {
			t.Errorf("ListJobs(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
}

// testBriefJobLists checks that a brief list (JobFilter.Brief) holds the
// same jobs as the full one, each with only its demands left of its spec,
// for every filter the server uses.
func testBriefJobLists(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	other := must[store.Pool](t)(s.CreatePool(ctx, "other", t0))
	spec := func(demands ...string) jobapi.JobSpec {
		return jobapi.JobSpec{Pool: "default", Demands: demands, TimeoutInMinutes: 5,
			Steps:     []jobapi.Step{{Script: "echo hi"}},
			Variables: map[string]pipelines.VariableValue{"v": {Value: "x"}}}
	}
	create := func(poolID int, sp jobapi.JobSpec) store.Job {
		return must[store.Job](t)(s.CreateJob(ctx, store.Job{PoolID: poolID, PoolName: "default", JobID: "j", Name: "n", Spec: sp, QueueTime: t0}))
	}
	held := create(p.ID, spec("Agent.OS -equals Linux"))
	assign(t, s, held, a.ID, "tok")
	must[store.Job](t)(s.FinishJob(ctx, held.RequestID, pipelines.ResultSucceeded, t0))
	create(p.ID, spec())
	create(p.ID, spec("docker", "Agent.Version -gtVersion 2.0"))
	create(other.ID, spec("gpu"))
	for _, f := range []store.JobFilter{
		{},
		{PoolID: p.ID},
		{PoolID: p.ID, Queued: true},
		{PoolID: p.ID, Unfinished: true},
		{PoolID: p.ID, Unfinished: true, OrHeld: true},
		{Unfinished: true, OrHeld: true},
		{PoolID: p.ID, Unfinished: true, OrHeld: true, Finished: 1},
	} {
		full := must[[]store.Job](t)(s.ListJobs(ctx, f))
		b := f
		b.Brief = true
		brief := must[[]store.Job](t)(s.ListJobs(ctx, b))
		want := make([]store.Job, 0, len(full))
		for _, j := range full {
			j.Spec = jobapi.JobSpec{Demands: j.Spec.Demands}
			want = append(want, j)
		}
		if diff := cmp.Diff(want, brief); diff != "" {
			t.Errorf("ListJobs(%+v) differs from the full list but for the spec (-want +got):\n%s", b, diff)
		}
	}
	if got := must[[]store.Job](t)(s.ListJobs(ctx, store.JobFilter{PoolID: p.ID, Brief: true})); len(got) != 3 ||
		!slices.Equal(got[2].Spec.Demands, []string{"docker", "Agent.Version -gtVersion 2.0"}) {
		t.Errorf("brief list of the pool = %+v, want three jobs, the last with its two demands", got)
	}
}

func testMessages(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	_, err := s.NextMessage(ctx, a.ID, t0)
	wantErr(t, err, store.ErrNotFound)
	j := assign(t, s, queue(t, s, p.ID, "one"), a.ID, "tok")
	first := must[store.Message](t)(s.NextMessage(ctx, a.ID, t0.Add(time.Second)))
	again := must[store.Message](t)(s.NextMessage(ctx, a.ID, t0.Add(2*time.Second)))
	if diff := cmp.Diff(first, again); diff != "" {
		t.Errorf("undeleted message not delivered again (-first +again):\n%s", diff)
	}
	if first.RequestID != j.RequestID || first.Type != pipelines.MessageTypeJobRequest {
		t.Errorf("message = %+v", first)
	}
	got := must[store.Job](t)(s.GetJob(ctx, j.RequestID))
	if !got.ReceiveTime.Equal(t0.Add(time.Second)) {
		t.Errorf("ReceiveTime = %v, want the first delivery", got.ReceiveTime)
	}
	if err := s.DeleteMessage(ctx, a.ID+1, first.ID); err != nil {
		t.Fatal(err)
	}
	must[store.Message](t)(s.NextMessage(ctx, a.ID, t0)) // another agent cannot delete it
	if err := s.DeleteMessage(ctx, a.ID, first.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.NextMessage(ctx, a.ID, t0)
	wantErr(t, err, store.ErrNotFound)
	if err := s.DeleteMessage(ctx, a.ID, first.ID); err != nil {
		t.Errorf("deleting a deleted message: %v", err)
	}
}

func testDeleteAgentRequeues(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	j := assign(t, s, queue(t, s, p.ID, "one"), a.ID, "tok")
	d := must[store.AgentDeletion](t)(s.DeleteAgent(ctx, a.ID, t0))
	if diff := cmp.Diff(store.AgentDeletion{Requeued: j.RequestID, Held: j.RequestID}, d); diff != "" {
		t.Errorf("DeleteAgent (-want +got):\n%s", diff)
	}
	got := must[store.Job](t)(s.GetJob(ctx, j.RequestID))
	if !got.AssignTime.IsZero() || got.AgentID != 0 || got.TokenHash != "" || got.Finished() {
		t.Errorf("requeued job = %+v, want it queued again", got)
	}
	b := must[store.Agent](t)(s.CreateAgent(ctx, store.Agent{PoolID: p.ID, Name: "agent-2", ClientID: "c2"}))
	assign(t, s, got, b.ID, "tok2")
	msg := must[store.Message](t)(s.NextMessage(ctx, b.ID, t0))
	if msg.RequestID != j.RequestID {
		t.Errorf("new agent got message for request %d, want %d", msg.RequestID, j.RequestID)
	}
}

func testDeleteAgentAbandons(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	must[store.Session](t)(s.CreateSession(ctx, store.Session{ID: "s1", AgentID: a.ID, LastSeen: t0}, t0))
	if err := s.PutListenerToken(ctx, store.ListenerToken{Hash: "lt", AgentID: a.ID, ExpiresAt: t0.Add(time.Hour)}, t0); err != nil {
		t.Fatal(err)
	}
	j := assign(t, s, queue(t, s, p.ID, "one"), a.ID, "tok")
	must[store.Message](t)(s.NextMessage(ctx, a.ID, t0))
	must[store.Job](t)(s.RenewJob(ctx, j.RequestID, a.ID, t0.Add(10*time.Minute), t0)) // started
	d := must[store.AgentDeletion](t)(s.DeleteAgent(ctx, a.ID, t0.Add(time.Minute)))
	if diff := cmp.Diff(store.AgentDeletion{Abandoned: j.RequestID, Held: j.RequestID}, d); diff != "" {
		t.Errorf("DeleteAgent (-want +got):\n%s", diff)
	}
	got := must[store.Job](t)(s.GetJob(ctx, j.RequestID))
	if got.Result != pipelines.ResultAbandoned || !got.FinishTime.Equal(t0.Add(time.Minute)) {
		t.Errorf("job = %+v, want abandoned", got)
	}
	_, err := s.GetSession(ctx, "s1")
	wantErr(t, err, store.ErrNotFound)
	_, err = s.GetListenerToken(ctx, "lt")
	wantErr(t, err, store.ErrNotFound)
	_, err = s.NextMessage(ctx, a.ID, t0)
	wantErr(t, err, store.ErrNotFound)
}

func testRenewFinish(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	j := assign(t, s, queue(t, s, p.ID, "one"), a.ID, "tok")
	_, err := s.RenewJob(ctx, j.RequestID, a.ID+1, t0, t0)
	wantErr(t, err, store.ErrNotFound)
	r1 := must[store.Job](t)(s.RenewJob(ctx, j.RequestID, a.ID, t0.Add(11*time.Minute), t0.Add(time.Minute)))
	r2 := must[store.Job](t)(s.RenewJob(ctx, j.RequestID, a.ID, t0.Add(12*time.Minute), t0.Add(2*time.Minute)))
	if !r1.StartTime.Equal(t0.Add(time.Minute)) || !r2.StartTime.Equal(r1.StartTime) || !r2.LockedUntil.Equal(t0.Add(12*time.Minute)) {
		t.Errorf("renewals = %+v, %+v: want start at the first, lock from the last", r1, r2)
	}
	f := must[store.Job](t)(s.FinishJob(ctx, j.RequestID, pipelines.ResultFailed, t0.Add(3*time.Minute)))
	if f.Result != pipelines.ResultFailed || !f.Finished() {
		t.Errorf("finished job = %+v", f)
	}
	again, err := s.FinishJob(ctx, j.RequestID, pipelines.ResultSucceeded, t0.Add(4*time.Minute))
	wantErr(t, err, store.ErrConflict)
	if again.Result != pipelines.ResultFailed {
		t.Errorf("second finish changed the result to %q", again.Result)
	}
	r3 := must[store.Job](t)(s.RenewJob(ctx, j.RequestID, a.ID, t0.Add(time.Hour), t0.Add(5*time.Minute)))
	if !r3.LockedUntil.Equal(t0.Add(12 * time.Minute)) {
		t.Errorf("renewing a finished job moved its lock to %v", r3.LockedUntil)
	}
}

func ptr[T any](v T) *T { return &v }

func testReporting(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, _ := fixture(t, s)
	j := queue(t, s, p.ID, "one")
	_, err := s.UpdateTimelineRecords(ctx, 999, nil, t0)
	wantErr(t, err, store.ErrNotFound)

	must[[]pipelines.TimelineRecord](t)(s.UpdateTimelineRecords(ctx, j.RequestID, []pipelines.TimelineRecord{
		{ID: "job", Name: "Job", State: ptr(pipelines.StateInProgress)},
		{ID: "step", Name: "Step", ParentID: ptr("job")},
	}, t0))
	must[[]pipelines.TimelineRecord](t)(s.UpdateTimelineRecords(ctx, j.RequestID, []pipelines.TimelineRecord{
		{ID: "job", State: ptr(pipelines.StateCompleted), Result: ptr(pipelines.ResultSucceeded)},
	}, t0))
	recs := must[[]pipelines.TimelineRecord](t)(s.ListTimelineRecords(ctx, j.RequestID))
	if len(recs) != 2 || recs[0].ID != "job" || recs[0].Name != "Job" || *recs[0].State != pipelines.StateCompleted ||
		recs[0].ChangeID != 2 || recs[1].ID != "step" {
		t.Errorf("records = %+v, want job merged (name kept, state completed) then step", recs)
	}

	if err := s.AppendFeed(ctx, j.RequestID, []string{"live 1", "live 2"}); err != nil {
		t.Fatal(err)
	}
	if got := string(must[[]byte](t)(s.JobLog(ctx, j.RequestID))); got != "live 1\nlive 2\n" {
		t.Errorf("JobLog before any upload = %q, want the feed lines", got)
	}
	l1 := must[pipelines.TaskLog](t)(s.CreateLog(ctx, j.RequestID, "logs/1", t0))
	l2 := must[pipelines.TaskLog](t)(s.CreateLog(ctx, j.RequestID, "logs/2", t0))
	if l1.ID != 1 || l2.ID != 2 {
		t.Errorf("log ids %d, %d: want 1, 2", l1.ID, l2.ID)
	}
	_, err = s.AppendLog(ctx, j.RequestID, 3, []byte("x"), t0)
	wantErr(t, err, store.ErrNotFound)
	must[pipelines.TaskLog](t)(s.AppendLog(ctx, j.RequestID, 2, []byte("second\n"), t0))
	must[pipelines.TaskLog](t)(s.AppendLog(ctx, j.RequestID, 1, []byte("first a\n"), t0))
	got := must[pipelines.TaskLog](t)(s.AppendLog(ctx, j.RequestID, 1, []byte("first b"), t0))
	if got.LineCount != 1 {
		t.Errorf("LineCount = %d, want 1", got.LineCount)
	}
	if log := string(must[[]byte](t)(s.JobLog(ctx, j.RequestID))); log != "live 1\nlive 2\n" {
		t.Errorf("JobLog of a running job = %q, want the live feed", log)
	}
	must[store.Job](t)(s.FinishJob(ctx, j.RequestID, pipelines.ResultSucceeded, t0))
	if log := string(must[[]byte](t)(s.JobLog(ctx, j.RequestID))); log != "first a\nfirst b\nsecond\n" {
		t.Errorf("JobLog of a finished job = %q, want the uploaded logs in order", log)
	}
}

func testCancelJob(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	cancel := store.Message{Type: pipelines.MessageTypeJobCancellation, Body: []byte(`{"jobId":"x"}`)}

	// Queued: canceled at once.
	q := queue(t, s, p.ID, "queued")
	got := must[store.Job](t)(s.CancelJob(ctx, q.RequestID, cancel, t0.Add(time.Minute)))
	if got.Result != pipelines.ResultCanceled || !got.FinishTime.Equal(t0.Add(time.Minute)) {
		t.Errorf("canceled queued job = %+v, want finished canceled", got)
	}
	again, err := s.CancelJob(ctx, q.RequestID, cancel, t0)
	wantErr(t, err, store.ErrConflict)
	if again.Result != pipelines.ResultCanceled {
		t.Errorf("second cancel answered %+v, want the stored job", again)
	}
	_, err = s.CancelJob(ctx, 999, cancel, t0)
	wantErr(t, err, store.ErrNotFound)

	// Assigned, not started: canceled at once, its job message gone.
	b := must[store.Agent](t)(s.CreateAgent(ctx, store.Agent{PoolID: p.ID, Name: "agent-2", ClientID: "c2"}))
	j2 := assign(t, s, queue(t, s, p.ID, "assigned"), b.ID, "tok-b")
	must[store.Job](t)(s.CancelJob(ctx, j2.RequestID, cancel, t0))
	_, err = s.NextMessage(ctx, b.ID, t0)
	wantErr(t, err, store.ErrNotFound)

	// Started: a cancellation message for its agent, once; the job runs on.
	j := assign(t, s, queue(t, s, p.ID, "running"), a.ID, "tok")
	msg := must[store.Message](t)(s.NextMessage(ctx, a.ID, t0))
	if err := s.DeleteMessage(ctx, a.ID, msg.ID); err != nil {
		t.Fatal(err)
	}
	must[store.Job](t)(s.RenewJob(ctx, j.RequestID, a.ID, t0.Add(10*time.Minute), t0))
	got = must[store.Job](t)(s.CancelJob(ctx, j.RequestID, cancel, t0.Add(2*time.Minute)))
	if got.Finished() || !got.CancelTime.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("canceled running job = %+v, want unfinished with CancelTime", got)
	}
	got = must[store.Job](t)(s.CancelJob(ctx, j.RequestID, cancel, t0.Add(3*time.Minute)))
	if !got.CancelTime.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("second cancel moved CancelTime to %v", got.CancelTime)
	}
	m := must[store.Message](t)(s.NextMessage(ctx, a.ID, t0))
	if m.Type != pipelines.MessageTypeJobCancellation || string(m.Body) != `{"jobId":"x"}` || m.AgentID != a.ID {
		t.Errorf("cancellation message = %+v", m)
	}
	if err := s.DeleteMessage(ctx, a.ID, m.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.NextMessage(ctx, a.ID, t0)
	wantErr(t, err, store.ErrNotFound) // queued once, not per cancel call
}

func testRequeueJob(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	j := queue(t, s, p.ID, "one")
	for attempt := 1; attempt <= store.MaxJobAttempts; attempt++ {
		got := assign(t, s, j, a.ID, "tok")
		if got.Attempts != attempt {
			t.Fatalf("attempt %d: Attempts = %d", attempt, got.Attempts)
		}
		must[store.Message](t)(s.NextMessage(ctx, a.ID, t0)) // received, never renewed
		j = must[store.Job](t)(s.RequeueJob(ctx, j.RequestID, a.ID, t0.Add(time.Hour)))
		if attempt < store.MaxJobAttempts {
			if j.Finished() || !j.AssignTime.IsZero() || !j.ReceiveTime.IsZero() || j.AgentID != 0 || j.TokenHash != "" {
				t.Fatalf("attempt %d: requeued job = %+v, want queued again", attempt, j)
			}
			if _, err := s.NextMessage(ctx, a.ID, t0); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("attempt %d: the requeued job's message is still there (%v)", attempt, err)
			}
			if ag := must[store.Agent](t)(s.GetAgent(ctx, a.ID)); ag.RequestID != 0 {
				t.Fatalf("attempt %d: agent still holds request %d", attempt, ag.RequestID)
			}
		}
	}
	if j.Result != pipelines.ResultAbandoned || !j.FinishTime.Equal(t0.Add(time.Hour)) {
		t.Errorf("after %d attempts job = %+v, want abandoned", store.MaxJobAttempts, j)
	}
	unfinished := must[[]store.Job](t)(s.ListJobs(ctx, store.JobFilter{Unfinished: true}))
	if len(unfinished) != 0 {
		t.Errorf("ListJobs(Unfinished) = %+v, want none", unfinished)
	}

	// A started job, or another agent's, is not taken back.
	k := assign(t, s, queue(t, s, p.ID, "two"), a.ID, "tok2")
	_, err := s.RequeueJob(ctx, k.RequestID, a.ID+1, t0)
	wantErr(t, err, store.ErrConflict)
	must[store.Job](t)(s.RenewJob(ctx, k.RequestID, a.ID, t0.Add(time.Hour), t0))
	_, err = s.RequeueJob(ctx, k.RequestID, a.ID, t0)
	wantErr(t, err, store.ErrConflict)
	if got := must[[]store.Job](t)(s.ListJobs(ctx, store.JobFilter{Unfinished: true})); len(got) != 1 || got[0].RequestID != k.RequestID {
		t.Errorf("ListJobs(Unfinished) = %+v, want job two", got)
	}
}

func testDeleteAgentRequeuesUnstarted(t *testing.T, s store.Store) {
	ctx := context.Background()
	p, a := fixture(t, s)
	j := assign(t, s, queue(t, s, p.ID, "one"), a.ID, "tok")
	must[store.Message](t)(s.NextMessage(ctx, a.ID, t0)) // received, never renewed
	d := must[store.AgentDeletion](t)(s.DeleteAgent(ctx, a.ID, t0))
	if diff := cmp.Diff(store.AgentDeletion{Requeued: j.RequestID, Held: j.RequestID}, d); diff != "" {
		t.Errorf("DeleteAgent (-want +got):\n%s", diff)
	}
	got := must[store.Job](t)(s.GetJob(ctx, j.RequestID))
	if got.Finished() || !got.AssignTime.IsZero() || got.Attempts != 1 {
		t.Errorf("job = %+v, want queued again after one attempt", got)
	}
}
