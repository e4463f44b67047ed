package agent

// Integration tests: the agent against a real agentry-server (servertest),
// over real HTTP, with real keys, tokens, session encryption and bash.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/poll"
	"github.com/agentry-dev/agentry/internal/server"
	"github.com/agentry-dev/agentry/internal/server/servertest"
	"github.com/agentry-dev/agentry/internal/server/store"
)

const testTimeout = 60 * time.Second

// spyStore is the server's real store, plus what tests need that the
// server has no API for: the job tokens it hands out (to prove they never
// leak) and injecting a message into an agent's queue.
type spyStore struct {
	store.Store
	mu       sync.Mutex
	tokens   []string
	injected *store.Message
	feed     []string
	// timelineCalls are the timeline updates the server received, one
	// entry per call.
	timelineCalls [][]pipelines.TimelineRecord
	changed       chan struct{} // closed and replaced on every feed or timeline call
	// renew, when set, answers RenewJob instead of the real store.
	renew func(requestID int64) (store.Job, error)
}

func (s *spyStore) RenewJob(ctx context.Context, requestID int64, agentID int, lockedUntil, now time.Time) (store.Job, error) {
	s.mu.Lock()
	renew := s.renew
	s.mu.Unlock()
	if renew != nil {
		return renew(requestID)
	}
	return s.Store.RenewJob(ctx, requestID, agentID, lockedUntil, now)
}

func (s *spyStore) setRenew(f func(requestID int64) (store.Job, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.renew = f
}

func (s *spyStore) AppendFeed(ctx context.Context, requestID int64, lines []string) error {
	s.mu.Lock()
	s.feed = append(s.feed, lines...)
	s.changedLocked()
	s.mu.Unlock()
	return s.Store.AppendFeed(ctx, requestID, lines)
}

func (s *spyStore) UpdateTimelineRecords(ctx context.Context, requestID int64, records []pipelines.TimelineRecord, now time.Time) ([]pipelines.TimelineRecord, error) {
	s.mu.Lock()
	s.timelineCalls = append(s.timelineCalls, append([]pipelines.TimelineRecord(nil), records...))
	s.changedLocked()
	s.mu.Unlock()
	return s.Store.UpdateTimelineRecords(ctx, requestID, records, now)
}

// changedLocked wakes the waiters; the caller holds s.mu.
func (s *spyStore) changedLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// await waits until seen, called with s.mu held, is true after a feed or
// timeline call (or already).
func (s *spyStore) await(t *testing.T, what string, seen func() bool) {
	t.Helper()
	timeout := time.After(testTimeout)
	for {
		s.mu.Lock()
		changed, ok := s.changed, seen()
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("the server never received %s", what)
		}
	}
}

// waitForFeed waits until the server received a live console line holding want.
func (s *spyStore) waitForFeed(t *testing.T, want string) {
	t.Helper()
	s.await(t, fmt.Sprintf("a live line with %q", want), func() bool {
		return slices.ContainsFunc(s.feed, func(l string) bool { return strings.Contains(l, want) })
	})
}

// waitForUpdate waits until the server received a timeline update for which
// match is true.
func (s *spyStore) waitForUpdate(t *testing.T, what string, match func(pipelines.TimelineRecord) bool) {
	t.Helper()
	s.await(t, "a timeline update with "+what, func() bool {
		for _, call := range s.timelineCalls {
			if slices.ContainsFunc(call, match) {
				return true
			}
		}
		return false
	})
}

func (s *spyStore) timelineCallCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.timelineCalls)
}

func (s *spyStore) AssignJob(ctx context.Context, a store.Assignment) (store.Job, error) {
	var msg pipelines.AgentJobRequestMessage
	if json.Unmarshal(a.MessageBody, &msg) == nil {
		if _, tok, ok := msg.JobToken(); ok {
			s.mu.Lock()
			s.tokens = append(s.tokens, tok)
			s.mu.Unlock()
		}
	}
	return s.Store.AssignJob(ctx, a)
}

func (s *spyStore) NextMessage(ctx context.Context, agentID int, now time.Time) (store.Message, error) {
	s.mu.Lock()
	m := s.injected
	s.mu.Unlock()
	if m != nil && m.AgentID == agentID {
		return *m, nil
	}
	return s.Store.NextMessage(ctx, agentID, now)
}

