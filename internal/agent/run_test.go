package agent

// More integration tests against the real agentry-server: task inputs,
// conditions, time-outs, losing the lock, token refresh, session conflicts,
// transient errors, large and non-UTF-8 output, Microsoft's agent files.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/servertest"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// fastClock is the wall clock with every wait shortened by scale, so step
// and job time-outs given in minutes pass in a test's time. Now is not
// scaled: the server's lock times stay comparable.
type fastClock struct{ scale time.Duration }

func (fastClock) Now() time.Time                           { return time.Now() }
func (c fastClock) After(d time.Duration) <-chan time.Time { return time.After(d / c.scale) }

// aMinuteIs100ms makes a minute last 100 ms; the feed is sent every 500 ms.
func aMinuteIs100ms(cfg *Config) {
	cfg.Clock = fastClock{scale: 600}
	cfg.FeedInterval = 5 * time.Minute
}

// stepResults are the results of the job's step records in step order.
func (e *env) stepResults(t *testing.T, id int64) []pipelines.TaskResult {
	t.Helper()
	recs, err := e.store.ListTimelineRecords(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var steps []pipelines.TimelineRecord
	for _, r := range recs {
		if r.ParentID != nil && r.Order != nil {
			steps = append(steps, r)
		}
	}
	slices.SortFunc(steps, func(a, b pipelines.TimelineRecord) int { return *a.Order - *b.Order })
	out := make([]pipelines.TaskResult, len(steps))
	for i, r := range steps {
		if r.Result != nil {
			out[i] = *r.Result
		}
	}
	return out
}

// queueSteps queues a job of n placeholder steps, to be rewritten on the
// message the agent takes (agentry-server only queues inline scripts).
func (e *env) queueSteps(t *testing.T, n int, vars map[string]pipelines.VariableValue) *jobapi.Job {
	t.Helper()
	steps := make([]jobapi.Step, n)
	for i := range steps {
		steps[i] = jobapi.Step{Script: "echo placeholder"}
	}
	return e.queue(t, jobapi.JobSpec{Steps: steps, Variables: vars})
}

// step sets a step of the taken job.
func (tj takenJob) step(i int, task pipelines.TaskStepReference, condition string, inputs map[string]string) *pipelines.JobStep {
	s := &tj.msg.Steps[i]
	s.Reference, s.Condition, s.Inputs = task, condition, inputs
	return s
}

func (e *env) finish(t *testing.T, tj takenJob, job *jobapi.Job, want pipelines.TaskResult) string {
	t.Helper()
	result, err := runJob(tj.ctx, tj.cfg, tj.l, tj.msg, tj.dirs)
	if err != nil {
		t.Fatalf("runJob: %v", err)
	}
	if result != want {
		t.Errorf("result = %s, want %s", result, want)
	}
	if got := e.srv.WaitJob(t, job.ID, testTimeout); got.Result != want {
		t.Errorf("server says the job %s, want %s", got.Result, want)
	}
	return e.jobLog(t, job.ID)
}

func wantLog(t *testing.T, log string, want, notWant []string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(log, w) {
			t.Errorf("job log lacks %q", w)
		}
	}
	for _, w := range notWant {
		if strings.Contains(log, w) {
			t.Errorf("job log has %q", w)
		}
	}
	if t.Failed() {
		t.Logf("job log:\n%s", log)
	}
}

