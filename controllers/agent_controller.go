package controllers

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

const (
	// AgentVersion is the agent version registered for every agent; demands
	// such as "Agent.Version -gtVersion 2.182.1" are matched against it.
	AgentVersion = "3.240.0"
	// workFolder is the work folder written into .agent.
	workFolder = "_work"
	// reasonRegistrationFailed is the Registered condition's reason after a
	// failed attempt, which may have left a registration behind.
	reasonRegistrationFailed = "RegistrationFailed"
	// poolWaitInterval is how long to wait for a pool that is missing or not
	// yet resolved on its server.
	poolWaitInterval = 5 * time.Second
	// failedAgentRetention is how long an Agent whose pod could not start
	// is kept, deregistered and without pod, after it failed: `kubectl get
	// agents` shows why, and the pool backs off its starts while it is there.
	failedAgentRetention = 10 * time.Minute
	// agentConcurrency is how many Agents are reconciled at once: most of a
	// registration is waiting on the server and the API server, and a
	// burst's new Agents, handed over by the pool as they are created,
	// should all be registering at once rather than queue for a worker (100
	// starts pods faster in the 100-job benchmark than 32 or 64 did).
	agentConcurrency = 100
)

// AgentReconciler registers an Agent with its server, writes its Secret,
// runs its pod, and deregisters and removes it once the pod has ended.
type AgentReconciler struct {
	client.Client
	// APIReader reads without the cache: Secrets, which are not cached, and a
	// pod the cache does not show yet.
	APIReader client.Reader
	// Credentials reads the pools' admin tokens.
	Credentials *credentials
	Recorder    events.EventRecorder
	Connect     Connector
	// Keys hands out agent keys; nil makes each one on demand.
	Keys KeySource
	// Jobs is the servers' word on the jobs agents hold; nil waits for pods
	// to end.
	Jobs *agentJobs
	// NewAgents are the Agents the pool just created, for a reconcile that
	// comes before the cache has them; nil waits for the cache.
	NewAgents *newAgents
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// IdleProtection is how long an agent's pod stays protected from
	// eviction without a job once it runs; 0 is DefaultIdleProtection.
	IdleProtection time.Duration

	// removed holds the UIDs of Agents this reconciler removed, until
	// removedMemory has passed: the cache may still show them for a moment,
	// and going through a removed Agent's deletion again would cost a server
	// call and half a dozen API requests for nothing.
	removed   sync.Map // types.UID → time.Time
	lastPrune atomic.Int64
	// secrets holds, per Agent UID, the UID of the Secret this manager wrote
	// for it, so removing it needs no read first.
	secrets sync.Map // types.UID → types.UID
	// written holds, per Agent UID, the Agent as this reconciler's last
	// status write left it, until the cache shows that write; see fresher.
	written sync.Map // types.UID → writtenAgent
}

// writtenAgent is an Agent as a status write returned it, and the version
// the cache showed before this reconciler's run of writes began; or, with
// holdUntil set, an Agent whose status is not written yet (see statusHold),
// and the version it is to be written on.
type writtenAgent struct {
	agent     *agentryv1.Agent
	from      string // resourceVersion
	at        time.Time
	holdUntil time.Time
}

// statusHold is how long the status write that records a new agent's
// registration and pod waits for the agent's next change (its pod running,
// its job assigned or finished), to be made with it: in a burst that write
// would take API server time from the next agents' pods, and a short job
// often ends before the hold does, when the Agent goes without it. Until
// then the registration is in the Agent's Secret, which a restarted manager
// reads, and in this reconciler's memory (fresher).
const statusHold = time.Second

// DefaultIdleProtection is how long an agent pod that runs without a job
// stays protected from eviction: long enough for a new agent to take the
// job it was started for (seconds, even in a burst), short enough that a
// warm agent does not hold up a node drain for long.
const DefaultIdleProtection = 30 * time.Second

// removedMemory is how long a removed Agent's UID is remembered.
const removedMemory = time.Minute

func (r *AgentReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// SetupWithManager registers the reconciler.
func (r *AgentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		// The Agent's own status writes (this reconciler's and the pool's)
		// need no reconcile; creation, deletion (which bumps the generation)
		// and spec changes do. Not For: its handler has no say on priority.
		Watches(&agentryv1.Agent{}, urgentAgentHandler{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &agentryv1.Agent{}, handler.OnlyControllerOwner()),
			builder.WithPredicates(podProgressed)).
		Watches(&corev1.Pod{}, endedPodHandler{}).
		Named("agent").
		// Registration makes an RSA key and a few server and API calls; a
		// burst of agents should not wait for each other, and an agent that
		// finished should not wait behind a burst of registrations.
		WithOptions(controller.Options{
			MaxConcurrentReconciles: agentConcurrency,
			// What For would log: the Agent's name with its kind.
			LogConstructor: func(req *reconcile.Request) logr.Logger {
				log := mgr.GetLogger().WithValues("controller", "agent", "controllerGroup", agentryv1.GroupVersion.Group, "controllerKind", "Agent")
				if req != nil {
					log = log.WithValues("Agent", klog.KRef(req.Namespace, req.Name), "namespace", req.Namespace, "name", req.Name)
				}
				return log
			},
		})
	if r.Jobs != nil {
		// An agent whose job the server assigned or finished.
		b = b.WatchesRawSource(source.Channel(r.Jobs.events, agentWakeHandler))
	}
	if r.NewAgents != nil {
		// An Agent the pool just created, before its watch event.
		b = b.WatchesRawSource(source.Channel(r.NewAgents.events, newAgentHandler))
	}
	return b.Complete(r)
}

// podProgressed passes the pod updates the Agent follows: its phase, its
// deletion, its scheduling and its containers' waiting reasons (a failed
// image pull). Label changes (the busy mark) and the rest pass by.
var podProgressed = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		before, ok1 := e.ObjectOld.(*corev1.Pod)
		after, ok2 := e.ObjectNew.(*corev1.Pod)
		if !ok1 || !ok2 {
			return true
		}
		return before.Status.Phase != after.Status.Phase ||
			before.DeletionTimestamp.IsZero() != after.DeletionTimestamp.IsZero() ||
			scheduledCondition(before) != scheduledCondition(after) ||
			waitingReasons(before) != waitingReasons(after)
	},
}

func scheduledCondition(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			return string(c.Status) + "/" + c.Reason
		}
	}
	return ""
}

func waitingReasons(p *corev1.Pod) string {
	var b strings.Builder
	for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, cs := range list {
			if w := cs.State.Waiting; w != nil {
				b.WriteString(cs.Name + "=" + w.Reason + ";")
			}
		}
	}
	return b.String()
}