func (s *spyStore) DeleteMessage(ctx context.Context, agentID int, id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.injected != nil && s.injected.ID == id {
		s.injected = nil
		return nil
	}
	return s.Store.DeleteMessage(ctx, agentID, id)
}

func (s *spyStore) inject(m store.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.injected = &m
}

func (s *spyStore) jobTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...)
}

// env is one server with one pool and one registered agent.
type env struct {
	srv   *servertest.Instance
	store *spyStore
	pool  string
	files pipelines.AgentFiles
	dir   string // the agent's folder
	logs  *logBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	spy := &spyStore{Store: store.NewMemory(), changed: make(chan struct{})}
	srv := servertest.Start(t, servertest.WithLongPoll(200*time.Millisecond),
		servertest.WithConfig(func(c *server.Config) { c.Store = spy }))
	e := &env{srv: srv, store: spy, pool: "linux", dir: t.TempDir(), logs: &logBuffer{}}
	srv.CreatePool(t, e.pool)
	e.files = srv.RegisterAgent(t, e.pool, "agent-1")
	if err := pipelines.WriteAgentDir(e.dir, e.files); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) config(t *testing.T) Config {
	return Config{Dir: e.dir, WorkDir: t.TempDir(), Log: e.logs.logger(t), RetryTimeout: 5 * time.Second, CancelGrace: 5 * time.Second}
}

func (e *env) queue(t *testing.T, spec jobapi.JobSpec) *jobapi.Job {
	t.Helper()
	spec.Pool = e.pool
	j, err := e.srv.Jobs.QueueJob(context.Background(), spec)
	if err != nil {
		t.Fatalf("queueing a job: %v", err)
	}
	return j
}

func (e *env) jobLog(t *testing.T, id int64) string {
	t.Helper()
	log, err := e.srv.Jobs.JobLog(context.Background(), id)
	if err != nil {
		t.Fatalf("reading the job log: %v", err)
	}
	return log
}

func (e *env) records(t *testing.T, id int64) map[string]pipelines.TimelineRecord {
	t.Helper()
	recs, err := e.store.ListTimelineRecords(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]pipelines.TimelineRecord{}
	for _, r := range recs {
		out[r.ID] = r
	}
	return out
}

// runAgent runs the agent in process until it leaves.
func runAgent(t *testing.T, ctx context.Context, cfg Config) (Outcome, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, testTimeout)
	defer cancel()
	return Run(ctx, cfg)
}

