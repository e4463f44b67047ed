package controllers_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/servertest"
)

// setPodStatus plays the kubelet for the agent's pod.
func setPodStatus(t *testing.T, a *agentryv1.Agent, mutate func(*corev1.PodStatus)) {
	t.Helper()
	ctx := context.Background()
	var pod corev1.Pod
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: a.Namespace, Name: a.Name}, &pod); err != nil {
		t.Fatalf("reading pod %s: %v", a.Name, err)
	}
	mutate(&pod.Status)
	if err := k8s.Status().Update(ctx, &pod); err != nil {
		t.Fatalf("updating pod %s status: %v", a.Name, err)
	}
}

// running reports the pod running and ready, as the kubelet does for a
// container without a readiness probe.
func running(s *corev1.PodStatus) {
	s.Phase = corev1.PodRunning
	s.StartTime = ptr.To(metav1.Now())
	s.Conditions = append(s.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()})
}

// connectAgent plays the agent process of a: it connects with the files
// from a's Secret, as the pod would.
func connectAgent(t *testing.T, a *agentryv1.Agent) *servertest.Agent {
	t.Helper()
	var secret corev1.Secret
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: a.Namespace, Name: a.Status.SecretName}, &secret); err != nil {
		t.Fatal(err)
	}
	files, err := pipelines.ParseAgentFiles(secret.Data)
	if err != nil {
		t.Fatal(err)
	}
	return servertest.Connect(t, files)
}

func getPool(t *testing.T, ns string) *agentryv1.AgentPool {
	t.Helper()
	var pool agentryv1.AgentPool
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "linux"}, &pool); err != nil {
		t.Fatal(err)
	}
	return &pool
}

func patchPool(t *testing.T, ns string, mutate func(*agentryv1.AgentPool)) {
	t.Helper()
	pool := getPool(t, ns)
	patch := client.MergeFrom(pool.DeepCopy())
	mutate(pool)
	if err := k8s.Patch(context.Background(), pool, patch); err != nil {
		t.Fatalf("patching the pool: %v", err)
	}
}

// Idle agents beyond the demand are deregistered and removed after the
// scale-down delay; an agent that holds a job is never touched.
func TestScaleDownRemovesSurplusIdleAgentsButNeverABusyOne(t *testing.T) {
	ns := newNamespace(t)
	srv := startServer(t)
	newPool(t, ns, srv, func(p *agentryv1.AgentPool) {
		p.Spec.MinIdle, p.Spec.MaxAgents = 2, ptr.To[int32](2)
		p.Spec.ScaleDownDelay = &metav1.Duration{Duration: 500 * time.Millisecond}
	})
	agents := waitForStartedAgents(t, ns, 2)
	busy, idle := &agents[0], &agents[1]
	setPodStatus(t, busy, running)
	setPodStatus(t, idle, running)

	srv.queueJobs(t, 1)
	proc := connectAgent(t, busy)
	job := proc.NextJob(t, 10*time.Second)
	waitFor(t, 10*time.Second, "the pool to see the busy agent", func() error {
		if c := getPool(t, ns).Status.Agents; c.Busy != 1 || c.Idle != 1 {
			return fmt.Errorf("agents %+v", c)
		}
		return nil
	})

	patchPool(t, ns, func(p *agentryv1.AgentPool) { p.Spec.MinIdle = 0 })
	waitAgentGone(t, srv, idle)
	checkEvent(t, ns, "linux", "ScaledDown")
	holds(t, time.Second, "the busy agent keeps its registration and pod", func() error {
		if _, ok := serverAgents(t, srv)[busy.Name]; !ok {
			return fmt.Errorf("busy agent %s was deregistered", busy.Name)
		}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: busy.Name}, &corev1.Pod{}); err != nil {
			return fmt.Errorf("busy agent's pod: %v", err)
		}
		return nil
	})
	proc.Complete(t, job, pipelines.ResultSucceeded, "done\n")
	if j := srv.WaitJob(t, job.RequestID, 10*time.Second); j.Result != pipelines.ResultSucceeded {
		t.Errorf("job result %q, want succeeded", j.Result)
	}
}