// Reconcile moves an Agent one step through its life.
func (r *AgentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	agent := &agentryv1.Agent{}
	switch err := r.Get(ctx, req.NamespacedName, agent); {
	case err == nil:
		r.NewAgents.seen(req.NamespacedName)
	case !apierrors.IsNotFound(err):
		return ctrl.Result{}, err
	default:
		if agent = r.NewAgents.get(req.NamespacedName, r.now()); agent == nil {
			return ctrl.Result{}, nil
		}
	}
	if r.wasRemoved(agent.UID) {
		return ctrl.Result{}, nil
	}
	cached := agent
	agent, held := r.fresher(agent)
	if !agent.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, agent)
	}
	if !controllerutil.ContainsFinalizer(agent, agentryv1.DeregisterFinalizer) {
		patch := client.MergeFrom(agent.DeepCopy())
		controllerutil.AddFinalizer(agent, agentryv1.DeregisterFinalizer)
		if err := r.Patch(ctx, agent, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}

	before := agent.DeepCopy()
	if !held.IsZero() {
		// The held status is still to be written.
		cached.Status.DeepCopyInto(&before.Status)
	}
	started := agent.Status.PodName != ""
	if agent.Status.Phase == "" {
		agent.Status.Phase = agentryv1.AgentPending
	}
	result, err := r.reconcileNormal(ctx, agent, before)
	if err == nil && !agent.Status.Phase.Finished() && !equality.Semantic.DeepEqual(before.Status, agent.Status) {
		now := r.now()
		switch {
		case !started && agent.Status.PodName != "":
			// A new agent's registration and pod: held; see statusHold.
			r.hold(agent, agent.ResourceVersion, now.Add(statusHold))
			return ctrl.Result{RequeueAfter: minPositive(result.RequeueAfter, statusHold)}, nil
		case now.Before(held) && equality.Semantic.DeepEqual(r.heldStatus(agent.UID), &agent.Status):
			// Nothing new since the hold began: it goes on.
			return ctrl.Result{RequeueAfter: minPositive(result.RequeueAfter, held.Sub(now))}, nil
		}
	}
	if perr := r.patchStatus(ctx, agent, before); perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	return result, nil
}

func (r *AgentReconciler) reconcileNormal(ctx context.Context, agent, before *agentryv1.Agent) (ctrl.Result, error) {
	if agent.Status.Phase.Finished() {
		return r.finish(ctx, agent, before)
	}
	pod := &corev1.Pod{}
	podFound, err := r.getPod(ctx, agent, pod)
	if err != nil {
		return ctrl.Result{}, err
	}
	if podFound {
		return r.observePod(ctx, agent, before, pod)
	}
	if agent.Status.PodName != "" {
		// The cache may show an Agent that finish already deleted, with the
		// pod it deleted first, or an older version of one (without the
		// failure that deleted its pod): only the current version of a live
		// Agent lost its pod.
		switch state, err := r.freshness(ctx, agent); {
		case err != nil:
			return ctrl.Result{}, err
		case state == agentGone:
			return ctrl.Result{}, nil
		case state == agentStale:
			return ctrl.Result{RequeueAfter: staleRetry}, nil
		}
		// The pod existed and is gone: whoever removed it also took the job.
		// Deregistering now ends (or re-queues) that job on the server.
		setFinished(agent, agentryv1.AgentFailed)
		r.failed(agent, "PodDeleted", "The agent's pod was deleted before it ended")
		return r.finish(ctx, agent, before)
	}

	pool := &agentryv1.AgentPool{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: agent.Namespace, Name: agent.Spec.PoolName}, pool); err != nil {
		if apierrors.IsNotFound(err) {
			ctrl.LoggerFrom(ctx).Info("Waiting for the agent's pool", "pool", agent.Spec.PoolName)
			return ctrl.Result{RequeueAfter: poolWaitInterval}, nil
		}
		return ctrl.Result{}, err
	}
	if !pool.DeletionTimestamp.IsZero() {
		// The pool deletes its agents; starting this one would be wasted.
		return ctrl.Result{}, nil
	}

	registered, err := r.hasCredentials(ctx, agent)
	if err != nil {
		return ctrl.Result{}, err
	}
	var reg registration
	if !registered {
		var result ctrl.Result
		if reg, result, err = r.register(ctx, agent, pool); err != nil || !result.IsZero() {
			return result, err
		}
	}
	if err := r.start(ctx, agent, pool, reg); err != nil {
		return ctrl.Result{}, err
	}
	// The registration and the pod are recorded together, by one status
	// write, which Reconcile holds for up to statusHold to make it with the
	// agent's next change: the Secret, which a reconcile that comes before
	// that write (or after a restart) finds again, is what holds the
	// registration until then.
	return ctrl.Result{RequeueAfter: durationOr(pool.Spec.StartupTimeout, agentryv1.DefaultStartupTimeout)}, nil
}

// start creates the agent's pod, and writes the Secret of a registration
// made in this reconcile (reg) at the same time: neither API write waits for
// the other. The pod cannot start before its Secret exists (the kubelet
// retries the mount until it does), and the Secret holds the registration
// for the next reconcile should this one stop before its status write.
//
// The Secret of a registration that replaced an earlier one's key is
// written first, so the pod never mounts the earlier key, which the server
// no longer accepts. A new registration's Secret normally does not exist
// yet; should one be left from an earlier registration of this name that
// has since vanished from the server, a pod that mounted it before it was
// rewritten fails to authenticate and fails, and the pool starts another.
func (r *AgentReconciler) start(ctx context.Context, agent *agentryv1.Agent, pool *agentryv1.AgentPool, reg registration) error {
	if reg.files != nil && reg.replaced {
		if err := r.writeSecret(ctx, agent, *reg.files); err != nil {
			return err
		}
		setRegistered(agent, reg.files.Settings.AgentID, reg.files.Settings.PoolID)
		reg.files = nil
	}
	secretWritten := make(chan error, 1)
	if reg.files != nil {
		go func() { secretWritten <- r.writeSecret(ctx, agent, *reg.files) }()
	} else {
		secretWritten <- nil
	}
	podName, podErr := r.createPod(ctx, agent, pool)
	secretErr := <-secretWritten
	if reg.files != nil && secretErr == nil {
		setRegistered(agent, reg.files.Settings.AgentID, reg.files.Settings.PoolID)
	}
	if podErr == nil {
		agent.Status.PodName = podName
	}
	return errors.Join(secretErr, podErr)
}