// logBuffer keeps everything the agent logged, to check what it must not say.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) logger(t *testing.T) logr.Logger {
	return funcr.New(func(prefix, args string) {
		b.mu.Lock()
		fmt.Fprintln(&b.buf, prefix, args)
		b.mu.Unlock()
		t.Log(prefix, args)
	}, funcr.Options{Verbosity: 9})
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunsAJob(t *testing.T) {
	e := newEnv(t)
	job := e.queue(t, jobapi.JobSpec{
		Name:      "hello",
		Variables: map[string]pipelines.VariableValue{"greeting.word": {Value: "howdy"}},
		Steps: []jobapi.Step{
			{DisplayName: "say", Script: "echo marker-$((40+2))\necho \"word=$GREETING_WORD\"\necho \"token=${SYSTEM_ACCESSTOKEN:-absent}\"\necho to-stderr >&2"},
			{Task: jobapi.TaskBash, Script: "set -u; echo \"in $(basename \"$PWD\")\"; echo bash-$BASH_VERSION | cut -c1-5"},
		},
	})
	cfg := e.config(t)
	out, err := runAgent(t, context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if out.Result != pipelines.ResultSucceeded || out.RequestID != job.ID {
		t.Errorf("Outcome = %+v, want request %d succeeded", out, job.ID)
	}
	if got := e.srv.WaitJob(t, job.ID, testTimeout); got.Result != pipelines.ResultSucceeded {
		t.Errorf("server says the job %s, want succeeded", got.Result)
	}
	log := e.jobLog(t, job.ID)
	for _, want := range []string{"marker-42", "word=howdy", "token=absent", "to-stderr", "in s", "bash-", "##[section]Starting: say"} {
		if !strings.Contains(log, want) {
			t.Errorf("job log lacks %q:\n%s", want, log)
		}
	}

	recs := e.records(t, job.ID)
	jobRec, ok := recs[job.JobID]
	if !ok || jobRec.State == nil || *jobRec.State != pipelines.StateCompleted || jobRec.Result == nil || *jobRec.Result != pipelines.ResultSucceeded {
		t.Errorf("job timeline record = %+v, want completed and succeeded", jobRec)
	}
	steps := 0
	for _, r := range recs {
		if r.ParentID == nil || *r.ParentID != job.JobID {
			continue
		}
		steps++
		if r.State == nil || *r.State != pipelines.StateCompleted || r.Result == nil || *r.Result != pipelines.ResultSucceeded || r.Log == nil || r.StartTime == nil || r.FinishTime == nil {
			t.Errorf("step record %q = %+v, want completed, succeeded, timed, with a log", r.Name, r)
		}
	}
	if steps != 2 {
		t.Errorf("%d step records, want 2", steps)
	}

	// The session is gone once the agent left.
	a, err := e.srv.Admin.GetAgent(context.Background(), e.files.Settings.PoolID, e.files.Settings.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != pipelines.AgentOffline {
		t.Errorf("agent status after leaving = %q, want offline", a.Status)
	}
	// The agent's work folder holds no script or log once the job is done.
	assertNoFiles(t, cfg.WorkDir)
}

// The records of steps shorter than the feed interval reach the server in
// one call, as Microsoft's agent batches them, and complete.
func TestShortJobTimelineInOneCall(t *testing.T) {
	e := newEnv(t)
	job := e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{{Script: "echo one"}, {Script: "echo two"}}})
	cfg := e.config(t)
	cfg.FeedInterval = time.Hour
	if out, err := runAgent(t, context.Background(), cfg); err != nil || out.Result != pipelines.ResultSucceeded {
		t.Fatalf("Run = %+v, %v; want the job done", out, err)
	}
	if n := e.store.timelineCallCount(); n != 1 {
		t.Errorf("%d timeline calls, want 1", n)
	}
	recs := e.records(t, job.ID)
	if len(recs) != 3 {
		t.Errorf("%d timeline records, want the job's and two steps'", len(recs))
	}
	for _, r := range recs {
		if r.State == nil || *r.State != pipelines.StateCompleted || r.Result == nil || *r.Result != pipelines.ResultSucceeded ||
			r.StartTime == nil || r.FinishTime == nil || r.Order == nil || (r.ID != job.JobID && r.Log == nil) {
			t.Errorf("record %q = %+v, want completed, succeeded, timed and ordered, a step's with its log", r.Name, r)
		}
	}
}

// A running step's record reaches the server while the step runs, so the
// job's timeline shows what it is doing.
func TestRunningStepReachesTheTimeline(t *testing.T) {
	e := newEnv(t)
	release := filepath.Join(t.TempDir(), "release")
	if err := syscall.Mkfifo(release, 0o600); err != nil {
		t.Fatal(err)
	}
	job := e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{{DisplayName: "waits", Script: "read -r word < " + release + "; echo released-$word"}}})
	cfg := e.config(t)
	cfg.FeedInterval = 20 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, err := runAgent(t, context.Background(), cfg)
		done <- err
	}()
	e.store.waitForUpdate(t, "the step in progress", func(r pipelines.TimelineRecord) bool {
		return r.Name == "waits" && r.State != nil && *r.State == pipelines.StateInProgress && r.Log != nil
	})
	// Opening the fifo waits for the step to open it too.
	go func() { _ = os.WriteFile(release, []byte("now\n"), 0o600) }()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if log := e.jobLog(t, job.ID); !strings.Contains(log, "released-now") {
		t.Errorf("job log lacks the released step's output:\n%s", log)
	}
	for _, r := range e.records(t, job.ID) {
		if r.State == nil || *r.State != pipelines.StateCompleted {
			t.Errorf("record %q = %+v, want completed", r.Name, r)
		}
	}
}