// A pod whose image cannot be pulled fails its agent at once, loudly; the
// agent is deregistered, its pod removed, and the pool holds further starts.
func TestPodThatCannotStartFailsItsAgent(t *testing.T) {
	tests := []struct {
		name       string
		timeout    time.Duration
		status     func(*corev1.PodStatus)
		wantReason string
	}{
		{
			name: "image pull", timeout: 5 * time.Minute, wantReason: "ImagePullFailed",
			status: func(s *corev1.PodStatus) {
				s.Phase = corev1.PodPending
				s.ContainerStatuses = []corev1.ContainerStatus{{Name: "agent", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
					Reason: "ImagePullBackOff", Message: `Back-off pulling image "ghcr.io/agentry-dev/agentry-agent:v0.1.0"`}}}}
			},
		},
		// Startup timeouts of 3 s: short for the test, long enough for it to
		// set the pod's status before they pass on a loaded machine.
		{
			name: "unschedulable past the startup timeout", timeout: 3 * time.Second, wantReason: "Unschedulable",
			status: func(s *corev1.PodStatus) {
				s.Phase = corev1.PodPending
				s.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
					Reason: corev1.PodReasonUnschedulable, Message: "0/3 nodes are available: 3 Insufficient cpu."}}
			},
		},
		{
			name: "pending past the startup timeout", timeout: 3 * time.Second, wantReason: "StartupTimeout",
			status: func(s *corev1.PodStatus) { s.Phase = corev1.PodPending },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			ns := newNamespace(t)
			srv := startServer(t)
			srv.queueJobs(t, 1)
			newPool(t, ns, srv, func(p *agentryv1.AgentPool) {
				p.Spec.StartupTimeout = &metav1.Duration{Duration: tt.timeout}
			})
			a := waitForStartedAgents(t, ns, 1)[0]
			setPodStatus(t, &a, tt.status)

			var got agentryv1.Agent
			waitFor(t, 15*time.Second, "the agent to fail", func() error {
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(&a), &got); err != nil {
					return err
				}
				c := meta.FindStatusCondition(got.Status.Conditions, agentryv1.AgentStartedCondition)
				if got.Status.Phase != agentryv1.AgentFailed || c == nil || c.Status != metav1.ConditionFalse || c.Reason != tt.wantReason {
					return fmt.Errorf("phase %q, Started %+v", got.Status.Phase, c)
				}
				return nil
			})
			checkEvent(t, ns, a.Name, tt.wantReason)
			waitFor(t, 10*time.Second, "the failed agent's registration and pod to be removed", func() error {
				if _, ok := serverAgents(t, srv)[a.Name]; ok {
					return fmt.Errorf("still registered")
				}
				for _, obj := range []client.Object{&corev1.Pod{}, &corev1.Secret{}} {
					if err := k8s.Get(ctx, client.ObjectKeyFromObject(&a), obj); !apierrors.IsNotFound(err) {
						return fmt.Errorf("%T still there (%v)", obj, err)
					}
				}
				return nil
			})
			// The pool backs off: the job still waits, but no new agent
			// starts while the failure is fresh, and Ready says why.
			waitFor(t, 10*time.Second, "the pool to report the back-off", func() error {
				c := meta.FindStatusCondition(getPool(t, ns).Status.Conditions, agentryv1.PoolReady)
				if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "StartBackoff" {
					return fmt.Errorf("Ready %+v", c)
				}
				return nil
			})
			holds(t, 2*time.Second, "no new agent during the back-off", func() error {
				if l := listAgents(t, ns); len(l) != 1 {
					return fmt.Errorf("%d agents: %v", len(l), agentNames(l))
				}
				return nil
			})
		})
	}
}