// agentFreshness is how the cache's copy of an Agent compares with the API
// server's.
type agentFreshness int

const (
	agentCurrent agentFreshness = iota
	// agentGone: deleted, or being deleted (the deletion, which bumps the
	// generation, brings the reconcile that removes it).
	agentGone
	// agentStale: the API server has a newer version; status writes bring
	// no reconcile, so the caller comes back once the cache has it.
	agentStale
)

// staleRetry is how soon a reconcile that met a stale Agent comes back.
const staleRetry = 100 * time.Millisecond

func (r *AgentReconciler) freshness(ctx context.Context, agent *agentryv1.Agent) (agentFreshness, error) {
	var fresh agentryv1.Agent
	err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(agent), &fresh)
	switch {
	case apierrors.IsNotFound(err):
		return agentGone, nil
	case err != nil:
		return agentCurrent, fmt.Errorf("reading agent: %w", err)
	case fresh.UID != agent.UID || !fresh.DeletionTimestamp.IsZero():
		return agentGone, nil
	case fresh.ResourceVersion != agent.ResourceVersion:
		return agentStale, nil
	}
	return agentCurrent, nil
}

// getPod finds the agent's pod, asking the API server when the cache does
// not know it but the status says it was created (the cache may lag).
func (r *AgentReconciler) getPod(ctx context.Context, agent *agentryv1.Agent, pod *corev1.Pod) (bool, error) {
	key := client.ObjectKey{Namespace: agent.Namespace, Name: agent.Name}
	err := r.Get(ctx, key, pod)
	if apierrors.IsNotFound(err) && agent.Status.PodName != "" {
		err = r.APIReader.Get(ctx, key, pod)
	}
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading pod: %w", err)
	}
	if !metav1.IsControlledBy(pod, agent) {
		return false, reconcile.TerminalError(fmt.Errorf("pod %s exists and does not belong to this agent", pod.Name))
	}
	return true, nil
}

// observePod follows the pod's phase, finishes the agent once it ended and
// fails it when the pod cannot start.
func (r *AgentReconciler) observePod(ctx context.Context, agent, before *agentryv1.Agent, pod *corev1.Pod) (ctrl.Result, error) {
	agent.Status.PodName = pod.Name
	if agent.Status.AgentID == 0 {
		// The reconcile that created the pod stopped before recording the
		// registration; the Secret the pod mounts holds it.
		files, err := r.ownSecret(ctx, agent)
		if err != nil {
			return ctrl.Result{}, err
		}
		switch {
		case files != nil:
			setRegistered(agent, files.Settings.AgentID, files.Settings.PoolID)
		case pod.DeletionTimestamp.IsZero() && (pod.Status.Phase == corev1.PodPending || pod.Status.Phase == ""):
			// Or it stopped before it wrote the Secret (the write failed,
			// or the manager stopped), and the pod waits for it.
			if result, err := r.registerAgain(ctx, agent); err != nil || !result.IsZero() {
				return result, err
			}
		}
	}
	if job, ok := r.Jobs.lookup(poolKey(agent), int(agent.Status.AgentID)); ok {
		if job.Finished {
			// The server has the job's result: the agent has done its one
			// job. It is deregistered and its pod stopped now, rather than
			// when the pod is seen to end.
			ctrl.LoggerFrom(ctx).Info("The agent's job finished", "jobRequestId", job.RequestID)
			setFinished(agent, agentryv1.AgentSucceeded)
			return r.finish(ctx, agent, before)
		}
		// A busy agent: its status names the job, and its pod is protected
		// (born so; an agent that had run idle lost it). The two writes do
		// not wait for each other.
		agent.Status.JobRequestID = job.RequestID
		result, err := r.followPod(ctx, agent, before, pod)
		if err != nil || agent.Status.Phase.Finished() {
			return result, err
		}
		owner := agent.DeepCopy() // the status write below rewrites agent
		marked := make(chan error, 1)
		go func() { marked <- protectPod(ctx, r.Client, owner, pod, true) }()
		err = r.patchStatus(ctx, agent, before)
		return result, errors.Join(<-marked, err)
	}
	result, err := r.followPod(ctx, agent, before, pod)
	if err != nil || agent.Status.Phase.Finished() {
		return result, err
	}
	if agent.Status.JobRequestID != 0 {
		// Its status names a job the queue does not show (yet: a restarted
		// manager reconciles its Agents before it has read the queues). A
		// pod from before the protected label is given it here.
		return result, protectPod(ctx, r.Client, agent, pod, true)
	}
	wait, err := r.unprotectIdle(ctx, agent, pod)
	return ctrl.Result{RequeueAfter: minPositive(result.RequeueAfter, wait)}, err
}

// unprotectIdle lifts the protection of the pod of an agent that has run
// without a job for the idle protection period: a warm agent, or one whose
// job another agent took, should not hold up a node drain. It returns how
// long the protection has left otherwise (0: none, or nothing to lift).
func (r *AgentReconciler) unprotectIdle(ctx context.Context, agent *agentryv1.Agent, pod *corev1.Pod) (time.Duration, error) {
	// Only the servers' word that the agent holds no job counts: without
	// it (no job tracking, or no registration id yet) the pod stays
	// protected.
	if r.Jobs == nil || pod.Labels[agentryv1.ProtectedLabel] != "true" || pod.Status.Phase != corev1.PodRunning ||
		agent.Status.AgentID == 0 || agent.Status.StartTime == nil {
		return 0, nil
	}
	period := r.IdleProtection
	if period <= 0 {
		period = DefaultIdleProtection
	}
	// Against a polled queue, a job the agent took is seen up to a poll
	// interval late; the period outlasts two.
	var pool agentryv1.AgentPool
	if err := r.Get(ctx, poolKey(agent), &pool); err == nil {
		period = max(period, 2*durationOr(pool.Spec.PollInterval, agentryv1.DefaultPollInterval))
	}
	if left := agent.Status.StartTime.Add(period).Sub(r.now()); left > 0 {
		return left, nil
	}
	ctrl.LoggerFrom(ctx).Info("Lifting the idle agent's eviction protection", "idleFor", r.now().Sub(agent.Status.StartTime.Time).Round(time.Second))
	return 0, protectPod(ctx, r.Client, agent, pod, false)
}

