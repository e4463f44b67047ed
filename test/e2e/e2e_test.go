// Package e2e runs agentry end to end on a small real cluster: the real
// kube-apiserver, etcd, kube-scheduler and kube-controller-manager, the
// process-backed node, the real agentry-server, agentry-manager and
// agentry-agent binaries, and the real kubectl.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/poll"
	"github.com/agentry-dev/agentry/test/stack"
)

const samplePool = "agentry_v1alpha1_agentpool.yaml"

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// recorder keeps every version of every pod and Secret seen in the agents'
// namespace, so the test can prove the admin token was in none of them even
// though they are all deleted by the end.
type recorder struct {
	mu      sync.Mutex
	pods    map[string][]byte
	secrets map[string][]byte
	names   map[string]bool // agent pod names
}

func (r *recorder) watch(ctx context.Context, t *testing.T, s *stack.Stack) {
	r.pods, r.secrets, r.names = map[string][]byte{}, map[string][]byte{}, map[string]bool{}
	pw, err := s.Kube.CoreV1().Pods(stack.Namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sw, err := s.Kube.CoreV1().Secrets(stack.Namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go r.drain(pw, func(obj any) {
		p := obj.(*corev1.Pod)
		b, _ := json.Marshal(p)
		r.mu.Lock()
		r.pods[p.Name+"@"+p.ResourceVersion] = b
		r.names[p.Name] = true
		r.mu.Unlock()
	})
	go r.drain(sw, func(obj any) {
		sec := obj.(*corev1.Secret)
		b, _ := json.Marshal(sec)
		r.mu.Lock()
		r.secrets[sec.Name+"@"+sec.ResourceVersion] = b
		r.mu.Unlock()
	})
}

func (r *recorder) drain(w watch.Interface, f func(any)) {
	for ev := range w.ResultChan() {
		if ev.Type == watch.Added || ev.Type == watch.Modified || ev.Type == watch.Deleted {
			f(ev.Object)
		}
	}
}

func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	s, err := stack.Start(ctx, stack.Options{RepoRoot: repoRoot(t), WorkDir: t.TempDir(), Progress: os.Stdout,
		ManagerArgs: []string{"--idle-eviction-protection=" + idleEvictionProtection}})
	t.Cleanup(s.Stop)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{s: s}
	e.rec.watch(ctx, t, s)

	// The sample pool, as a user applies it.
	if err := s.ApplySample(ctx, samplePool); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		run  func(context.Context, *testing.T, *env)
	}{
		{"jobs run and leave nothing behind", threeJobsRunAndLeaveNothingBehind},
		{"a burst of 30 jobs never exceeds maxAgents", burstNeverExceedsMaxAgents},
		{"minIdle holds warm agents", minIdleHoldsWarmAgents},
		{"a pod killed mid-job ends its job and leaves no orphan", podKilledMidJob},
		{"kubectl drain evicts the idle agent and waits for the busy one", drainSparesTheBusyAgent},
		{"the operator killed mid-burst leaves no duplicate and no orphan", operatorKilledMidBurst},
		{"an invalid pool is rejected with a readable message", invalidPoolRejected},
	}
	start := time.Now()
	passed := 0
	for _, step := range steps {
		if !t.Run(step.name, func(t *testing.T) { step.run(ctx, t, e) }) {
			e.dump(t)
			break
		}
		passed++
	}
	cancel()
	e.checkAdminTokenNowhere(t)
	checkLogTimes(t, s)
	fmt.Printf("e2e summary: %d/%d scenarios passed on the real cluster in %.1fs\n", passed, len(steps), time.Since(start).Seconds())
}

// env is the running stack and what the suite recorded of it.
type env struct {
	s   *stack.Stack
	rec recorder
}

func (e *env) dump(t *testing.T) {
	for _, c := range []string{"agentry-server", "agentry-manager"} {
		t.Logf("---- %s log (tail) ----\n%s", c, e.s.Logs(c, 80))
	}
}

