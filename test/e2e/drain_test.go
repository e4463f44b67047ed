package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/test/stack"
)

// idleEvictionProtection is the suite's --idle-eviction-protection; the
// sample pool's pollInterval (2s) makes the manager use 4s.
const idleEvictionProtection = "1s"

// kubectl drain of the node, with kube-controller-manager's disruption
// controller keeping the pool's PodDisruptionBudget: the busy agent's pod
// is refused and keeps running its job; the idle agent's pod, unprotected
// once idle past the idle eviction protection, is evicted, and its agent
// deregistered. Once the node is uncordoned and the job ends, nothing is
// left.
func drainSparesTheBusyAgent(ctx context.Context, t *testing.T, e *env) {
	s := e.s
	pods := s.Kube.CoreV1().Pods(stack.Namespace)
	kubectlPatchPool(t, s, `{"spec":{"minIdle":1,"scaleDownDelay":"2s"}}`)
	id := queue(ctx, t, s, 1, "echo started; sleep 300")[0]
	var job *jobapi.Job
	if err := waitUntil(ctx, time.Minute, func() (bool, string) {
		var err error
		if job, err = s.Jobs.GetJob(ctx, id); err != nil {
			return false, err.Error()
		}
		return job.State == jobapi.StateRunning && job.AgentName != "", "state " + job.State
	}); err != nil {
		t.Fatalf("job %d never ran: %v", id, err)
	}
	busy := job.AgentName

	// The pool keeps one idle agent besides the busy one; once that one has
	// run idle past the protection period its pod leaves the budget.
	var idle string
	if err := waitUntil(ctx, time.Minute, func() (bool, string) {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: agentryv1.AgentLabel})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		idle = ""
		busyProtected := false
		for _, p := range list.Items {
			protected := p.Labels[agentryv1.ProtectedLabel] == "true"
			seen = append(seen, fmt.Sprintf("%s %s protected=%v", p.Name, p.Status.Phase, protected))
			switch {
			case p.Name == busy:
				busyProtected = protected
			case p.Status.Phase == corev1.PodRunning && !protected:
				idle = p.Name
			}
		}
		return busyProtected && idle != "" && len(list.Items) == 2, strings.Join(seen, ", ")
	}); err != nil {
		t.Fatalf("one busy protected agent pod and one idle unprotected one: %v", err)
	}
	// kube-controller-manager's disruption controller has counted the busy
	// pod, and not failed on the Agent that controls it.
	if err := waitUntil(ctx, 30*time.Second, func() (bool, string) {
		pdb, err := s.Kube.PolicyV1().PodDisruptionBudgets(stack.Namespace).Get(ctx, "linux", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		st := pdb.Status
		synced := true
		for _, c := range st.Conditions {
			synced = synced && c.Reason != policyv1.SyncFailedReason
		}
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: agentryv1.AgentLabel})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, p := range list.Items {
			seen = append(seen, fmt.Sprintf("%s %s %v", p.Name, p.Status.Phase, p.Labels))
		}
		// Its counts may still include the idle pod: a pod that leaves a
		// budget's selector does not bring the budget a recount.
		return synced && st.ObservedGeneration == pdb.Generation && st.ExpectedPods >= 1 && st.CurrentHealthy >= 1 &&
			st.DisruptionsAllowed == 0, fmt.Sprintf("budget status %+v; pods %s", st, strings.Join(seen, ", "))
	}); err != nil {
		t.Fatalf("the pool's PodDisruptionBudget: %v", err)
	}

	node := s.Cluster.Node.Name()
	start := time.Now()
	out, err := s.Cluster.Kubectl("drain", node, "--pod-selector="+agentryv1.PoolLabel+"=linux",
		"--delete-emptydir-data", "--ignore-daemonsets", "--timeout=12s")
	drained := time.Since(start)
	if uout, uerr := s.Cluster.Kubectl("uncordon", node); uerr != nil {
		t.Fatalf("kubectl uncordon: %v: %s", uerr, uout)
	}
	if err == nil {
		t.Fatalf("kubectl drain succeeded, want it to time out on the busy agent's pod:\n%s", out)
	}
	if msg := err.Error(); !strings.Contains(msg, busy) || !strings.Contains(msg, "disruption budget") {
		t.Errorf("kubectl drain: %v\nwant it refused on %s by the disruption budget", err, busy)
	}
	if !strings.Contains(string(out), idle) || !strings.Contains(string(out), "evicted") {
		t.Errorf("kubectl drain printed:\n%s\nwant %s evicted", out, idle)
	}
	if p, err := pods.Get(ctx, busy, metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		t.Errorf("the busy agent's pod after the drain: %v, %+v; want it running", err, p)
	}
	if j, err := s.Jobs.GetJob(ctx, id); err != nil || j.State != jobapi.StateRunning || j.AgentName != busy {
		t.Errorf("the job after the drain: %+v, %v; want it still running on %s", j, err, busy)
	}
	if err := waitUntil(ctx, 30*time.Second, func() (bool, string) {
		_, err := pods.Get(ctx, idle, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprintf("pod %s: %v", idle, err)
	}); err != nil {
		t.Errorf("the evicted idle pod: %v", err)
	}

	if _, err := s.Jobs.CancelJob(ctx, id); err != nil {
		t.Fatalf("canceling job %d: %v", id, err)
	}
	kubectlPatchPool(t, s, `{"spec":{"minIdle":0}}`)
	if err := e.nothingLeft(ctx, time.Minute); err != nil {
		t.Fatalf("after the drain: %v", err)
	}
	fmt.Printf("e2e: kubectl drain evicted idle agent %s and was refused busy agent %s for %.1fs; its job ran on\n",
		idle, busy, drained.Seconds())
}