// followPod records the pod's phase: it finishes the agent once the pod
// ended, and fails it when the pod cannot start.
func (r *AgentReconciler) followPod(ctx context.Context, agent, before *agentryv1.Agent, pod *corev1.Pod) (ctrl.Result, error) {
	switch pod.Status.Phase {
	case corev1.PodSucceeded:
		setFinished(agent, agentryv1.AgentSucceeded)
		return r.finish(ctx, agent, before)
	case corev1.PodFailed:
		setFinished(agent, agentryv1.AgentFailed)
		reason, message := podFailure(pod)
		r.failed(agent, reason, "The agent's pod failed: "+message)
		return r.finish(ctx, agent, before)
	case corev1.PodRunning:
		agent.Status.Phase = agentryv1.AgentRunning
		if agent.Status.StartTime == nil {
			agent.Status.StartTime = pod.Status.StartTime
			if agent.Status.StartTime == nil {
				agent.Status.StartTime = ptr.To(metav1.Now())
			}
		}
		meta.SetStatusCondition(&agent.Status.Conditions, metav1.Condition{
			Type: agentryv1.AgentStartedCondition, Status: metav1.ConditionTrue, Reason: "PodRunning",
			Message: "The agent's pod runs", ObservedGeneration: agent.Generation,
		})
		return ctrl.Result{}, nil
	}
	if agent.Status.AgentID != 0 {
		agent.Status.Phase = agentryv1.AgentRegistered
	}
	timeout := r.startupTimeout(ctx, agent)
	problem := podStartProblem(pod, r.now(), timeout)
	if problem.reason == "" {
		return ctrl.Result{RequeueAfter: problem.timeLeft}, nil
	}
	if !problem.fatal {
		// Not given up on yet (a cluster autoscaler may be adding a node),
		// but said where a person looks.
		if c := meta.FindStatusCondition(agent.Status.Conditions, agentryv1.AgentStartedCondition); c == nil || c.Reason != problem.reason {
			r.Recorder.Eventf(agent, pod, corev1.EventTypeWarning, problem.reason, "Start", "The agent's pod cannot start yet: %s", problem.message)
		}
		meta.SetStatusCondition(&agent.Status.Conditions, metav1.Condition{
			Type: agentryv1.AgentStartedCondition, Status: metav1.ConditionFalse, Reason: problem.reason,
			Message: problem.message, ObservedGeneration: agent.Generation,
		})
		return ctrl.Result{RequeueAfter: problem.timeLeft}, nil
	}
	setFinished(agent, agentryv1.AgentFailed)
	meta.SetStatusCondition(&agent.Status.Conditions, metav1.Condition{
		Type: agentryv1.AgentStartedCondition, Status: metav1.ConditionFalse, Reason: problem.reason,
		Message: problem.message, ObservedGeneration: agent.Generation,
	})
	r.failed(agent, problem.reason, "The agent's pod could not start: "+problem.message)
	return r.finish(ctx, agent, before)
}

// registerAgain registers an agent whose pod exists but whose Secret was
// never written, and writes it: the registration that Secret was to hold
// is given a new key.
func (r *AgentReconciler) registerAgain(ctx context.Context, agent *agentryv1.Agent) (ctrl.Result, error) {
	pool := &agentryv1.AgentPool{}
	if err := r.Get(ctx, poolKey(agent), pool); err != nil {
		// A pool that is gone deletes its agents.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	reg, result, err := r.register(ctx, agent, pool)
	if err != nil || !result.IsZero() || reg.files == nil {
		return result, err
	}
	if err := r.writeSecret(ctx, agent, *reg.files); err != nil {
		return ctrl.Result{}, err
	}
	setRegistered(agent, reg.files.Settings.AgentID, reg.files.Settings.PoolID)
	return ctrl.Result{}, nil
}

// poolKey names the agent's pool.
func poolKey(agent *agentryv1.Agent) types.NamespacedName {
	return types.NamespacedName{Namespace: agent.Namespace, Name: agent.Spec.PoolName}
}

// protectPod puts an agent's pod under the pool's PodDisruptionBudget
// (protect) or takes it out: the protected label, and the cluster
// autoscaler's safe-to-evict annotation at "false", which an unprotected
// pod loses. A pod that is being deleted, or is not the agent's, is left.
func protectPod(ctx context.Context, c client.Client, agent *agentryv1.Agent, pod *corev1.Pod, protect bool) error {
	if (pod.Labels[agentryv1.ProtectedLabel] == "true") == protect || !pod.DeletionTimestamp.IsZero() || !metav1.IsControlledBy(pod, agent) {
		return nil
	}
	patch := client.MergeFrom(pod.DeepCopy())
	if protect {
		setProtected(&pod.ObjectMeta)
	} else {
		delete(pod.Labels, agentryv1.ProtectedLabel)
		delete(pod.Annotations, agentryv1.SafeToEvictAnnotation)
	}
	if err := c.Patch(ctx, pod, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("changing the eviction protection of pod %s: %w", pod.Name, err)
	}
	return nil
}

// setProtected puts the protected label and the safe-to-evict annotation
// on a pod.
func setProtected(m *metav1.ObjectMeta) {
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Labels[agentryv1.ProtectedLabel] = "true"
	m.Annotations[agentryv1.SafeToEvictAnnotation] = "false"
}

// failed reports an agent's failure where on-call looks: an Event on the
// Agent (kept after it is gone) and the failures metric.
func (r *AgentReconciler) failed(agent *agentryv1.Agent, reason, message string) {
	ctrl.Log.WithName("agent").Info("Agent failed", "agent", agent.Name, "namespace", agent.Namespace, "reason", reason, "message", message)
	r.Recorder.Eventf(agent, nil, corev1.EventTypeWarning, reason, "Fail", "%s", message)
	failuresTotal.WithLabelValues(agent.Namespace, agent.Spec.PoolName, reason).Inc()
}

// startupTimeout is the agent's pool's startup timeout, or the default when
// the pool cannot be read.
func (r *AgentReconciler) startupTimeout(ctx context.Context, agent *agentryv1.Agent) time.Duration {
	pool := &agentryv1.AgentPool{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: agent.Namespace, Name: agent.Spec.PoolName}, pool); err != nil {
		return agentryv1.DefaultStartupTimeout
	}
	return durationOr(pool.Spec.StartupTimeout, agentryv1.DefaultStartupTimeout)
}

// hasCredentials reports whether the agent is registered and its Secret,
// which holds the only copy of its private key, exists.
func (r *AgentReconciler) hasCredentials(ctx context.Context, agent *agentryv1.Agent) (bool, error) {
	if agent.Status.AgentID == 0 || agent.Status.SecretName == "" {
		return false, nil
	}
	var secret corev1.Secret
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: agent.Namespace, Name: agent.Status.SecretName}, &secret)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// registration is what register made: the agent files its Secret is to
// hold (nil when an earlier reconcile's registration, already in the Secret,
// was taken up), and whether it replaced an earlier registration's key.
type registration struct {
	files    *pipelines.AgentFiles
	replaced bool
}

