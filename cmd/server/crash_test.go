package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

// TestCrashLosesNoAcknowledgedJob runs the real agentry-server binary on a
// data folder, queues a burst of jobs while agents take and finish them,
// SIGKILLs the server in the middle of the burst, starts it again on the
// same folder and lets everything finish. Every job whose queue request was
// answered 201 must still exist and finish; no job may go to two agents or
// finish twice.
func TestCrashLosesNoAcknowledgedJob(t *testing.T) {
	const (
		burst       = 50
		killAfter   = 25 // acknowledged jobs before the kill
		doneBefore  = 3  // jobs finished by agents before the kill
		workers     = 4
		adminSecret = "crash-test-admin"
	)
	bin := buildServer(t)
	data := t.TempDir()
	var log serverLog
	srv := startBinary(t, bin, data, "127.0.0.1:0", adminSecret, &log)
	url := "http://" + srv.addr
	hc := &http.Client{Timeout: 10 * time.Second}
	admin := pipelines.NewClient(url, pipelines.PersonalAccessToken(adminSecret), hc)
	jobs := jobapi.Client{Client: admin}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait() // no agent outlives the test
	}()
	pool, err := admin.AddPool(ctx, "crash")
	if err != nil {
		t.Fatal(err)
	}

	rec := newCrashRecord(doneBefore)
	for w := range workers {
		wg.Go(func() { runCrashWorker(ctx, t, rec, url, admin, pool.ID, w) })
	}

	// The burst: one job after another, each retried until acknowledged.
	// Halfway, once agents are busy, it asks for the kill and carries on,
	// so queue requests are in flight when the server dies.
	var acked []int64
	var failedPosts int
	killNow := make(chan struct{})
	queued := make(chan struct{})
	go func() {
		defer close(queued)
		for i := range burst {
			for {
				j, err := jobs.QueueJob(ctx, jobapi.JobSpec{Pool: "crash", Name: fmt.Sprintf("burst-%d", i), Steps: []jobapi.Step{{Script: "echo " + strconv.Itoa(i)}}})
				if err == nil {
					acked = append(acked, j.ID)
					break
				}
				if !transient(ctx, err) {
					t.Errorf("queueing job %d: %v", i, err)
					return
				}
				failedPosts++
				if !backoff(ctx) {
					return
				}
			}
			if len(acked) == killAfter {
				select {
				case <-rec.enoughDone:
				case <-ctx.Done():
					return
				}
				close(killNow)
			}
		}
	}()

	<-killNow
	srv.kill(t)
	received, finished := rec.counts()
	t.Logf("SIGKILLed the server with %d jobs acknowledged, %d received and %d finished by agents", killAfter, received, finished)
	srv = startBinary(t, bin, data, srv.addr, adminSecret, &log)
	<-queued
	if t.Failed() {
		return
	}

	// Wait until every job the server has is finished.
	deadline := time.Now().Add(2 * time.Minute)
	var all []jobapi.Job
	for {
		all, err = jobs.ListJobs(ctx, "crash", "")
		if err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, j := range all {
			if j.State == jobapi.StateCompleted {
				done++
			}
		}
		if done == len(all) && len(all) >= burst {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 2 minutes %d of %d jobs are completed:\n%s", done, len(all), &log)
		}
		if !backoff(ctx) {
			t.Fatal(ctx.Err())
		}
	}
	cancel()
	wg.Wait()

	byID := map[int64]jobapi.Job{}
	for _, j := range all {
		byID[j.ID] = j
	}
	for _, id := range acked {
		j, ok := byID[id]
		switch {
		case !ok:
			t.Errorf("job %d was acknowledged (201) and is gone after the crash", id)
		case j.Result != pipelines.ResultSucceeded:
			t.Errorf("acknowledged job %d ended %q, want succeeded", id, j.Result)
		}
	}
	// Jobs nobody was told about are the queue requests the kill cut off.
	if extra := len(all) - len(acked); extra < 0 || extra > failedPosts {
		t.Errorf("the server has %d jobs for %d acknowledged and %d failed queue requests", len(all), len(acked), failedPosts)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, j := range all {
		if by := rec.received[j.ID]; len(by) != 1 {
			t.Errorf("job %d was delivered to agents %v, want exactly one", j.ID, by)
		} else if j.AgentID != by[0] {
			t.Errorf("job %d is recorded as agent %d's, agent %d received it", j.ID, j.AgentID, by[0])
		}
		if n := rec.finished[j.ID]; n != 1 {
			t.Errorf("job %d was finished by agents %d times, want once", j.ID, n)
		}
	}
	// The server's own account, across both runs: one "Finished a job" per job at most.
	for id, n := range countFinishedLogs(log.String()) {
		if n > 1 {
			t.Errorf("the server logged finishing job %d %d times", id, n)
		}
	}
}

// crashRecord is what the agents saw.
type crashRecord struct {
	mu         sync.Mutex
	received   map[int64][]int // job → agents that got its job message
	finished   map[int64]int   // job → JobCompleted events that took
	doneWant   int
	enoughDone chan struct{} // closed when doneWant jobs are finished
}