// A pod that is deleted while its agent runs a job gets the agent
// deregistered, and the server ends the job rather than wait for it.
func TestPodDeletedMidJobEndsTheJob(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	ids := srv.queueJobs(t, 1)
	newPool(t, ns, srv, func(p *agentryv1.AgentPool) { p.Spec.MaxAgents = ptr.To[int32](1) })
	a := waitForStartedAgents(t, ns, 1)[0]
	setPodStatus(t, &a, running)
	proc := connectAgent(t, &a)
	job := proc.NextJob(t, 10*time.Second)
	if _, err := srv.Admin.RenewJobRequest(ctx, int(a.Status.PoolID), job.RequestID); err != nil {
		t.Logf("renewing as the listener would: %v", err) // the admin token may not renew; the job is assigned either way
	}

	if err := k8s.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: a.Name}},
		client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	waitAgentGone(t, srv, &a)
	checkEvent(t, ns, a.Name, "PodDeleted")
	waitFor(t, 10*time.Second, "the job to leave its dead agent", func() error {
		j, err := srv.Jobs.GetJob(ctx, ids[0])
		if err != nil {
			return err
		}
		if j.AgentID == int(a.Status.AgentID) && j.State != jobapi.StateCompleted {
			return fmt.Errorf("job still %s on agent %d", j.State, j.AgentID)
		}
		return nil
	})
}