// register registers the agent with a fresh key, and returns the files
// its Secret is to hold for the caller to write; or it takes up the
// registration and Secret an earlier reconcile of this Agent made and did
// not get to record. The status fields it sets are for the caller to write.
func (r *AgentReconciler) register(ctx context.Context, agent *agentryv1.Agent, pool *agentryv1.AgentPool) (registration, ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	server, err := r.Credentials.server(ctx, r.Connect, pool)
	if err != nil {
		result, err := r.registrationFailed(agent, err)
		return registration{}, result, err
	}
	poolID := int(pool.Status.PoolID)
	if poolID == 0 {
		p, err := server.GetPoolByName(ctx, pool.Spec.Server.PoolName)
		if err != nil {
			result, err := r.registrationFailed(agent, err)
			return registration{}, result, err
		}
		poolID = p.ID
	}

	keys := r.Keys
	if keys == nil {
		keys = freshKeys{}
	}
	key, err := keys.Key(ctx)
	if err != nil {
		return registration{}, ctrl.Result{}, err
	}
	log.Info("Registering the agent", "poolId", poolID)
	got, how, err := registerAgent(ctx, server, poolID, agent.Name, key, userCapabilities(pool),
		func() (*pipelines.AgentFiles, error) { return r.ownSecret(ctx, agent) })
	if err != nil {
		result, err := r.registrationFailed(agent, err)
		return registration{}, result, err
	}
	if how == registrationReused {
		log.Info("Took up the registration an earlier reconcile made", "agentId", got.ID)
		setRegistered(agent, got.ID, poolID)
		return registration{}, ctrl.Result{}, nil
	}
	registrationsTotal.WithLabelValues(agent.Namespace, pool.Name).Inc()
	files := &pipelines.AgentFiles{
		Settings: pipelines.AgentSettings{
			AgentID:    got.ID,
			AgentName:  got.Name,
			PoolID:     poolID,
			PoolName:   pool.Spec.Server.PoolName,
			ServerURL:  pool.Spec.Server.URL,
			WorkFolder: workFolder,
			Ephemeral:  true,
		},
		Credentials: pipelines.Credentials{
			Scheme: "OAuth",
			Data: pipelines.CredentialData{
				ClientID:         got.Authorization.ClientID,
				AuthorizationURL: got.Authorization.AuthorizationURL,
			},
		},
		Key: agentcrypto.ParametersOf(key),
	}
	// Should the Secret's write fail, the next reconcile finds the
	// registration and no Secret for it, and replaces the registration's
	// key: no pod can have mounted a Secret that is not there.
	// No Event: a burst would write one per agent for what the status and
	// the manager's log already say. Events are for what goes wrong.
	return registration{files: files, replaced: how == registrationReplaced}, ctrl.Result{}, nil
}

func setRegistered(agent *agentryv1.Agent, id, poolID int) {
	agent.Status.AgentID = int32(id)
	agent.Status.PoolID = int32(poolID)
	agent.Status.SecretName = agent.Name
	agent.Status.Phase = agentryv1.AgentRegistered
	meta.SetStatusCondition(&agent.Status.Conditions, metav1.Condition{
		Type: agentryv1.AgentRegisteredCondition, Status: metav1.ConditionTrue, Reason: "Registered",
		Message: fmt.Sprintf("Registered as agent %d in pool %d", id, poolID), ObservedGeneration: agent.Generation,
	})
}

// ownSecret reads the agent's Secret and the agent files in it; nil when
// there is none or it is not this Agent's.
func (r *AgentReconciler) ownSecret(ctx context.Context, agent *agentryv1.Agent) (*pipelines.AgentFiles, error) {
	var secret corev1.Secret
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: agent.Namespace, Name: agent.Name}, &secret)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading secret: %w", err)
	}
	if !metav1.IsControlledBy(&secret, agent) {
		return nil, nil
	}
	files, err := pipelines.ParseAgentFiles(secret.Data)
	if err != nil {
		return nil, nil // unreadable: rewritten with the registration
	}
	return &files, nil
}

// registrationKind says how registerAgent came by its registration.
type registrationKind int

const (
	// registrationNew: the name was free.
	registrationNew registrationKind = iota
	// registrationReused: an earlier reconcile's, which the Secret holds.
	registrationReused
	// registrationReplaced: an earlier reconcile's, given the new key.
	registrationReplaced
)

// registerAgent registers name with key's public half. An agent of that name
// that already exists is ours, from a reconcile that stopped before it
// recorded the registration. When the Agent's Secret (secret reads it) holds
// that very registration, id and key, it is taken up as it is (reused): a pod
// may already mount that Secret. Otherwise it is replaced with key, so there
// is never more than one registration per Agent. The common case, a new
// name, costs one call.
func registerAgent(ctx context.Context, server Server, poolID int, name string, key *rsa.PrivateKey, capabilities map[string]string,
	secret func() (*pipelines.AgentFiles, error)) (got *pipelines.TaskAgent, how registrationKind, err error) {
	pub := agentcrypto.PublicKeyOf(&key.PublicKey)
	want := pipelines.TaskAgent{
		Name:              name,
		Version:           AgentVersion,
		MaxParallelism:    1,
		ProvisioningState: "Provisioned",
		Authorization:     &pipelines.TaskAgentAuthorization{PublicKey: &pub},
		UserCapabilities:  capabilities,
	}
	got, err = server.AddAgent(ctx, poolID, want)
	if pipelines.IsTypeKey(err, pipelines.TypeKeyAgentExists) {
		how = registrationReplaced
		var existing *pipelines.TaskAgent
		if existing, err = findAgent(ctx, server, poolID, name); err == nil && existing != nil {
			files, serr := secret()
			if serr != nil {
				return nil, 0, serr
			}
			if files != nil && holds(files, existing) {
				return existing, registrationReused, nil
			}
		}
		if err == nil {
			got, err = replaceAgent(ctx, server, poolID, want, existing)
		}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("registering agent %q: %w", name, err)
	}
	if got.ID == 0 || got.Authorization == nil || got.Authorization.ClientID == "" || got.Authorization.AuthorizationURL == "" {
		return nil, 0, fmt.Errorf("registering agent %q: the server answered without an id, client id or authorization URL", name)
	}
	return got, how, nil
}