func TestScriptTaskInputs(t *testing.T) {
	e := newEnv(t)
	job := e.queueSteps(t, 5, map[string]pipelines.VariableValue{"greeting": {Value: "howdy"}, "sub.dir": {Value: "sub"}})
	tj := e.takeJob(t)
	if err := os.MkdirAll(filepath.Join(tj.dirs.sources, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(tj.dirs.sources, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := "echo \"args=$#:$1:$2\"\necho \"pwd=$(basename \"$PWD\")\"\n"
	if err := os.WriteFile(filepath.Join(tj.dirs.sources, "scripts", "build.sh"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	tj.step(0, pipelines.TaskBash, "", map[string]string{
		"targetType": "filePath", "filePath": "scripts/build.sh", "arguments": `"$(greeting) there" second`, "workingDirectory": "$(sub.dir)",
	})
	tj.step(1, pipelines.TaskCmdLine, "", map[string]string{"script": "echo to-stderr >&2", "failOnStderr": "true"}).ContinueOnError = true
	// As on Azure, a script is not run with -e: its exit code is its last command's.
	tj.step(2, pipelines.TaskCmdLine, "", map[string]string{"script": "false\necho after-false"})
	tj.step(3, pipelines.TaskBash, "", map[string]string{"targetType": "inline", "script": "echo inline-$(greeting)", "failOnStderr": "false"})
	tj.step(4, pipelines.TaskStepReference{Name: "PowerShell", Version: "2.1.0"}, "failed()", map[string]string{"script": "x"})

	log := e.finish(t, tj, job, pipelines.ResultSucceededWithIssues)
	wantLog(t, log, []string{"args=2:howdy there:second", "pwd=sub", "to-stderr", "wrote one or more lines to the standard error stream",
		"after-false", "inline-howdy", "--noprofile --norc"}, nil)
	want := []pipelines.TaskResult{pipelines.ResultSucceeded, pipelines.ResultSucceededWithIssues, pipelines.ResultSucceeded, pipelines.ResultSucceeded, pipelines.ResultSkipped}
	if got := e.stepResults(t, job.ID); !slices.Equal(got, want) {
		t.Errorf("step results = %v, want %v", got, want)
	}
}

func TestUnknownTaskNamedInItsFailure(t *testing.T) {
	e := newEnv(t)
	job := e.queueSteps(t, 1, nil)
	tj := e.takeJob(t)
	tj.step(0, pipelines.TaskStepReference{ID: "2ff763a7-ce83-4e1f-bc89-0ae63477cebe", Name: "PublishBuildArtifacts", Version: "1.242.0"}, "", nil)
	log := e.finish(t, tj, job, pipelines.ResultFailed)
	wantLog(t, log, []string{"task PublishBuildArtifacts@1 is not supported"}, nil)
}

func TestStepConditions(t *testing.T) {
	e := newEnv(t)
	job := e.queueSteps(t, 6, nil)
	tj := e.takeJob(t)
	tj.step(0, pipelines.TaskCmdLine, "", map[string]string{"script": "exit 1"})
	tj.step(1, pipelines.TaskCmdLine, "succeeded()", map[string]string{"script": "echo ran-succeeded"})
	tj.step(2, pipelines.TaskCmdLine, "failed()", map[string]string{"script": "echo ran-failed"})
	tj.step(3, pipelines.TaskCmdLine, "succeededOrFailed()", map[string]string{"script": "echo ran-succeededOrFailed"})
	tj.step(4, pipelines.TaskCmdLine, "always()", map[string]string{"script": "echo ran-always"})
	tj.step(5, pipelines.TaskCmdLine, "canceled()", map[string]string{"script": "echo ran-canceled"})
	log := e.finish(t, tj, job, pipelines.ResultFailed)
	wantLog(t, log, []string{"ran-failed", "ran-succeededOrFailed", "ran-always"}, []string{"ran-succeeded\n", "ran-canceled"})
	f, s, ok, sk := pipelines.ResultFailed, pipelines.ResultSucceeded, pipelines.ResultSucceeded, pipelines.ResultSkipped
	if got, want := e.stepResults(t, job.ID), []pipelines.TaskResult{f, sk, s, ok, ok, sk}; !slices.Equal(got, want) {
		t.Errorf("step results = %v, want %v", got, want)
	}
}

// After a cancellation from the server (or a job time-out) always() and
// canceled() steps still run; when the agent itself must stop, nothing more runs.
func TestStepsAfterCancellation(t *testing.T) {
	tests := []struct {
		name   string
		stop   func(e *env, tj takenJob, cancelRun context.CancelFunc)
		vars   map[string]pipelines.VariableValue
		want   pipelines.TaskResult
		issue  string
		ran    []string
		notRan []string
	}{
		{
			name: "JobCancellation",
			stop: func(e *env, tj takenJob, _ context.CancelFunc) {
				body, _ := json.Marshal(pipelines.JobCancelMessage{JobID: tj.msg.JobID, Timeout: "00:05:00"})
				e.store.inject(store.Message{ID: 1 << 40, AgentID: e.files.Settings.AgentID, Type: pipelines.MessageTypeJobCancellation, Body: body})
			},
			want: pipelines.ResultCanceled, issue: "the server canceled the job",
			ran: []string{"ran-always", "ran-canceled"}, notRan: []string{"not-reached", "ran-succeeded", "ran-succeededOrFailed"},
		},
		{
			name: "job time-out",
			// One minute, which lasts 100 ms here.
			vars: map[string]pipelines.VariableValue{varJobTimeout: {Value: "1"}},
			want: pipelines.ResultCanceled, issue: "the job ran longer than its maximum time of 1m0s",
			ran: []string{"ran-always", "ran-canceled"}, notRan: []string{"not-reached", "ran-succeeded", "ran-succeededOrFailed"},
		},
		{
			name: "agent stopping",
			stop: func(_ *env, _ takenJob, cancelRun context.CancelFunc) { cancelRun() },
			want: pipelines.ResultCanceled, issue: "the agent was asked to stop",
			notRan: []string{"not-reached", "ran-always", "ran-canceled", "ran-succeeded"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			job := e.queueSteps(t, 5, nil)
			tj := e.takeJob(t, aMinuteIs100ms)
			for k, v := range tt.vars {
				tj.msg.Variables[k] = v
			}
			tj.step(0, pipelines.TaskCmdLine, "", map[string]string{"script": "echo started; sleep 300; echo not-reached"})
			tj.step(1, pipelines.TaskCmdLine, "succeeded()", map[string]string{"script": "echo ran-succeeded"})
			tj.step(2, pipelines.TaskCmdLine, "succeededOrFailed()", map[string]string{"script": "echo ran-succeededOrFailed"})
			tj.step(3, pipelines.TaskCmdLine, "always()", map[string]string{"script": "echo ran-always"})
			tj.step(4, pipelines.TaskCmdLine, "canceled()", map[string]string{"script": "echo ran-canceled"})
			ctx, cancelRun := context.WithCancel(tj.ctx)
			defer cancelRun()
			type result struct {
				res pipelines.TaskResult
				err error
			}
			done := make(chan result, 1)
			go func() {
				r, err := runJob(ctx, tj.cfg, tj.l, tj.msg, tj.dirs)
				done <- result{r, err}
			}()
			if tt.stop != nil {
				e.store.waitForFeed(t, "started")
				tt.stop(e, tj, cancelRun)
			}
			r := <-done
			if r.err != nil || r.res != tt.want {
				t.Fatalf("runJob = %s, %v; want %s", r.res, r.err, tt.want)
			}
			if got := e.srv.WaitJob(t, job.ID, testTimeout); got.Result != tt.want {
				t.Errorf("server says the job %s, want %s", got.Result, tt.want)
			}
			wantLog(t, e.jobLog(t, job.ID), tt.ran, tt.notRan)
			jobRec := e.records(t, job.ID)[job.JobID]
			if len(jobRec.Issues) != 1 || !strings.Contains(jobRec.Issues[0].Message, tt.issue) {
				t.Errorf("job record issues = %+v, want one saying %q", jobRec.Issues, tt.issue)
			}
			if res := e.stepResults(t, job.ID); res[0] != pipelines.ResultCanceled {
				t.Errorf("the stopped step is %s, want canceled", res[0])
			}
		})
	}
}

func TestStepTimeout(t *testing.T) {
	e := newEnv(t)
	job := e.queueSteps(t, 3, nil)
	tj := e.takeJob(t, aMinuteIs100ms)
	// The step ignores SIGTERM, so only SIGKILL after the grace period ends it.
	tj.step(0, pipelines.TaskCmdLine, "", map[string]string{"script": "trap '' TERM; echo started; sleep 300; echo not-reached"}).TimeoutInMinutes = 1
	tj.step(1, pipelines.TaskCmdLine, "", map[string]string{"script": "echo ran-succeeded"})
	tj.step(2, pipelines.TaskCmdLine, "always()", map[string]string{"script": "echo ran-always"})
	log := e.finish(t, tj, job, pipelines.ResultFailed)
	wantLog(t, log, []string{"started", "The step timed out after 1 minutes.", "ran-always"}, []string{"not-reached", "ran-succeeded"})
	if got, want := e.stepResults(t, job.ID), []pipelines.TaskResult{pipelines.ResultFailed, pipelines.ResultSkipped, pipelines.ResultSucceeded}; !slices.Equal(got, want) {
		t.Errorf("step results = %v, want %v", got, want)
	}
}

// When the lock is lost the running step is stopped (SIGKILL after the grace
// period if it ignores SIGTERM), no further step runs and the job ends abandoned.
func TestLostLock(t *testing.T) {
	tests := []struct {
		name string
		// renew answers renewals after the first.
		renew func(e *env, requestID int64) (store.Job, error)
	}{
		{"the server no longer has the job request", func(*env, int64) (store.Job, error) {
			return store.Job{}, store.ErrNotFound
		}},
		{"renewals fail past lockedUntil plus 5 minutes", func() func(*env, int64) (store.Job, error) {
			var n atomic.Int32
			return func(e *env, id int64) (store.Job, error) {
				if n.Add(1) == 1 {
					// The server moves the lock's end into the past ...
					j, err := e.store.Store.GetJob(context.Background(), id)
					j.LockedUntil = time.Now().Add(-6 * time.Minute)
					return j, err
				}
				// ... and then cannot renew it.
				return store.Job{}, errors.New("disk on fire")
			}
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			job := e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{
				{Script: "trap '' TERM; echo started; sleep 300; echo not-reached"},
				{Script: "echo second-step-ran"},
			}})
			var first atomic.Bool
			e.store.setRenew(func(id int64) (store.Job, error) {
				if first.CompareAndSwap(false, true) {
					return e.store.Store.RenewJob(context.Background(), id, e.files.Settings.AgentID, time.Now().Add(10*time.Minute), time.Now())
				}
				return tt.renew(e, id)
			})
			cfg := e.config(t)
			cfg.RenewInterval = 50 * time.Millisecond
			cfg.CancelGrace = 200 * time.Millisecond
			out, err := runAgent(t, context.Background(), cfg)
			if err != nil || out.Result != pipelines.ResultAbandoned {
				t.Fatalf("Run = %+v, %v; want an abandoned job and no error", out, err)
			}
			if got := e.srv.WaitJob(t, job.ID, testTimeout); got.Result != pipelines.ResultAbandoned {
				t.Errorf("server says the job %s, want abandoned", got.Result)
			}
			wantLog(t, e.jobLog(t, job.ID), []string{"started"}, []string{"not-reached", "second-step-ran"})
		})
	}
}

// proxy serves the real server through wrap on a second address and points
// the agent's files at it (the token endpoint stays where it was).
func (e *env) proxy(t *testing.T, wrap func(next http.Handler) http.Handler) {
	t.Helper()
	p := httptest.NewServer(wrap(e.srv.Server))
	t.Cleanup(p.Close)
	e.files.Settings.ServerURL = p.URL
	if err := pipelines.WriteAgentDir(e.dir, e.files); err != nil {
		t.Fatal(err)
	}
}

func bearer(r *http.Request) string {
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
}

func isListenerCall(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/_apis/distributedtask/pools/")
}

// Once the first listener token has been used for a poll, the proxy rejects
// it as Azure rejects an expired token; the agent must get a new one.
func TestListenerTokenRefreshedOn401(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var tokens []string
	expired := ""
	rejected := 0
	e.proxy(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if isListenerCall(r) {
				mu.Lock()
				tok := bearer(r)
				if !slices.Contains(tokens, tok) {
					tokens = append(tokens, tok)
				}
				if expired == "" && strings.HasSuffix(r.URL.Path, "/messages") {
					expired = tok
				}
				reject := tok == expired
				if reject {
					rejected++
				}
				mu.Unlock()
				if reject {
					w.Header().Set("WWW-Authenticate", "Bearer")
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	})
	job := e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{{Script: "echo refreshed"}}})
	out, err := runAgent(t, context.Background(), e.config(t))
	if err != nil || out.Result != pipelines.ResultSucceeded {
		t.Fatalf("Run = %+v, %v; want the job done", out, err)
	}
	e.srv.WaitJob(t, job.ID, testTimeout)
	mu.Lock()
	defer mu.Unlock()
	if rejected == 0 || len(tokens) < 2 {
		t.Errorf("%d calls rejected, %d listener tokens seen; want the expired token replaced", rejected, len(tokens))
	}
}

// Transient failures (503) of any call are retried with backoff; the job's
// log still arrives whole.
func TestTransientServerErrorsAreRetried(t *testing.T) {
	e := newEnv(t)
	var calls, failed atomic.Int32
	e.proxy(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Every other call fails, the live feed's too.
			if calls.Add(1)%2 == 0 {
				failed.Add(1)
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	job := e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{{Script: "seq 1 2000 | sed 's/^/line-/'"}, {Script: "echo second"}}})
	cfg := e.config(t)
	cfg.Clock = fastClock{scale: 100}
	out, err := runAgent(t, context.Background(), cfg)
	if err != nil || out.Result != pipelines.ResultSucceeded {
		t.Fatalf("Run = %+v, %v; want the job done", out, err)
	}
	if got := e.srv.WaitJob(t, job.ID, testTimeout); got.Result != pipelines.ResultSucceeded {
		t.Errorf("server says the job %s", got.Result)
	}
	log := e.jobLog(t, job.ID)
	wantLog(t, log, []string{"line-1\n", "line-1000\n", "line-2000\n", "second"}, nil)
	if failed.Load() < 5 {
		t.Errorf("only %d calls failed; the test did not exercise retries", failed.Load())
	}
}

func TestSessionConflictGivesUp(t *testing.T) {
	e := newEnv(t)
	// Another process with the same identity holds the session.
	servertest.Connect(t, e.files)
	cfg := e.config(t)
	cfg.RetryTimeout = time.Second
	_, err := runAgent(t, context.Background(), cfg)
	if err == nil || ExitCode(err) != ExitError || !pipelines.IsTypeKey(err, pipelines.TypeKeySessionConflict) ||
		!strings.Contains(err.Error(), "another session of this agent is still open") {
		t.Fatalf("Run error = %v, want a clear session conflict (exit %d)", err, ExitError)
	}
}

// Output that is not UTF-8 is stored with U+FFFD for each invalid run of
// bytes, in the log and in the live feed alike.
func TestOutputThatIsNotUTF8(t *testing.T) {
	e := newEnv(t)
	job := e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{{Script: `printf 'bad-\377\376-end\n'; printf 'cut-\303(\n'; printf 'latin1-caf\351\n'`}}})
	out, err := runAgent(t, context.Background(), e.config(t))
	if err != nil || out.Result != pipelines.ResultSucceeded {
		t.Fatalf("Run = %+v, %v", out, err)
	}
	e.srv.WaitJob(t, job.ID, testTimeout)
	log := e.jobLog(t, job.ID)
	wantLog(t, log, []string{"bad-\uFFFD-end", "cut-\uFFFD(", "latin1-caf\uFFFD\n"}, nil)
	if !utf8.ValidString(log) {
		t.Error("the stored log is not valid UTF-8")
	}
	e.store.mu.Lock()
	defer e.store.mu.Unlock()
	if !slices.Contains(e.store.feed, "bad-\uFFFD-end") {
		t.Errorf("live feed lacks the repaired line: %q", e.store.feed)
	}
}