func newCrashRecord(doneWant int) *crashRecord {
	return &crashRecord{received: map[int64][]int{}, finished: map[int64]int{}, doneWant: doneWant, enoughDone: make(chan struct{})}
}

func (r *crashRecord) receive(job int64, agent int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.received[job] = append(r.received[job], agent)
}

func (r *crashRecord) finish(job int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished[job]++
	if len(r.finished) == r.doneWant {
		close(r.enoughDone)
	}
}

func (r *crashRecord) counts() (received, finished int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.received), len(r.finished)
}

// transient reports whether err is the server being away (connection
// refused or cut) rather than an answer from it.
func transient(ctx context.Context, err error) bool {
	var api *pipelines.Error
	return err != nil && !errors.As(err, &api) && ctx.Err() == nil
}

// backoff waits a little before a retry; false when ctx is done.
func backoff(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(20 * time.Millisecond):
		return true
	}
}

// retry calls fn until it does not fail transiently. sawTransient tells
// whether an earlier attempt may have reached the server.
func retry(ctx context.Context, fn func() error) (sawTransient bool, err error) {
	for {
		err = fn()
		if !transient(ctx, err) {
			return sawTransient, err
		}
		sawTransient = true
		if !backoff(ctx) {
			return sawTransient, ctx.Err()
		}
	}
}

// runCrashWorker is a line of ephemeral agents, as the operator runs them:
// each registers, takes one job, runs it and is done; then the next one.
// Every call is retried while the server is down.
func runCrashWorker(ctx context.Context, t *testing.T, rec *crashRecord, url string, admin *pipelines.Client, poolID, worker int) {
	for n := 0; ctx.Err() == nil; n++ {
		a, err := connectCrashAgent(ctx, url, admin, poolID, fmt.Sprintf("w%d-%d", worker, n))
		if err != nil {
			// Registration or session answers lost in the crash: this
			// agent never polled, so it holds no job. Start a new one.
			continue
		}
		job, err := a.nextJob(ctx)
		if err != nil {
			if ctx.Err() == nil {
				t.Errorf("agent %d polling: %v", a.agentID, err)
			}
			return
		}
		rec.receive(job.RequestID, a.agentID)
		if err := a.complete(ctx, job); err != nil {
			if ctx.Err() == nil {
				t.Errorf("agent %d running job %d: %v", a.agentID, job.RequestID, err)
			}
			return
		}
		rec.finish(job.RequestID)
	}
}

type crashAgent struct {
	listener   *pipelines.Client
	poolID     int
	agentID    int
	sessionID  string
	sessionKey []byte
}

func connectCrashAgent(ctx context.Context, url string, admin *pipelines.Client, poolID int, name string) (*crashAgent, error) {
	key, err := agentcrypto.GenerateKey()
	if err != nil {
		return nil, err
	}
	pub := agentcrypto.PublicKeyOf(&key.PublicKey)
	var ag *pipelines.TaskAgent
	if _, err := retry(ctx, func() (err error) {
		ag, err = admin.AddAgent(ctx, poolID, pipelines.TaskAgent{
			Name: name, Version: "4.255.0", MaxParallelism: 1, ProvisioningState: "Provisioned",
			Authorization:      &pipelines.TaskAgentAuthorization{PublicKey: &pub},
			SystemCapabilities: map[string]string{"Agent.OS": "Linux"},
		})
		return err
	}); err != nil {
		return nil, err
	}
	tokenURL := ag.Authorization.AuthorizationURL
	c := pipelines.NewClient(url, nil, &http.Client{Timeout: 10 * time.Second})
	var tok *pipelines.AccessToken
	if _, err := retry(ctx, func() error {
		assertion, err := agentcrypto.NewClientAssertion(key, ag.Authorization.ClientID, tokenURL, time.Now())
		if err != nil {
			return err
		}
		tok, err = c.GetListenerToken(ctx, tokenURL, assertion)
		return err
	}); err != nil {
		return nil, err
	}
	c = c.WithAuth(pipelines.BearerToken(tok.AccessToken))
	var s *pipelines.TaskAgentSession
	if _, err := retry(ctx, func() (err error) {
		s, err = c.CreateSession(ctx, poolID, pipelines.TaskAgentSession{
			OwnerName: "crash-test", Agent: pipelines.TaskAgentReference{ID: ag.ID, Name: name},
		})
		return err
	}); err != nil {
		return nil, err
	}
	sk, err := agentcrypto.UnwrapKey(key, s.EncryptionKey.Value, false)
	if err != nil {
		return nil, err
	}
	return &crashAgent{listener: c, poolID: poolID, agentID: ag.ID, sessionID: s.SessionID, sessionKey: sk}, nil
}