// findAgent returns the pool's agent of that name, or nil.
func findAgent(ctx context.Context, server Server, poolID int, name string) (*pipelines.TaskAgent, error) {
	found, err := server.ListAgents(ctx, poolID, name)
	if err != nil {
		return nil, fmt.Errorf("looking up the existing agent: %w", err)
	}
	for i := range found {
		if strings.EqualFold(found[i].Name, name) && found[i].ID != 0 {
			return &found[i], nil
		}
	}
	return nil, nil
}

// holds reports whether the agent files are those of registration reg: its
// id and the private half of its public key.
func holds(files *pipelines.AgentFiles, reg *pipelines.TaskAgent) bool {
	if files.Settings.AgentID != reg.ID || reg.Authorization == nil || reg.Authorization.PublicKey == nil ||
		reg.Authorization.ClientID == "" || files.Credentials.Data.ClientID != reg.Authorization.ClientID {
		return false
	}
	key, err := files.Key.PrivateKey()
	if err != nil {
		return false
	}
	regKey, err := reg.Authorization.PublicKey.RSA()
	return err == nil && key.PublicKey.Equal(regKey)
}

// replaceAgent gives the existing registration (nil: none was found)
// want's key and capabilities.
func replaceAgent(ctx context.Context, server Server, poolID int, want pipelines.TaskAgent, existing *pipelines.TaskAgent) (*pipelines.TaskAgent, error) {
	if existing == nil {
		// Gone in between: the name is free again.
		return server.AddAgent(ctx, poolID, want)
	}
	want.ID = existing.ID
	got, err := server.ReplaceAgent(ctx, poolID, want)
	if pipelines.StatusCode(err) == http.StatusNotFound {
		want.ID = 0
		return server.AddAgent(ctx, poolID, want)
	}
	return got, err
}

func (r *AgentReconciler) registrationFailed(agent *agentryv1.Agent, err error) (ctrl.Result, error) {
	meta.SetStatusCondition(&agent.Status.Conditions, metav1.Condition{
		Type: agentryv1.AgentRegisteredCondition, Status: metav1.ConditionFalse, Reason: reasonRegistrationFailed,
		Message: err.Error(), ObservedGeneration: agent.Generation,
	})
	r.Recorder.Eventf(agent, nil, corev1.EventTypeWarning, "RegistrationFailed", "Register", "Registration failed: %s", err.Error())
	failuresTotal.WithLabelValues(agent.Namespace, agent.Spec.PoolName, reasonRegistrationFailed).Inc()
	if errors.Is(err, errNoCredentials) {
		// The pool reports the missing Secret too; try again later.
		return ctrl.Result{RequeueAfter: serverRetryInterval}, nil
	}
	return ctrl.Result{}, err
}

// writeSecret writes the agent's three files into its Secret, replacing what
// an earlier, unrecorded registration may have left there.
func (r *AgentReconciler) writeSecret(ctx context.Context, agent *agentryv1.Agent, files pipelines.AgentFiles) error {
	data, err := files.Marshal()
	if err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: agent.Name, Namespace: agent.Namespace, Labels: agentLabels(agent)},
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
	if err := controllerutil.SetControllerReference(agent, secret, r.Scheme()); err != nil {
		return err
	}
	err = r.Create(ctx, secret)
	if err == nil {
		r.secrets.Store(agent.UID, secret.UID)
	}
	if !apierrors.IsAlreadyExists(err) {
		return wrapErr("creating secret", err)
	}
	var existing corev1.Secret
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(secret), &existing); err != nil {
		return fmt.Errorf("reading secret: %w", err)
	}
	if !metav1.IsControlledBy(&existing, agent) {
		return reconcile.TerminalError(fmt.Errorf("secret %s exists and does not belong to this agent", secret.Name))
	}
	patch := client.MergeFrom(existing.DeepCopy())
	existing.Data = data
	if err := r.Patch(ctx, &existing, patch); err != nil {
		return fmt.Errorf("updating secret: %w", err)
	}
	r.secrets.Store(agent.UID, existing.UID)
	return nil
}

// createPod creates the agent's pod (one that exists already is taken as
// created) and returns its name.
func (r *AgentReconciler) createPod(ctx context.Context, agent *agentryv1.Agent, pool *agentryv1.AgentPool) (string, error) {
	pod, err := agentPod(&pool.Spec.Template, agent)
	if err != nil {
		return "", reconcile.TerminalError(err)
	}
	if err := controllerutil.SetControllerReference(agent, pod, r.Scheme()); err != nil {
		return "", err
	}
	switch err := r.Create(ctx, pod); {
	case err == nil:
		// No Event: the pod's own Events tell its story.
		if at, err := time.Parse(time.RFC3339Nano, agent.Annotations[agentryv1.DemandQueuedAtAnnotation]); err == nil {
			queuedToPodCreated.WithLabelValues(agent.Namespace, pool.Name).Observe(r.now().Sub(at).Seconds())
		}
	case !apierrors.IsAlreadyExists(err):
		return "", fmt.Errorf("creating pod: %w", err)
	}
	return pod.Name, nil
}

// finish deregisters an agent whose pod ended (or never started) and
// deletes its Secret and pod, then the Agent itself. An agent that failed to
// start is kept, deregistered and without pod, for failedAgentRetention.
func (r *AgentReconciler) finish(ctx context.Context, agent, before *agentryv1.Agent) (ctrl.Result, error) {
	if err := r.deregister(ctx, agent); err != nil {
		return ctrl.Result{}, err
	}
	if c := meta.FindStatusCondition(agent.Status.Conditions, agentryv1.AgentStartedCondition); c != nil &&
		c.Status == metav1.ConditionFalse && agent.Status.Phase == agentryv1.AgentFailed && agent.Status.CompletionTime != nil {
		if left := agent.Status.CompletionTime.Add(failedAgentRetention).Sub(r.now()); left > 0 {
			if err := r.patchStatus(ctx, agent, before); err != nil {
				return ctrl.Result{}, err
			}
			if err := r.deleteDependents(ctx, agent); err != nil {
				return ctrl.Result{}, err
			}
			return ctrl.Result{RequeueAfter: left}, nil
		}
	}
	// The agent is deregistered and goes now, with its Secret and pod: its
	// final status would be written only to be deleted (a failure before
	// this point records it). The four writes (the Secret's and the pod's
	// deletion, the Agent's, and its finalizer's removal) do not wait for
	// each other: in any order the Agent is gone once the last two are done.
	// Its pod may outlive it for a moment; the pool counts such a pod
	// against maxAgents until it is gone. Should a write fail, the error
	// brings this reconcile back (an Agent being deleted with its finalizer
	// comes back through its deletion), and owner references have the
	// garbage collector remove the Secret and pod with the Agent.
	ctrl.LoggerFrom(ctx).Info("Deleting the finished agent", "phase", agent.Status.Phase)
	owner := agent.DeepCopy()
	dependents := make(chan error, 1)
	go func() { dependents <- r.deleteDependents(ctx, owner) }()
	unfinalized := agent.DeepCopy()
	finalized := make(chan error, 1)
	go func() { finalized <- r.removeFinalizer(ctx, unfinalized) }()
	err := client.IgnoreNotFound(r.Delete(ctx, agent))
	if err = errors.Join(<-dependents, <-finalized, err); err != nil {
		return ctrl.Result{}, err
	}
	r.rememberRemoved(agent.UID)
	agent.Status.DeepCopyInto(&before.Status) // gone: no status to write
	return ctrl.Result{}, nil
}