func threeJobsRunAndLeaveNothingBehind(ctx context.Context, t *testing.T, e *env) {
	start := time.Now()
	s := e.s
	progress := os.Stdout
	dump := func() { e.dump(t) }

	// Three jobs: two print a marker, one fails.
	marker := "agentry-e2e-marker-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	scripts := []string{"echo " + marker + "-1", "echo starting; echo " + marker + "-2", "echo about to fail; exit 1"}
	want := []pipelines.TaskResult{pipelines.ResultSucceeded, pipelines.ResultSucceeded, pipelines.ResultFailed}
	ids := make([]int64, len(scripts))
	for i, script := range scripts {
		out, err := s.ServerCLI(ctx, "job", "queue", "--pool", "default", "--script", script)
		if err != nil {
			t.Fatalf("agentry-server job queue: %v", err)
		}
		if ids[i], err = strconv.ParseInt(strings.TrimSpace(out), 10, 64); err != nil {
			t.Fatalf("job queue printed %q, want a job id", out)
		}
	}
	fmt.Fprintf(progress, "queued jobs %v\n", ids)

	jobs := make([]*jobapi.Job, len(ids))
	for i, id := range ids {
		j, err := waitJob(ctx, s, id, 4*time.Minute)
		if err != nil {
			dump()
			t.Fatalf("job %d: %v", id, err)
		}
		jobs[i] = j
		fmt.Fprintf(progress, "job %d: %s on agent %q\n", id, j.Result, j.AgentName)
	}
	for i, j := range jobs {
		if j.Result != want[i] {
			t.Errorf("job %d (%q) result = %q, want %q", j.ID, scripts[i], j.Result, want[i])
		}
		if want[i] == pipelines.ResultSucceeded {
			log, err := s.Jobs.JobLog(ctx, j.ID)
			if err != nil {
				t.Errorf("job %d log: %v", j.ID, err)
			} else if wantLine := fmt.Sprintf("%s-%d", marker, i+1); !strings.Contains(log, wantLine) {
				t.Errorf("job %d stored log lacks %q:\n%s", j.ID, wantLine, log)
			}
		}
		// The CLI tells the same story.
		if out, err := s.ServerCLI(ctx, "job", "get", strconv.FormatInt(j.ID, 10)); err != nil || !strings.Contains(out, string(want[i])) {
			t.Errorf("agentry-server job get %d = %q, %v; want it to say %q", j.ID, out, err, want[i])
		}
	}

	// Everything the operator made is cleaned up: no Agent, Secret or pod,
	// and no registration on the server.
	pool, err := s.Admin.GetPoolByName(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	err = e.nothingLeft(ctx, 2*time.Minute)
	if err != nil {
		dump()
		t.Fatalf("cleanup: %v", err)
	}
	for _, j := range jobs {
		if j.AgentID == 0 {
			t.Errorf("job %d has no agent id", j.ID)
			continue
		}
		if _, err := s.Admin.GetAgent(ctx, pool.ID, j.AgentID); pipelines.StatusCode(err) != 404 {
			t.Errorf("agent %d that ran job %d: GetAgent err = %v, want 404", j.AgentID, j.ID, err)
		}
	}

	ok := 0
	for i, j := range jobs {
		if j.Result == want[i] {
			ok++
		}
	}
	fmt.Printf("e2e: %d/%d jobs as expected (2 succeeded with marker, 1 failed), 0 Agents/pods/Secrets/registrations left, in %.1fs\n",
		ok, len(jobs), time.Since(start).Seconds())
}

// nothingLeft waits until the operator left nothing behind: no Agent, pod
// or agent Secret in the namespace and no registration on the server.
func (e *env) nothingLeft(ctx context.Context, timeout time.Duration) error {
	s := e.s
	pool, err := s.Admin.GetPoolByName(ctx, "default")
	if err != nil {
		return err
	}
	return waitUntil(ctx, timeout, func() (bool, string) {
		agents, err := s.Cluster.Kubectl("get", "agents.agentry.dev", "-n", stack.Namespace, "-o", "name")
		if err != nil {
			return false, fmt.Sprintf("kubectl get agents: %v: %s", err, agents)
		}
		pods, err := s.Kube.CoreV1().Pods(stack.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		secrets, err := s.Kube.CoreV1().Secrets(stack.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var leftSecrets []string
		for _, sec := range secrets.Items {
			if sec.Name != stack.AdminSecret {
				leftSecrets = append(leftSecrets, sec.Name)
			}
		}
		registered, err := s.Admin.ListAgents(ctx, pool.ID, "")
		if err != nil {
			return false, err.Error()
		}
		left := fmt.Sprintf("agents %q, pods %d, secrets %q, server registrations %d",
			strings.Fields(string(agents)), len(pods.Items), leftSecrets, len(registered))
		return len(strings.TrimSpace(string(agents))) == 0 && len(pods.Items) == 0 && len(leftSecrets) == 0 && len(registered) == 0, left
	})
}

// checkLogTimes checks the manager's log lines carry times to less than a
// second (controller-runtime's default is whole seconds): on-call matches
// them against events milliseconds apart.
func checkLogTimes(t *testing.T, s *stack.Stack) {
	lines := strings.Split(s.Logs("agentry-manager", 50), "\n")
	fine := 0
	for _, line := range lines {
		var entry struct {
			TS string `json:"ts"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil {
			continue
		}
		if _, err := time.Parse(time.RFC3339Nano, entry.TS); err != nil {
			t.Errorf("manager log time %q is not RFC 3339: %v", entry.TS, err)
			return
		}
		if strings.Contains(entry.TS, ".") {
			fine++
		}
	}
	// A time whose fraction is exactly zero prints without one: most
	// lines, not all, must show it.
	if fine < len(lines)/2 {
		t.Errorf("%d of the manager's last %d log lines show a time finer than a second, e.g. %q", fine, len(lines), lines[0])
	}
}

// checkAdminTokenNowhere checks the admin token was in no pod spec or env,
// and in no Secret a pod mounted, over the whole run.
func (e *env) checkAdminTokenNowhere(t *testing.T) {
	s, rec := e.s, &e.rec
	// The admin token was in no pod spec or env, and in no Secret a pod mounted.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.names) < 3 {
		t.Errorf("saw %d agent pods, want at least 3", len(rec.names))
	}
	for key, b := range rec.pods {
		if strings.Contains(string(b), s.AdminToken) {
			t.Errorf("pod %s contains the admin token", key)
		}
		if strings.Contains(string(b), stack.AdminSecret) {
			t.Errorf("pod %s refers to the admin token Secret %q", key, stack.AdminSecret)
		}
	}
	mounted := 0
	for key, b := range rec.secrets {
		if strings.HasPrefix(key, stack.AdminSecret+"@") {
			continue
		}
		mounted++
		var sec corev1.Secret
		_ = json.Unmarshal(b, &sec)
		for k, v := range sec.Data {
			if strings.Contains(string(v), s.AdminToken) {
				t.Errorf("agent Secret %s key %s contains the admin token", key, k)
			}
		}
	}
	if mounted == 0 {
		t.Error("saw no agent Secret; the token check would be vacuous")
	}
	if !t.Failed() {
		fmt.Printf("e2e: admin token found in none of %d pod versions (%d agent pods) and %d agent Secret versions\n",
			len(rec.pods), len(rec.names), mounted)
	}
}

func waitJob(ctx context.Context, s *stack.Stack, id int64, timeout time.Duration) (*jobapi.Job, error) {
	var j *jobapi.Job
	err := waitUntil(ctx, timeout, func() (bool, string) {
		var err error
		if j, err = s.Jobs.GetJob(ctx, id); err != nil {
			return false, err.Error()
		}
		return j.State == jobapi.StateCompleted, "state " + j.State
	})
	return j, err
}

// waitUntil polls cond every 200 ms until it holds or the timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() (bool, string)) error {
	return poll.Until(ctx, timeout, 200*time.Millisecond, condError(cond))
}

// condError turns a condition that describes its state into a check.
func condError(cond func() (bool, string)) func() error {
	return func() error {
		if ok, state := cond(); !ok {
			return errors.New(state)
		}
		return nil
	}
}