// nextJob long-polls until a job message arrives, acknowledges it and
// returns the job.
func (a *crashAgent) nextJob(ctx context.Context) (*pipelines.AgentJobRequestMessage, error) {
	for {
		var m *pipelines.TaskAgentMessage
		if _, err := retry(ctx, func() (err error) {
			m, err = a.listener.GetMessage(ctx, a.poolID, a.sessionID, 0)
			return err
		}); err != nil {
			return nil, err
		}
		if m == nil {
			continue
		}
		if _, err := retry(ctx, func() error { return a.listener.DeleteMessage(ctx, a.poolID, a.sessionID, m.MessageID) }); err != nil {
			return nil, err
		}
		if m.MessageType != pipelines.MessageTypeJobRequest {
			continue
		}
		ct, err := base64.StdEncoding.DecodeString(m.Body)
		if err != nil {
			return nil, err
		}
		body, err := agentcrypto.Decrypt(a.sessionKey, m.IV, ct)
		if err != nil {
			return nil, err
		}
		var job pipelines.AgentJobRequestMessage
		return &job, json.Unmarshal(body, &job)
	}
}

// complete reports the job as run and succeeded, as an agent does.
func (a *crashAgent) complete(ctx context.Context, job *pipelines.AgentJobRequestMessage) error {
	if _, err := retry(ctx, func() error {
		_, err := a.listener.RenewJobRequest(ctx, a.poolID, job.RequestID)
		return err
	}); err != nil {
		return fmt.Errorf("renewing: %w", err)
	}
	u, tok, ok := job.JobToken()
	if !ok {
		return errors.New("the job message has no job token")
	}
	jc := pipelines.NewClient(u, pipelines.BearerToken(tok), &http.Client{Timeout: 10 * time.Second})
	now := time.Now().UTC()
	inProgress, completed, result := pipelines.StateInProgress, pipelines.StateCompleted, pipelines.ResultSucceeded
	rec := pipelines.TimelineRecord{ID: job.JobID, Type: "Job", Name: job.JobDisplayName, StartTime: &now, State: &inProgress}
	if _, err := retry(ctx, func() error {
		return jc.UpdateTimelineRecords(ctx, job.Plan, job.Timeline.ID, []pipelines.TimelineRecord{rec})
	}); err != nil {
		return fmt.Errorf("timeline: %w", err)
	}
	var l *pipelines.TaskLog
	if _, err := retry(ctx, func() (err error) { l, err = jc.CreateLog(ctx, job.Plan, "logs/job.log"); return err }); err != nil {
		return fmt.Errorf("creating the log: %w", err)
	}
	if _, err := retry(ctx, func() error {
		return jc.UploadLog(ctx, job.Plan, l.ID, strings.NewReader(fmt.Sprintf("job %d\n", job.RequestID)))
	}); err != nil {
		return fmt.Errorf("uploading the log: %w", err)
	}
	rec.State, rec.Result = &completed, &result
	if _, err := retry(ctx, func() error {
		return jc.UpdateTimelineRecords(ctx, job.Plan, job.Timeline.ID, []pipelines.TimelineRecord{rec})
	}); err != nil {
		return fmt.Errorf("timeline: %w", err)
	}
	lost, err := retry(ctx, func() error {
		return jc.RaisePlanEvent(ctx, job.Plan, pipelines.JobEvent{
			Name: pipelines.JobCompletedEvent, JobID: job.JobID, RequestID: job.RequestID, Result: result,
		})
	})
	if lost && pipelines.IsTypeKey(err, pipelines.TypeKeyJobTokenExpired) {
		// The first JobCompleted took, its answer was lost in the crash.
		return nil
	}
	return err
}

// ---- the server process ----

// buildServer builds agentry-server into a temporary folder.
func buildServer(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("this test builds agentry-server and needs the go command: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "agentry-server")
	out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type serverProcess struct {
	cmd    *exec.Cmd
	addr   string
	log    *serverLog
	exited chan struct{}
}

var servingAddr = regexp.MustCompile(`"msg"="Serving agentry-server".*"address"="([^"]+)"`)

// startBinary starts the server on listen and waits until it listens. Its
// log is kept (see log) and it is killed when the test ends.
func startBinary(t *testing.T, bin, data, listen, adminToken string, log *serverLog) *serverProcess {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--data", data, "--listen", listen, "--long-poll", "200ms")
	cmd.Env = append(os.Environ(), envAdminToken+"="+adminToken)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{cmd: cmd, log: log, exited: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		defer close(p.exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			log.add(line)
			if m := servingAddr.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	select {
	case p.addr = <-addr:
	case <-p.exited:
		t.Fatalf("agentry-server exited before listening:\n%s", log)
	case <-time.After(time.Minute):
		t.Fatalf("agentry-server did not listen within a minute:\n%s", log)
	}
	return p
}

// serverLog collects a server's log across its restarts.
type serverLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *serverLog) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(line + "\n")
}

func (l *serverLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// kill SIGKILLs the server and waits until it is gone.
func (p *serverProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
}

var finishedLog = regexp.MustCompile(`"msg"="Finished a job".*"requestId"=(\d+)`)

func countFinishedLogs(log string) map[int64]int {
	n := map[int64]int{}
	for _, m := range finishedLog.FindAllStringSubmatch(log, -1) {
		id, _ := strconv.ParseInt(m[1], 10, 64)
		n[id]++
	}
	return n
}