// removeFinalizer lets a deregistered Agent go: its finalizer has done its
// work. finish removes it itself, which saves a reconcile of the deletion.
func (r *AgentReconciler) removeFinalizer(ctx context.Context, agent *agentryv1.Agent) error {
	patch := client.MergeFrom(agent.DeepCopy())
	controllerutil.RemoveFinalizer(agent, agentryv1.DeregisterFinalizer)
	return client.IgnoreNotFound(r.Patch(ctx, agent, patch))
}

// rememberRemoved notes that the Agent with uid is gone.
func (r *AgentReconciler) rememberRemoved(uid types.UID) {
	now := r.now()
	r.removed.Store(uid, now)
	r.written.Delete(uid)
	r.prune(now)
}

// prune forgets the Agents removed, and the written copies kept, longer than
// removedMemory ago; it does the work at most every removedMemory/2.
func (r *AgentReconciler) prune(now time.Time) {
	if last := r.lastPrune.Load(); now.UnixNano()-last < int64(removedMemory/2) || !r.lastPrune.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	r.removed.Range(func(k, v any) bool {
		if now.Sub(v.(time.Time)) > removedMemory {
			r.removed.Delete(k)
		}
		return true
	})
	// A written copy the cache caught up with is forgotten by the next
	// reconcile; one whose Agent was not reconciled again goes here.
	r.written.Range(func(k, v any) bool {
		if now.Sub(v.(writtenAgent).at) > removedMemory {
			r.written.Delete(k)
		}
		return true
	})
}

func (r *AgentReconciler) wasRemoved(uid types.UID) bool {
	_, ok := r.removed.Load(uid)
	return ok
}

// reconcileDelete deregisters the agent, deletes its Secret and pod and
// lets it go.
func (r *AgentReconciler) reconcileDelete(ctx context.Context, agent *agentryv1.Agent) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(agent, agentryv1.DeregisterFinalizer) {
		return ctrl.Result{}, nil
	}
	before := agent.DeepCopy()
	if err := r.deregister(ctx, agent); err != nil {
		_ = r.patchStatus(ctx, agent, before)
		return ctrl.Result{}, err
	}
	if err := r.patchStatus(ctx, agent, before); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.deleteDependents(ctx, agent); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.removeFinalizer(ctx, agent); err != nil {
		return ctrl.Result{}, err
	}
	r.rememberRemoved(agent.UID)
	return ctrl.Result{}, nil
}

// deregister removes the agent's server registration, if it may have one.
// An agent that never recorded an id is looked up by name, in case the
// operator stopped between registering it and recording that.
func (r *AgentReconciler) deregister(ctx context.Context, agent *agentryv1.Agent) error {
	if c := meta.FindStatusCondition(agent.Status.Conditions, agentryv1.AgentRegisteredCondition); c != nil &&
		c.Status == metav1.ConditionFalse && c.Reason != reasonRegistrationFailed {
		return nil // deregistered, skipped or never registered
	}
	log := ctrl.LoggerFrom(ctx)
	pool := &agentryv1.AgentPool{}
	err := r.Get(ctx, client.ObjectKey{Namespace: agent.Namespace, Name: agent.Spec.PoolName}, pool)
	var server Server
	if err == nil {
		server, err = r.Credentials.server(ctx, r.Connect, pool)
	}
	if apierrors.IsNotFound(err) || errors.Is(err, errNoCredentials) {
		// Nothing can reach the server any more (the pool or its token is
		// gone, as when a namespace is deleted); holding the Agent would only
		// block that deletion.
		if agent.Status.AgentID != 0 {
			r.Recorder.Eventf(agent, nil, corev1.EventTypeWarning, "DeregistrationSkipped", "Deregister",
				"Cannot reach the server to deregister agent %d: %s", agent.Status.AgentID, err.Error())
		}
		setDeregistered(agent, "DeregistrationSkipped", "The pool or its credentials are gone: "+err.Error())
		return nil
	}
	if err != nil {
		return err
	}

	poolID := int(agent.Status.PoolID)
	if poolID == 0 {
		poolID = int(pool.Status.PoolID)
	}
	ids := []int{}
	if agent.Status.AgentID != 0 {
		ids = append(ids, int(agent.Status.AgentID))
	} else {
		if poolID == 0 {
			p, err := server.GetPoolByName(ctx, pool.Spec.Server.PoolName)
			if pipelines.IsTypeKey(err, pipelines.TypeKeyPoolNotFound) {
				setDeregistered(agent, "NeverRegistered", "The server has no such pool")
				return nil
			}
			if err != nil {
				return fmt.Errorf("resolving server pool: %w", err)
			}
			poolID = p.ID
		}
		found, err := server.ListAgents(ctx, poolID, agent.Name)
		if err != nil {
			return fmt.Errorf("looking up agent %q: %w", agent.Name, err)
		}
		for _, a := range found {
			if strings.EqualFold(a.Name, agent.Name) {
				ids = append(ids, a.ID)
			}
		}
	}
	for _, id := range ids {
		log.Info("Deregistering the agent", "agentId", id, "poolId", poolID)
		if err := server.DeleteAgent(ctx, poolID, id); err != nil {
			r.Recorder.Eventf(agent, nil, corev1.EventTypeWarning, "DeregistrationFailed", "Deregister",
				"Deregistering agent %d failed: %s", id, err.Error())
			return fmt.Errorf("deregistering agent %d: %w", id, err)
		}
		why := "finished"
		if !agent.Status.Phase.Finished() {
			why = "deleted"
			// A finished agent's deregistration is routine (and a burst's
			// worth of Events); one deleted before its pod ended is not.
			r.Recorder.Eventf(agent, nil, corev1.EventTypeNormal, "Deregistered", "Deregister",
				"Deregistered agent %d from server pool %q before its pod ended", id, pool.Spec.Server.PoolName)
		}
		deregistrationsTotal.WithLabelValues(agent.Namespace, pool.Name, why).Inc()
	}
	setDeregistered(agent, "Deregistered", "The agent's server registration was removed")
	return nil
}

