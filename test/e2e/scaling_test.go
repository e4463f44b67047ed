package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/controllers"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/poll"
	"github.com/agentry-dev/agentry/test/stack"
)

// census follows the pool's Agents and agent pods through watches, so a
// moment with too many of them cannot slip between two polls.
type census struct {
	mu                   sync.Mutex
	agents, pods         map[string]bool // live now
	maxAgents, maxPods   int
	agentsSeen, podsSeen map[string]bool // ever
	stopAgents, stopPods func()
}

func watchCensus(ctx context.Context, t *testing.T, s *stack.Stack) *census {
	t.Helper()
	scheme, err := controllers.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.NewWithWatch(s.Cluster.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	aw, err := c.Watch(ctx, &agentryv1.AgentList{}, client.InNamespace(stack.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	pw, err := s.Kube.CoreV1().Pods(stack.Namespace).Watch(ctx, metav1.ListOptions{LabelSelector: agentryv1.AgentLabel})
	if err != nil {
		t.Fatal(err)
	}
	cs := &census{agents: map[string]bool{}, pods: map[string]bool{}, agentsSeen: map[string]bool{}, podsSeen: map[string]bool{},
		stopAgents: aw.Stop, stopPods: pw.Stop}
	var wg sync.WaitGroup
	follow := func(w watch.Interface, live, seen map[string]bool, peak *int) {
		defer wg.Done()
		for ev := range w.ResultChan() {
			obj, ok := ev.Object.(metav1.Object)
			if !ok {
				continue
			}
			cs.mu.Lock()
			switch ev.Type {
			case watch.Added, watch.Modified:
				live[obj.GetName()], seen[obj.GetName()] = true, true
			case watch.Deleted:
				delete(live, obj.GetName())
			}
			*peak = max(*peak, len(live))
			cs.mu.Unlock()
		}
	}
	wg.Add(2)
	go follow(aw, cs.agents, cs.agentsSeen, &cs.maxAgents)
	go follow(pw, cs.pods, cs.podsSeen, &cs.maxPods)
	t.Cleanup(func() { cs.stop(); wg.Wait() })
	return cs
}

func (c *census) stop() { c.stopAgents(); c.stopPods() }

func (c *census) snapshot() (maxAgents, maxPods, agentsSeen, podsSeen int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxAgents, c.maxPods, len(c.agentsSeen), len(c.podsSeen)
}

func queue(ctx context.Context, t *testing.T, s *stack.Stack, n int, script string) []int64 {
	t.Helper()
	ids := make([]int64, n)
	for i := range n {
		j, err := s.Jobs.QueueJob(ctx, jobapi.JobSpec{Pool: "default", Name: fmt.Sprintf("job-%d", i), Steps: []jobapi.Step{{Script: script}}})
		if err != nil {
			t.Fatalf("queueing job %d: %v", i, err)
		}
		ids[i] = j.ID
	}
	return ids
}

func kubectlPatchPool(t *testing.T, s *stack.Stack, patch string) {
	t.Helper()
	if out, err := s.Cluster.Kubectl("patch", "agentpools.agentry.dev", "linux", "-n", stack.Namespace, "--type=merge", "-p", patch); err != nil {
		t.Fatalf("kubectl patch %s: %v: %s", patch, err, out)
	}
}

func poolStatus(ctx context.Context, t *testing.T, s *stack.Stack) agentryv1.AgentPoolStatus {
	t.Helper()
	scheme, _ := controllers.NewScheme()
	c, err := client.New(s.Cluster.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	var p agentryv1.AgentPool
	if err := c.Get(ctx, client.ObjectKey{Namespace: stack.Namespace, Name: "linux"}, &p); err != nil {
		t.Fatal(err)
	}
	return p.Status
}

// A burst of 30 jobs on the sample pool (maxAgents 10) starts exactly 30
// agents, one per job, never more than 10 at once, and every job finishes.
func burstNeverExceedsMaxAgents(ctx context.Context, t *testing.T, e *env) {
	const jobs, maxAgents = 30, 10
	start := time.Now()
	cs := watchCensus(ctx, t, e.s)
	ids := queue(ctx, t, e.s, jobs, "echo burst")
	for _, id := range ids {
		j, err := waitJob(ctx, e.s, id, 3*time.Minute)
		if err != nil {
			t.Fatalf("job %d: %v", id, err)
		}
		if j.Result != pipelines.ResultSucceeded {
			t.Errorf("job %d: result %q, want succeeded", id, j.Result)
		}
	}
	if err := e.nothingLeft(ctx, time.Minute); err != nil {
		t.Fatalf("after the burst: %v", err)
	}
	cs.stop()
	peakAgents, peakPods, agents, pods := cs.snapshot()
	if peakAgents > maxAgents || peakPods > maxAgents {
		t.Errorf("at most %d Agents and %d pods existed at once, want at most %d", peakAgents, peakPods, maxAgents)
	}
	if agents != jobs || pods != jobs {
		t.Errorf("%d Agents and %d pods were started for %d jobs, want exactly %d", agents, pods, jobs, jobs)
	}
	fmt.Printf("e2e: burst of %d jobs: %d agents started, peak %d Agents / %d pods (maxAgents %d), all finished in %.1fs\n",
		jobs, agents, peakAgents, peakPods, maxAgents, time.Since(start).Seconds())
}

// minIdle 2 keeps two idle agents running, past the scale-down delay; set
// back to 0, they are deregistered and removed once the delay passed.
func minIdleHoldsWarmAgents(ctx context.Context, t *testing.T, e *env) {
	kubectlPatchPool(t, e.s, `{"spec":{"minIdle":2,"scaleDownDelay":"2s"}}`)
	idleTwo := func() (bool, string) {
		st := poolStatus(ctx, t, e.s)
		pods, err := e.s.Kube.CoreV1().Pods(stack.Namespace).List(ctx, metav1.ListOptions{LabelSelector: agentryv1.AgentLabel})
		if err != nil {
			return false, err.Error()
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return st.Agents.Idle == 2 && st.Agents.Total == 2 && running == 2 && len(pods.Items) == 2,
			fmt.Sprintf("agents %+v, %d pods (%d running)", st.Agents, len(pods.Items), running)
	}
	if err := waitUntil(ctx, time.Minute, idleTwo); err != nil {
		t.Fatalf("two warm agents: %v", err)
	}
	// Well past the 2s scale-down delay, the warm agents are still there.
	if err := poll.Holds(ctx, 4*time.Second, 200*time.Millisecond, condError(idleTwo)); err != nil {
		t.Fatalf("the warm pool did not hold: %v", err)
	}
	kubectlPatchPool(t, e.s, `{"spec":{"minIdle":0}}`)
	if err := e.nothingLeft(ctx, time.Minute); err != nil {
		t.Fatalf("after minIdle 0: %v", err)
	}
}

// A pod deleted with no grace while its agent runs a job: the operator
// notices, deregisters the agent, the server ends the job, and nothing of
// the agent is left.
func podKilledMidJob(ctx context.Context, t *testing.T, e *env) {
	id := queue(ctx, t, e.s, 1, "echo started; sleep 120")[0]
	var job *jobapi.Job
	err := waitUntil(ctx, time.Minute, func() (bool, string) {
		var err error
		if job, err = e.s.Jobs.GetJob(ctx, id); err != nil {
			return false, err.Error()
		}
		return job.State == jobapi.StateRunning && job.AgentName != "", "state " + job.State
	})
	if err != nil {
		t.Fatalf("job %d never ran: %v", id, err)
	}
	dead := job.AgentName
	killedAt := time.Now()
	zero := int64(0)
	if err := e.s.Kube.CoreV1().Pods(stack.Namespace).Delete(ctx, job.AgentName, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatalf("deleting pod %s: %v", job.AgentName, err)
	}
	err = waitUntil(ctx, time.Minute, func() (bool, string) {
		j, err := e.s.Jobs.GetJob(ctx, id)
		if err != nil {
			return false, err.Error()
		}
		job = j
		// Ended (abandoned), or back in the queue for another agent.
		return j.State == jobapi.StateCompleted || j.AgentName != dead || j.State == jobapi.StateQueued,
			fmt.Sprintf("state %s on %s", j.State, j.AgentName)
	})
	if err != nil {
		t.Fatalf("the job stayed on its dead agent: %v", err)
	}
	// Abandoned when the operator's deregistration came first; canceled when
	// the agent, stopped with its pod's grace period by the node, reported
	// its job canceled before that. Either way the job ended at once.
	switch job.Result {
	case pipelines.ResultAbandoned, pipelines.ResultCanceled, pipelines.ResultFailed:
	default:
		if job.State == jobapi.StateCompleted {
			t.Errorf("job result %q, want abandoned or canceled", job.Result)
		}
	}
	ended := time.Since(killedAt)
	if job.State != jobapi.StateCompleted {
		// The job had started, so the server should abandon it rather than
		// run its steps a second time.
		t.Errorf("job %d was re-queued (%s on %q), want it abandoned", id, job.State, job.AgentName)
	}
	if err := e.nothingLeft(ctx, time.Minute); err != nil {
		t.Fatalf("after the killed pod: %v", err)
	}
	fmt.Printf("e2e: pod killed mid-job: job %d %s (%s) %.1fs after the kill; no Agent, pod, Secret or registration left\n",
		id, job.State, job.Result, ended.Seconds())
}

// An invalid pool is refused by kubectl apply with the CEL rules' messages.
func invalidPoolRejected(ctx context.Context, t *testing.T, e *env) {
	path := filepath.Join(t.TempDir(), "invalid.yaml")
	if err := os.WriteFile(path, []byte(`apiVersion: agentry.dev/v1alpha1
kind: AgentPool
metadata:
  name: invalid
  namespace: `+stack.Namespace+`
spec:
  server:
    url: ftp://dev.azure.com/org
    poolName: default
    credentialsSecretRef: {name: `+stack.AdminSecret+`}
  minIdle: 5
  maxAgents: 2
  template:
    spec:
      containers:
      - name: runner
        image: example/runner
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// Cluster.Kubectl puts kubectl's stderr, where the API server's refusal
	// is printed, into the error.
	out, err := e.s.Cluster.Kubectl("apply", "-f", path)
	if err == nil {
		t.Fatalf("kubectl apply accepted an invalid pool: %s", out)
	}
	for _, want := range []string{
		"minIdle must not be greater than maxAgents",
		"url must be an http:// or https:// URL with a host",
		"template must have a container named agent",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("kubectl apply's error lacks %q:\n%v", want, err)
		}
	}
}

// The operator is killed (SIGKILL) in the middle of a burst, while agents
// are being registered, and a new one takes over: every job runs, exactly
// one agent per job is started, and no registration, Agent, Secret or pod
// is left behind.
func operatorKilledMidBurst(ctx context.Context, t *testing.T, e *env) {
	const jobs = 20
	cs := watchCensus(ctx, t, e.s)
	ids := queue(ctx, t, e.s, jobs, "echo restart")
	err := waitUntil(ctx, time.Minute, func() (bool, string) {
		_, _, agents, _ := cs.snapshot()
		return agents >= 3, fmt.Sprintf("%d agents", agents)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.RestartManager(ctx); err != nil {
		t.Fatalf("restarting agentry-manager: %v", err)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		j, err := waitJob(ctx, e.s, id, 2*time.Minute)
		if err != nil {
			t.Fatalf("job %d: %v", id, err)
		}
		if j.Result != pipelines.ResultSucceeded {
			t.Errorf("job %d: result %q, want succeeded", id, j.Result)
		}
		if seen[j.AgentName] {
			t.Errorf("agent %s ran two jobs", j.AgentName)
		}
		seen[j.AgentName] = true
	}
	if err := e.nothingLeft(ctx, time.Minute); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	cs.stop()
	if _, _, agents, _ := cs.snapshot(); agents != jobs {
		t.Errorf("%d Agents were started for %d jobs across the restart, want exactly %d", agents, jobs, jobs)
	}
}