func assertNoFiles(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("file left in the work folder: %s", p)
		}
		return nil
	})
}

func TestFailingStepFailsTheJob(t *testing.T) {
	e := newEnv(t)
	job := e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{
		{Script: "echo first; exit 1"},
		{Script: "echo second-step-ran"},
	}})
	out, err := runAgent(t, context.Background(), e.config(t))
	if err != nil {
		t.Fatalf("Run: %v (a failed job is still a job done)", err)
	}
	if out.Result != pipelines.ResultFailed {
		t.Errorf("Outcome result = %s, want failed", out.Result)
	}
	if got := e.srv.WaitJob(t, job.ID, testTimeout); got.Result != pipelines.ResultFailed {
		t.Errorf("server says the job %s, want failed", got.Result)
	}
	log := e.jobLog(t, job.ID)
	if !strings.Contains(log, "exited with code '1'") {
		t.Errorf("job log does not say how the step failed:\n%s", log)
	}
	if strings.Contains(log, "second-step-ran") {
		t.Errorf("the step after a failure ran:\n%s", log)
	}
	var results []pipelines.TaskResult
	for _, r := range e.records(t, job.ID) {
		if r.ParentID != nil && r.Result != nil {
			results = append(results, *r.Result)
		}
	}
	if !(len(results) == 2 && (results[0] == pipelines.ResultFailed && results[1] == pipelines.ResultSkipped || results[1] == pipelines.ResultFailed && results[0] == pipelines.ResultSkipped)) {
		t.Errorf("step results = %v, want one failed and one skipped", results)
	}
}

func TestSecretsAndTheJobTokenNeverLeak(t *testing.T) {
	e := newEnv(t)
	const secret = "s3cr3t-V@lue"
	job := e.queue(t, jobapi.JobSpec{
		Variables: map[string]pipelines.VariableValue{
			"db.password": {Value: secret, IsSecret: true},
		},
		Steps: []jobapi.Step{{DisplayName: "uses $(db.password)", Script: strings.Join([]string{
			`echo "macro=$(db.password)"`,
			`echo "env=${DB_PASSWORD:-not-exported}"`,
			`echo "reversed=$(echo '$(db.password)' | rev | rev)"`,
			`echo "token-length=${#SYSTEM_ACCESSTOKEN}"`,
			`echo "token=$SYSTEM_ACCESSTOKEN"`,
			`echo "hinted=ticket-12345"`,
		}, "\n")}, {Script: "echo never"}},
	})
	// agentry-server reserves system.* variables; Azure DevOps sends
	// system.enableAccessToken when a pipeline maps System.AccessToken.
	tj := e.takeJob(t)
	tj.msg.Variables["system.enableAccessToken"] = pipelines.VariableValue{Value: "true"}
	// A mask hint as Azure sends for values a task declares secret.
	tj.msg.Mask = append(tj.msg.Mask, pipelines.MaskHint{Type: "regex", Value: `ticket-[0-9]{5}`})
	// A step whose failure message (a timeline issue) quotes the secret.
	tj.msg.Steps[1].Inputs["workingDirectory"] = "/nonexistent/$(db.password)"
	tj.msg.Steps[1].ContinueOnError = true
	tj.msg.Steps[1].DisplayName = "step 2 $(db.password) " + secret
	if result, err := runJob(tj.ctx, tj.cfg, tj.l, tj.msg, tj.dirs); err != nil || result != pipelines.ResultSucceededWithIssues {
		t.Fatalf("runJob = %s, %v; want succeededWithIssues", result, err)
	}
	cfg := tj.cfg
	e.srv.WaitJob(t, job.ID, testTimeout)
	log := e.jobLog(t, job.ID)
	for _, want := range []string{"macro=***", "env=not-exported", "reversed=***", "token=***", "hinted=***", "/nonexistent/*** does not exist"} {
		if !strings.Contains(log, want) {
			t.Errorf("job log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "token-length=0") {
		t.Errorf("system.enableAccessToken did not export SYSTEM_ACCESSTOKEN:\n%s", log)
	}
	tokens := e.store.jobTokens()
	if len(tokens) != 1 {
		t.Fatalf("server handed out %d job tokens, want 1", len(tokens))
	}
	e.store.mu.Lock()
	feed := strings.Join(e.store.feed, "\n")
	e.store.mu.Unlock()
	if !strings.Contains(feed, "macro=***") {
		t.Errorf("live feed lacks the masked line:\n%s", feed)
	}
	leaks := map[string]string{"job log": log, "agent log": e.logs.String(), "live feed": feed}
	issues := 0
	for _, r := range e.records(t, job.ID) {
		b, _ := json.Marshal(r)
		leaks["timeline record "+r.Name] = string(b)
		issues += len(r.Issues)
	}
	if issues == 0 {
		t.Error("no timeline issue was reported for the failing step")
	}
	for where, text := range leaks {
		for name, value := range map[string]string{"the secret": secret, "the job token": tokens[0], "the hinted value": "ticket-12345"} {
			if strings.Contains(text, value) {
				t.Errorf("%s holds %s", where, name)
			}
		}
	}
	assertNoFiles(t, cfg.WorkDir)
}

// The server only queues CmdLine@2 and Bash@3, so this test takes the real
// job message from the real server and swaps in a task the agent does not
// know, as Azure DevOps could send.
func TestUnknownTaskFailsItsStep(t *testing.T) {
	e := newEnv(t)
	job := e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{{Script: "echo should-not-run"}}})
	tj := e.takeJob(t)
	tj.msg.Steps[0].Reference = pipelines.TaskStepReference{ID: "e213ff0f-5d5c-4791-802d-52ea3e7be1f1", Name: "PowerShell", Version: "2.247.1"}
	result, err := runJob(tj.ctx, tj.cfg, tj.l, tj.msg, tj.dirs)
	if err != nil {
		t.Fatalf("runJob: %v", err)
	}
	if result != pipelines.ResultFailed {
		t.Errorf("result = %s, want failed", result)
	}
	if got := e.srv.WaitJob(t, job.ID, testTimeout); got.Result != pipelines.ResultFailed {
		t.Errorf("server says the job %s, want failed", got.Result)
	}
	log := e.jobLog(t, job.ID)
	if !strings.Contains(log, "PowerShell@2") || strings.Contains(log, "should-not-run") {
		t.Errorf("job log should name PowerShell@2 and not run the script:\n%s", log)
	}
}