// deleteDependents deletes the agent's Secret and pod, both at once. Owner
// references would have the garbage collector do it too; doing it here
// leaves nothing behind where no collector runs, and frees the key at once.
func (r *AgentReconciler) deleteDependents(ctx context.Context, agent *agentryv1.Agent) error {
	key := metav1.ObjectMeta{Name: agent.Name, Namespace: agent.Namespace}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if uid, ok := r.secrets.Load(agent.UID); ok {
			// The Secret this manager wrote: that very object goes, unread.
			err := r.Delete(gctx, &corev1.Secret{ObjectMeta: key}, client.Preconditions{UID: ptr.To(uid.(types.UID))})
			if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
				r.secrets.Delete(agent.UID)
				return nil
			}
			return wrapErr("deleting Secret "+key.Name, err)
		}
		return r.deleteOwned(gctx, agent, &corev1.Secret{ObjectMeta: key}, r.APIReader)
	})
	g.Go(func() error {
		// Agent pods are cached; a pod the cache does not show is looked
		// for on the API server.
		return r.deleteOwned(gctx, agent, &corev1.Pod{ObjectMeta: key}, r.Client, r.APIReader)
	})
	return g.Wait()
}

// deleteOwned deletes obj if agent controls it, reading it from the first
// reader that has it; the UID precondition keeps a same-named replacement
// made in between safe.
func (r *AgentReconciler) deleteOwned(ctx context.Context, agent *agentryv1.Agent, obj client.Object, readers ...client.Reader) error {
	found := false
	for _, reader := range readers {
		err := reader.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		if err == nil {
			found = true
			break
		}
		if !apierrors.IsNotFound(err) {
			return err
		}
	}
	if !found || !metav1.IsControlledBy(obj, agent) || !obj.GetDeletionTimestamp().IsZero() {
		return nil
	}
	opts := []client.DeleteOption{client.Preconditions{UID: ptr.To(obj.GetUID())}}
	if pod, ok := obj.(*corev1.Pod); ok && podEnded(pod) {
		// Its containers have exited: nothing is left to stop gracefully,
		// and the pod goes at once, as the pod garbage collector removes
		// terminated pods.
		opts = append(opts, client.GracePeriodSeconds(0))
	}
	err := r.Delete(ctx, obj, opts...)
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return wrapErr(fmt.Sprintf("deleting %T %s", obj, obj.GetName()), err)
}

func (r *AgentReconciler) patchStatus(ctx context.Context, agent, before *agentryv1.Agent) error {
	if equality.Semantic.DeepEqual(before.Status, agent.Status) {
		return nil
	}
	base := agent.ResourceVersion
	err := r.Status().Patch(ctx, agent, client.MergeFrom(before))
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	agent.Status.DeepCopyInto(&before.Status)
	if err == nil && agent.ResourceVersion != base {
		r.rememberWritten(agent, base)
	}
	return nil
}

// rememberWritten keeps the Agent a status write returned, which was made
// on top of version base, for fresher.
func (r *AgentReconciler) rememberWritten(agent *agentryv1.Agent, base string) {
	from := base
	if v, ok := r.written.Load(agent.UID); ok && v.(writtenAgent).agent.ResourceVersion == base {
		// A further write on top of this reconciler's last one: the cache
		// may still show the version before the first.
		from = v.(writtenAgent).from
	}
	now := r.now()
	r.written.Store(agent.UID, writtenAgent{agent: agent.DeepCopy(), from: from, at: now})
	r.prune(now)
}

// fresher returns the Agent this reconciler last wrote in place of the
// cache's copy when the cache still shows the version that write replaced:
// status writes bring no reconcile, but a pod's progress does, often before
// the cache has the write, and a reconcile of the older version would read
// the Secret to learn the registration it already recorded and write the
// same status again. Once the cache shows any other version it is used, and
// the written copy forgotten.
//
// An Agent whose status is held (holdUntil, not zero, is returned) is
// returned with that status while the cache shows the version it is to be
// written on; should anything else change the Agent first, the held status
// is dropped, and the reconcile learns the registration from the Secret as
// after a restart.
func (r *AgentReconciler) fresher(cached *agentryv1.Agent) (*agentryv1.Agent, time.Time) {
	v, ok := r.written.Load(cached.UID)
	if !ok {
		return cached, time.Time{}
	}
	w := v.(writtenAgent)
	if cached.ResourceVersion == w.from {
		return w.agent.DeepCopy(), w.holdUntil
	}
	r.written.CompareAndDelete(cached.UID, v)
	return cached, time.Time{}
}

// hold keeps agent, whose status is not written yet, for fresher until
// until; from is the version the status is to be written on.
func (r *AgentReconciler) hold(agent *agentryv1.Agent, from string, until time.Time) {
	now := r.now()
	r.written.Store(agent.UID, writtenAgent{agent: agent.DeepCopy(), from: from, at: now, holdUntil: until})
	r.prune(now)
}

// heldStatus is the status held for the Agent with uid, or nil.
func (r *AgentReconciler) heldStatus(uid types.UID) *agentryv1.AgentStatus {
	if v, ok := r.written.Load(uid); ok && !v.(writtenAgent).holdUntil.IsZero() {
		return &v.(writtenAgent).agent.Status
	}
	return nil
}

// minPositive is the shorter of two waits, a zero one meaning none.
func minPositive(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}

func setFinished(agent *agentryv1.Agent, phase agentryv1.AgentPhase) {
	agent.Status.Phase = phase
	if agent.Status.CompletionTime == nil {
		agent.Status.CompletionTime = ptr.To(metav1.Now())
	}
}

func setDeregistered(agent *agentryv1.Agent, reason, message string) {
	meta.SetStatusCondition(&agent.Status.Conditions, metav1.Condition{
		Type: agentryv1.AgentRegisteredCondition, Status: metav1.ConditionFalse, Reason: reason,
		Message: message, ObservedGeneration: agent.Generation,
	})
}

func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

func ptrTo[T any](v T) *T { return &v }