// A step that prints 100 MB: every line reaches the server's stored log.
func TestHundredMegabytesOfOutput(t *testing.T) {
	const lines, width = 1_000_000, 100 // 100 MB with the newlines
	e := newEnv(t)
	job := e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{{Script: fmt.Sprintf(
		`yes "$(printf '%%0%dd' 7)" | head -n %d; echo big-done`, width-1, lines)}}})
	out, err := runAgent(t, context.Background(), e.config(t))
	if err != nil || out.Result != pipelines.ResultSucceeded {
		t.Fatalf("Run = %+v, %v", out, err)
	}
	e.srv.WaitJob(t, job.ID, testTimeout)
	log, err := e.store.Store.JobLog(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte{'0'}, width-2)
	payload = append(payload, '7', '\n')
	if n := bytes.Count(log, payload); n != lines {
		t.Errorf("stored log has %d of the %d output lines", n, lines)
	}
	if len(log) < lines*width {
		t.Errorf("stored log is %d bytes, want at least %d", len(log), lines*width)
	}
	if !bytes.Contains(log, []byte("big-done\n")) {
		t.Error("stored log lacks the last line")
	}
}

// The agent reads the three files exactly as Microsoft's agent writes them:
// UTF-8 with a BOM, camelCase, indented, with fields agentry does not use.
func TestReadsMicrosoftAgentFiles(t *testing.T) {
	files, err := pipelines.ReadAgentDir("testdata/msagent")
	if err != nil {
		t.Fatalf("reading Microsoft-shaped agent files: %v", err)
	}
	want := pipelines.AgentSettings{AgentID: 17, AgentName: "build-linux-01", PoolID: 9, PoolName: "Default", ServerURL: "https://dev.azure.com/contoso/", WorkFolder: "_work"}
	if files.Settings != want {
		t.Errorf(".agent = %+v, want %+v", files.Settings, want)
	}
	if files.Credentials.Data.ClientID != "0b6a4bde-3c3e-4c3f-9a8e-2f5d6c9e1a47" ||
		files.Credentials.TokenURL() != "https://vssps.dev.azure.com/contoso/_apis/oauth2/token" {
		t.Errorf(".credentials = %+v", files.Credentials)
	}

	// The same files, with the server's values put in their place, run a job.
	e := newEnv(t)
	key, err := files.Key.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := agentcrypto.PublicKeyOf(&key.PublicKey)
	a, err := e.srv.Admin.AddAgent(context.Background(), e.files.Settings.PoolID, pipelines.TaskAgent{
		Name: "build-linux-01", Version: "4.255.0", MaxParallelism: 1, ProvisioningState: "Provisioned",
		Authorization: &pipelines.TaskAgentAuthorization{PublicKey: &pub},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, swaps := range map[string][]string{
		pipelines.AgentFile: {`"agentId": 17,`, `"agentId": ` + strconv.Itoa(a.ID) + `,`, `"poolId": 9,`, `"poolId": ` + strconv.Itoa(e.files.Settings.PoolID) + `,`,
			"https://dev.azure.com/contoso/", e.srv.URL + "/"},
		pipelines.CredentialsFile: {"0b6a4bde-3c3e-4c3f-9a8e-2f5d6c9e1a47", a.Authorization.ClientID,
			"https://vssps.dev.azure.com/contoso/_apis/oauth2/token", a.Authorization.AuthorizationURL},
		pipelines.RSAParamsFile: nil,
	} {
		b, err := os.ReadFile(filepath.Join("testdata/msagent", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\xef\xbb\xbf")) {
			t.Fatalf("fixture %s lost its BOM", name)
		}
		b = []byte(strings.NewReplacer(swaps...).Replace(string(b)))
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	job := e.queue(t, jobapi.JobSpec{Steps: []jobapi.Step{{Script: "echo ms-files-work"}}})
	cfg := e.config(t)
	cfg.Dir = dir
	out, err := runAgent(t, context.Background(), cfg)
	if err != nil || out.Result != pipelines.ResultSucceeded || out.RequestID != job.ID {
		t.Fatalf("Run = %+v, %v", out, err)
	}
	wantLog(t, e.jobLog(t, job.ID), []string{"ms-files-work"}, nil)
}