// takenJob is a job taken from the real server by the agent's own listener,
// ready for runJob, so a test can change the message first.
type takenJob struct {
	ctx  context.Context
	cfg  Config
	l    *listener
	msg  *pipelines.AgentJobRequestMessage
	dirs workDirs
}

func (e *env) takeJob(t *testing.T, configure ...func(*Config)) takenJob {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	cfg := e.config(t)
	for _, f := range configure {
		f(&cfg)
	}
	cfg = cfg.withDefaults()
	t.Cleanup(cfg.HTTPClient.CloseIdleConnections)
	key, err := e.files.Key.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	l := newListener(cfg, e.files, key)
	if err := l.refreshToken(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.openSession(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.closeSession(context.Background()) })
	msg, err := waitForJob(ctx, l, 0)
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := makeWorkDirs(cfg.WorkDir)
	if err != nil {
		t.Fatal(err)
	}
	return takenJob{ctx: ctx, cfg: cfg, l: l, msg: msg, dirs: dirs}
}

func TestCancellation(t *testing.T) {
	tests := []struct {
		name   string
		cancel func(t *testing.T, e *env, ctxCancel context.CancelFunc, job *jobapi.Job)
	}{
		{"JobCancellation message", func(_ *testing.T, e *env, _ context.CancelFunc, job *jobapi.Job) {
			body, _ := json.Marshal(pipelines.JobCancelMessage{JobID: job.JobID, Timeout: "00:00:05"})
			e.store.inject(store.Message{ID: 1 << 40, AgentID: e.files.Settings.AgentID, Type: pipelines.MessageTypeJobCancellation, Body: body})
		}},
		{"canceled with the server's job API", func(t *testing.T, e *env, _ context.CancelFunc, job *jobapi.Job) {
			if _, err := e.srv.Jobs.CancelJob(context.Background(), job.ID); err != nil {
				t.Errorf("canceling job %d: %v", job.ID, err)
			}
		}},
		{"agent stopping (SIGTERM)", func(_ *testing.T, _ *env, ctxCancel context.CancelFunc, _ *jobapi.Job) { ctxCancel() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			job := e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{
				{Script: "echo started; sleep 300; echo not-reached"},
				{Script: "echo second-step-ran"},
			}})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type result struct {
				out Outcome
				err error
			}
			done := make(chan result, 1)
			go func() {
				out, err := runAgent(t, ctx, e.config(t))
				done <- result{out, err}
			}()
			e.store.waitForFeed(t, "started")
			tt.cancel(t, e, cancel, job)
			r := <-done
			if r.err != nil || r.out.Result != pipelines.ResultCanceled {
				t.Fatalf("Run = %+v, %v; want a canceled job and no error", r.out, r.err)
			}
			if got := e.srv.WaitJob(t, job.ID, testTimeout); got.Result != pipelines.ResultCanceled {
				t.Errorf("server says the job %s, want canceled", got.Result)
			}
			log := e.jobLog(t, job.ID)
			if strings.Contains(log, "not-reached") || strings.Contains(log, "second-step-ran") {
				t.Errorf("the job went on after it was canceled:\n%s", log)
			}
		})
	}
}