// Agent pods are covered by the pool's PodDisruptionBudget from their
// creation: the eviction API refuses to evict them (429). A pod whose agent
// runs idle past the idle protection period (4 s here: twice the pool's
// poll interval) leaves the budget and may be evicted; when that agent takes
// a job its pod is protected again. A budget whose spec was changed gets
// the pool's back.
func TestAgentPodsAreProtectedFromEvictionUnlessIdle(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	newPool(t, ns, srv, func(p *agentryv1.AgentPool) { p.Spec.MinIdle, p.Spec.MaxAgents = 2, ptr.To[int32](2) })
	agents := waitForStartedAgents(t, ns, 2)
	busy, idle := &agents[0], &agents[1]

	protected := func(a *agentryv1.Agent) (bool, error) {
		var pod corev1.Pod
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(a), &pod); err != nil {
			return false, err
		}
		label, annotation := pod.Labels[agentryv1.ProtectedLabel], pod.Annotations[agentryv1.SafeToEvictAnnotation]
		switch {
		case label == "true" && annotation == "false":
			return true, nil
		case label == "" && annotation == "":
			return false, nil
		}
		return false, fmt.Errorf("pod %s has label %q and annotation %q", a.Name, label, annotation)
	}
	for _, a := range agents {
		if p, err := protected(&a); err != nil || !p {
			t.Fatalf("a new agent's pod: protected %v, %v; want it protected from its creation", p, err)
		}
	}

	var pdb policyv1.PodDisruptionBudget
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "linux"}, &pdb); err != nil {
		t.Fatalf("the pool's PodDisruptionBudget: %v", err)
	}
	// Every selected pod must stay, however many: an integer minAvailable,
	// the one form the disruption controller takes for pods whose
	// controller (an Agent) has no scale subresource.
	wantSelector := map[string]string{agentryv1.PoolLabel: "linux", agentryv1.ProtectedLabel: "true"}
	wantBudget := func(pdb *policyv1.PodDisruptionBudget) error {
		if pdb.Spec.MaxUnavailable != nil || pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.Type != intstr.Int ||
			pdb.Spec.MinAvailable.IntVal != math.MaxInt32 || pdb.Spec.Selector == nil ||
			!equality.Semantic.DeepEqual(pdb.Spec.Selector.MatchLabels, wantSelector) {
			return fmt.Errorf("spec: minAvailable %v, maxUnavailable %v, selector %v; want minAvailable %d and selector %v",
				pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable, pdb.Spec.Selector, math.MaxInt32, wantSelector)
		}
		return nil
	}
	if err := wantBudget(&pdb); err != nil {
		t.Error(err)
	}
	// A budget edited by hand, or made by an earlier version (maxUnavailable
	// 0 over agentry.dev/busy), is set back.
	patch := client.MergeFrom(pdb.DeepCopy())
	pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable = nil, ptr.To(intstr.FromInt32(0))
	pdb.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{agentryv1.PoolLabel: "linux", "agentry.dev/busy": "true"}}
	if err := k8s.Patch(ctx, &pdb, patch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the budget to be set back", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(&pdb), &pdb); err != nil {
			return err
		}
		return wantBudget(&pdb)
	})
	// Play kube-controller-manager's disruption controller, which envtest
	// lacks, as it counts this budget (the end-to-end suite runs the real
	// one): no disruption allowed. (Without a status the API server refuses
	// every covered eviction too, but asks the client to retry in 10s.)
	pdb.Status = policyv1.PodDisruptionBudgetStatus{
		ObservedGeneration: pdb.Generation, DisruptionsAllowed: 0, CurrentHealthy: 2, DesiredHealthy: math.MaxInt32, ExpectedPods: 2,
	}
	if err := k8s.Status().Update(ctx, &pdb); err != nil {
		t.Fatalf("setting the budget's status: %v", err)
	}
	// Evictions are dry runs: the API server checks the budget as for a
	// real one, and the pods stay for the rest of the test.
	evict := func(a *agentryv1.Agent) error {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: a.Name}}
		dry := []string{metav1.DryRunAll}
		return k8s.SubResource("eviction").Create(ctx, p, &policyv1.Eviction{
			ObjectMeta:    metav1.ObjectMeta{Namespace: ns, Name: a.Name},
			DeleteOptions: &metav1.DeleteOptions{DryRun: dry},
		}, &client.SubResourceCreateOptions{CreateOptions: client.CreateOptions{DryRun: dry}})
	}
	refused := func(what string, a *agentryv1.Agent) {
		t.Helper()
		if err := evict(a); !apierrors.IsTooManyRequests(err) || !strings.Contains(err.Error(), "disruption budget") {
			t.Errorf("evicting %s's pod: %v, want 429 Too Many Requests for its disruption budget", what, err)
		}
	}

	setPodStatus(t, busy, running)
	setPodStatus(t, idle, running)
	srv.queueJobs(t, 1)
	first := connectAgent(t, busy)
	job := first.NextJob(t, 10*time.Second)
	refused("the busy agent", busy)
	refused("the idle agent, before its protection ran out,", idle)

	waitFor(t, 15*time.Second, "the idle agent's pod to lose its protection", func() error {
		if p, err := protected(idle); err != nil || p {
			return fmt.Errorf("protected %v, %v", p, err)
		}
		return nil
	})
	if err := evict(idle); err != nil {
		t.Errorf("evicting the idle agent's pod: %v, want it allowed", err)
	}
	if p, err := protected(busy); err != nil || !p {
		t.Errorf("the busy agent's pod: protected %v, %v; want it protected while the job runs", p, err)
	}
	refused("the busy agent", busy)

	srv.queueJobs(t, 1)
	second := connectAgent(t, idle)
	job2 := second.NextJob(t, 10*time.Second)
	waitFor(t, 10*time.Second, "the once idle agent's pod to be protected again", func() error {
		if p, err := protected(idle); err != nil || !p {
			return fmt.Errorf("protected %v, %v", p, err)
		}
		return nil
	})
	refused("the once idle agent, now busy,", idle)
	first.Complete(t, job, pipelines.ResultSucceeded, "done\n")
	second.Complete(t, job2, pipelines.ResultSucceeded, "done\n")
}