func TestLeavesWithoutAJob(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, e *env, cfg *Config)
		during   func(t *testing.T, e *env) // runs while the agent listens
		want     error
		wantCode int
		wantText string
	}{
		{
			name:     "idle timeout",
			setup:    func(_ *testing.T, _ *env, cfg *Config) { cfg.IdleTimeout = 300 * time.Millisecond },
			want:     ErrIdleTimeout,
			wantCode: ExitIdleTimeout,
		},
		{
			name:     "deregistered while listening",
			during:   func(t *testing.T, e *env) { e.deleteAgentWhenOnline(t) },
			want:     ErrDeregistered,
			wantCode: ExitDeregistered,
		},
		{
			name: "deregistered before start",
			setup: func(t *testing.T, e *env, _ *Config) {
				if err := e.srv.Admin.DeleteAgent(context.Background(), e.files.Settings.PoolID, e.files.Settings.AgentID); err != nil {
					t.Fatal(err)
				}
			},
			want:     ErrDeregistered,
			wantCode: ExitDeregistered,
		},
		{
			name: "key not registered",
			setup: func(t *testing.T, e *env, _ *Config) {
				other, err := agentcrypto.GenerateKey()
				if err != nil {
					t.Fatal(err)
				}
				f := e.files
				f.Key = agentcrypto.ParametersOf(other)
				if err := pipelines.WriteAgentDir(e.dir, f); err != nil {
					t.Fatal(err)
				}
			},
			want:     ErrCredentialsRejected,
			wantCode: ExitCredentialsRejected,
		},
		{
			name: "server unreachable",
			setup: func(t *testing.T, e *env, cfg *Config) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				dead := "http://" + ln.Addr().String()
				ln.Close()
				f := e.files
				f.Settings.ServerURL = dead
				f.Credentials.Data.AuthorizationURL = dead + server.TokenPath
				f.Credentials.Data.OAuthEndpointURL = ""
				if err := pipelines.WriteAgentDir(e.dir, f); err != nil {
					t.Fatal(err)
				}
				cfg.RetryTimeout = time.Second
			},
			wantCode: ExitError,
			wantText: "server unreachable after retrying",
		},
		{
			name: "bad agent files",
			setup: func(t *testing.T, e *env, _ *Config) {
				if err := os.WriteFile(filepath.Join(e.dir, pipelines.CredentialsFile), []byte("{"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want:     ErrConfig,
			wantCode: ExitBadConfiguration,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.config(t)
			if tt.setup != nil {
				tt.setup(t, e, &cfg)
			}
			done := make(chan error, 1)
			go func() {
				_, err := runAgent(t, context.Background(), cfg)
				done <- err
			}()
			if tt.during != nil {
				tt.during(t, e)
			}
			err := <-done
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Run error = %v, want %v", err, tt.want)
			}
			if code := ExitCode(err); code != tt.wantCode {
				t.Errorf("exit code = %d (%v), want %d", code, err, tt.wantCode)
			}
			if tt.wantText != "" && (err == nil || !strings.Contains(err.Error(), tt.wantText)) {
				t.Errorf("error = %v, want it to say %q", err, tt.wantText)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans lines", err)
			}
		})
	}
}

// deleteAgentWhenOnline waits until the agent has a session, then deletes
// its registration as the operator does.
func (e *env) deleteAgentWhenOnline(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	s := e.files.Settings
	if err := poll.Until(ctx, testTimeout, 20*time.Millisecond, func() error {
		a, err := e.srv.Admin.GetAgent(ctx, s.PoolID, s.AgentID)
		if err == nil && a.Status != pipelines.AgentOnline {
			err = fmt.Errorf("agent %s", a.Status)
		}
		return err
	}); err != nil {
		t.Fatalf("agent never came online: %v", err)
	}
	if err := e.srv.Admin.DeleteAgent(ctx, s.PoolID, s.AgentID); err != nil {
		t.Fatal(err)
	}
}

// No step may start before the first lock renewal succeeded.
func TestFirstRenewalMustSucceed(t *testing.T) {
	e := newEnv(t)
	e.store.setRenew(func(int64) (store.Job, error) { return store.Job{}, store.ErrNotFound })
	e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{{Script: "echo ran-anyway"}}})
	_, err := runAgent(t, context.Background(), e.config(t))
	if err == nil || ExitCode(err) != ExitError || !strings.Contains(err.Error(), "renewing the job-request lock") {
		t.Fatalf("Run error = %v, want a failed renewal (exit %d)", err, ExitError)
	}
	e.store.mu.Lock()
	defer e.store.mu.Unlock()
	if len(e.store.feed) > 0 {
		t.Errorf("a step ran without the lock: %q", e.store.feed)
	}
}

func TestKeepLock(t *testing.T) {
	serverError := errors.New("disk on fire")
	tests := []struct {
		name      string
		renew     func(n int) error // answer to renewal number n (from 1)
		stopAfter int               // end the job after this many renewals; 0 never
		want      error             // why the job was stopped; nil: not stopped
	}{
		{"renews until the job ends", func(int) error { return nil }, 3, nil},
		{"job request gone", func(n int) error {
			if n < 3 {
				return nil
			}
			return store.ErrNotFound
		}, 0, errJobGone},
		{"server failing past the lock", func(int) error { return serverError }, 0, errLockLost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{{Script: "true"}}})
			tj := e.takeJob(t)
			clock := newFakeClock(true)
			cfg := tj.cfg
			cfg.Clock = clock
			jr := &jobRunner{cfg: cfg, log: cfg.Log, l: tj.l, job: tj.msg}

			ctx, endJob := context.WithCancel(context.Background())
			defer endJob()
			var mu sync.Mutex
			renewals := 0
			e.store.setRenew(func(id int64) (store.Job, error) {
				mu.Lock()
				defer mu.Unlock()
				renewals++
				if tt.stopAfter > 0 && renewals == tt.stopAfter {
					endJob()
				}
				if err := tt.renew(renewals); err != nil {
					return store.Job{}, err
				}
				return e.store.Store.GetJob(context.Background(), id)
			})
			jobCtx, stop := context.WithCancelCause(context.Background())
			start := clock.Now()
			jr.keepLock(ctx, start.Add(10*time.Minute), stop)

			if got := context.Cause(jobCtx); !errors.Is(got, tt.want) && !(got == nil && tt.want == nil) {
				t.Errorf("job stopped with %v, want %v", got, tt.want)
			}
			if tt.want == errLockLost {
				if waited := clock.Now().Sub(start); waited < 15*time.Minute || waited > 20*time.Minute {
					t.Errorf("gave up after %s of failures, want just past the lock's end plus 5 minutes (15m)", waited)
				}
			}
			if tt.stopAfter > 0 && renewals != tt.stopAfter {
				t.Errorf("%d renewals, want %d", renewals, tt.stopAfter)
			}
		})
	}
}