// Registrations that carry the pool's marker and name prefix but have no
// Agent are deregistered; others are left alone. An Agent whose
// registration vanished from the server is deleted.
func TestOrphansAreCollectedBothWays(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	srv.queueJobs(t, 1)
	newPool(t, ns, srv, func(p *agentryv1.AgentPool) { p.Spec.MaxAgents = ptr.To[int32](1) })
	a := waitForStartedAgents(t, ns, 1)[0]
	if got := serverAgents(t, srv)[a.Name].UserCapabilities[agentryv1.PoolCapability]; got != ns+"/linux" {
		t.Errorf("the agent's %s capability = %q, want %q", agentryv1.PoolCapability, got, ns+"/linux")
	}

	sp, err := srv.Admin.GetPoolByName(ctx, serverPool)
	if err != nil {
		t.Fatal(err)
	}
	register := func(name string, caps map[string]string) {
		key, err := agentcrypto.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		pub := agentcrypto.PublicKeyOf(&key.PublicKey)
		if _, err := srv.Admin.AddAgent(ctx, sp.ID, pipelines.TaskAgent{Name: name, Version: "3.240.0", MaxParallelism: 1,
			Authorization: &pipelines.TaskAgentAuthorization{PublicKey: &pub}, UserCapabilities: caps}); err != nil {
			t.Fatal(err)
		}
	}
	marker := map[string]string{agentryv1.PoolCapability: ns + "/linux"}
	register("linux-orphan1", marker)
	register("linux-someone-elses", nil)
	register("other-pool-x", marker)
	register("linux-other-namespace", map[string]string{agentryv1.PoolCapability: "elsewhere/linux"})

	waitFor(t, 10*time.Second, "the orphan to be deregistered", func() error {
		if _, ok := serverAgents(t, srv)["linux-orphan1"]; ok {
			return fmt.Errorf("linux-orphan1 still registered")
		}
		return nil
	})
	checkEvent(t, ns, "linux", "OrphanDeregistered")
	regs := serverAgents(t, srv)
	for _, name := range []string{a.Name, "linux-someone-elses", "other-pool-x", "linux-other-namespace"} {
		if _, ok := regs[name]; !ok {
			t.Errorf("registration %s was removed; it is not an orphan of this pool", name)
		}
	}

	// The other way round: the server forgets the agent.
	if err := srv.Admin.DeleteAgent(ctx, sp.ID, int(a.Status.AgentID)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the Agent whose registration vanished to be deleted", func() error {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(&a), &agentryv1.Agent{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
	checkEvent(t, ns, a.Name, "RegistrationVanished")
}

// Only jobs whose demands the pool's agents meet are its demand.
func TestOnlyJobsThePoolMeetsStartAgents(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	srv := startServer(t)
	for _, demands := range [][]string{
		{"Agent.OS -equals Windows_NT"},
		{"team -equals ci", "Agent.OS -equals Linux"},
		{"gpu"},
	} {
		if _, err := srv.Jobs.QueueJob(ctx, jobapi.JobSpec{Pool: serverPool, Steps: []jobapi.Step{{Script: "echo"}}, Demands: demands}); err != nil {
			t.Fatalf("queueing a job demanding %q: %v", demands, err)
		}
	}
	newPool(t, ns, srv, nil)
	waitForStartedAgents(t, ns, 1)
	waitFor(t, 10*time.Second, "the pool to count one waiting job", func() error {
		if w := getPool(t, ns).Status.WaitingJobs; w != 1 {
			return fmt.Errorf("waitingJobs %d", w)
		}
		return nil
	})
	holds(t, time.Second, "one agent for the one job the pool meets", func() error {
		if n := len(listAgents(t, ns)); n != 1 {
			return fmt.Errorf("%d agents", n)
		}
		return nil
	})
}

// The operator's metrics are on controller-runtime's registry, labelled by
// pool: what an on-call dashboard reads.
func TestMetricsDescribeThePool(t *testing.T) {
	ns := newNamespace(t)
	srv := startServer(t)
	srv.queueJobs(t, 2)
	newPool(t, ns, srv, func(p *agentryv1.AgentPool) { p.Spec.MaxAgents = ptr.To[int32](1) })
	waitForStartedAgents(t, ns, 1)
	waitFor(t, 10*time.Second, "the pool's metrics", func() error {
		families, err := metrics.Registry.Gather()
		if err != nil {
			return err
		}
		got := map[string]float64{}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["namespace"] != ns {
					continue
				}
				key := f.GetName() + "{" + labels["state"] + "}"
				got[key] += m.GetGauge().GetValue() + m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
			}
		}
		want := map[string]float64{
			"agentry_pool_waiting_jobs{}":                 2,
			"agentry_pool_agents{starting}":               1,
			"agentry_agent_registrations_total{}":         1,
			"agentry_job_queued_to_pod_created_seconds{}": 1,
		}
		for k, v := range want {
			if got[k] != v {
				return fmt.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
			}
		}
		return nil
	})
}
