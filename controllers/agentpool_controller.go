package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/scaling"
)

const (
	defaultPollInterval = 2 * time.Second
	// serverRetryInterval is the shortest wait before calling a server that
	// just failed again.
	serverRetryInterval = 10 * time.Second
)

// AgentPoolReconciler starts Agents for a pool's waiting jobs.
type AgentPoolReconciler struct {
	client.Client
	// APIReader reads without the cache: Secrets, which are not cached, and
	// the pool's Agents, which must include the ones created a moment ago.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Connect   Connector
}

// SetupWithManager registers the reconciler.
func (r *AgentPoolReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		// Status writes need no reconcile; the queue is polled anyway.
		For(&agentryv1.AgentPool{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&agentryv1.Agent{}).
		Named("agentpool").
		Complete(r)
}

// Reconcile reads the pool's job queue and starts the Agents it asks for.
func (r *AgentPoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pool := &agentryv1.AgentPool{}
	if err := r.Get(ctx, req.NamespacedName, pool); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !pool.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, pool)
	}
	if !controllerutil.ContainsFinalizer(pool, agentryv1.AgentsFinalizer) {
		patch := client.MergeFrom(pool.DeepCopy())
		controllerutil.AddFinalizer(pool, agentryv1.AgentsFinalizer)
		if err := r.Patch(ctx, pool, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}

	before := pool.DeepCopy()
	result, err := r.reconcileAgents(ctx, pool)
	pool.Status.ObservedGeneration = pool.Generation
	meta.SetStatusCondition(&pool.Status.Conditions, readyCondition(pool))
	if !equality.Semantic.DeepEqual(before.Status, pool.Status) {
		if perr := r.patchStatus(ctx, pool); perr != nil && err == nil {
			err = fmt.Errorf("writing status: %w", perr)
		}
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	return result, nil
}

// patchStatus writes the whole status as one merge patch. This reconciler
// owns the status; sending all of it, zero counts included, keeps the printer
// columns showing 0 rather than nothing (a diff against the old status would
// leave unchanged zeros out).
func (r *AgentPoolReconciler) patchStatus(ctx context.Context, pool *agentryv1.AgentPool) error {
	body, err := json.Marshal(map[string]any{"status": pool.Status})
	if err != nil {
		return err
	}
	return r.Status().Patch(ctx, pool, client.RawPatch(types.MergePatchType, body))
}

// reconcileAgents observes the server's queue and the pool's Agents, records
// what it saw in the status and creates the Agents that are missing.
func (r *AgentPoolReconciler) reconcileAgents(ctx context.Context, pool *agentryv1.AgentPool) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	interval := pollInterval(pool)
	retry := ctrl.Result{RequeueAfter: max(interval, serverRetryInterval)}

	server, err := serverFor(ctx, r.APIReader, r.Connect, pool)
	if err != nil {
		setServerUnreachable(pool, err)
		log.Info("Cannot read the pool's credentials", "error", err.Error())
		return retry, nil
	}
	serverPool, err := server.GetPoolByName(ctx, pool.Spec.Server.PoolName)
	if err != nil {
		setServerUnreachable(pool, err)
		log.Info("Cannot resolve the server pool", "serverPool", pool.Spec.Server.PoolName, "error", err.Error())
		return retry, nil
	}
	pool.Status.PoolID = int32(serverPool.ID)
	requests, err := server.ListJobRequests(ctx, serverPool.ID)
	if err != nil {
		setServerUnreachable(pool, err)
		log.Info("Cannot read the pool's job queue", "poolId", serverPool.ID, "error", err.Error())
		return retry, nil
	}
	meta.SetStatusCondition(&pool.Status.Conditions, metav1.Condition{
		Type: agentryv1.PoolServerReachable, Status: metav1.ConditionTrue, Reason: "PoolFound",
		Message: fmt.Sprintf("The server has pool %q with id %d", serverPool.Name, serverPool.ID), ObservedGeneration: pool.Generation,
	})

	agents, err := r.ownedAgents(ctx, pool)
	if err != nil {
		return ctrl.Result{}, err
	}
	states := make([]scaling.AgentState, len(agents))
	for i, a := range agents {
		states[i] = scaling.AgentState{
			AgentID:  int(a.Status.AgentID),
			Running:  a.Status.Phase == agentryv1.AgentRunning,
			Finished: a.Status.Phase.Finished(),
			Deleting: !a.DeletionTimestamp.IsZero(),
		}
	}
	tally := scaling.Count(requests, states)
	if err := r.recordJobRequests(ctx, agents, tally.JobRequests); err != nil {
		return ctrl.Result{}, err
	}

	start := 0
	if hasAgentContainer(&pool.Spec.Template) {
		start = scaling.Decide(tally.Waiting, int(pool.Spec.MinIdle), int(maxAgents(pool)), tally.Available(), tally.Total)
	}
	if start > 0 {
		log.Info("Starting agents", "count", start, "waitingJobs", tally.Waiting, "available", tally.Available(), "total", tally.Total)
	}
	created := 0
	for range start {
		if err := r.createAgent(ctx, pool); err != nil {
			err = fmt.Errorf("creating agent: %w", err)
			setCounts(pool, tally, created)
			return ctrl.Result{}, err
		}
		created++
	}
	setCounts(pool, tally, created)
	return ctrl.Result{RequeueAfter: interval}, nil
}

// ownedAgents lists the pool's Agents from the API server: the cache may not
// yet hold Agents created by the previous reconcile, and counting too few
// would start too many.
func (r *AgentPoolReconciler) ownedAgents(ctx context.Context, pool *agentryv1.AgentPool) ([]agentryv1.Agent, error) {
	var list agentryv1.AgentList
	if err := r.APIReader.List(ctx, &list, client.InNamespace(pool.Namespace),
		client.MatchingLabels{agentryv1.PoolLabel: pool.Name}); err != nil {
		return nil, fmt.Errorf("listing agents: %w", err)
	}
	owned := list.Items[:0]
	for _, a := range list.Items {
		if metav1.IsControlledBy(&a, pool) {
			owned = append(owned, a)
		}
	}
	return owned, nil
}

// recordJobRequests writes the job each busy Agent runs into its status. It
// is done here, not by the Agent reconciler, because the pool reads the queue
// once for all its agents.
func (r *AgentPoolReconciler) recordJobRequests(ctx context.Context, agents []agentryv1.Agent, jobs map[int]int64) error {
	for i := range agents {
		a := &agents[i]
		job, ok := jobs[int(a.Status.AgentID)]
		if !ok || a.Status.AgentID == 0 || a.Status.JobRequestID == job {
			continue
		}
		patch := client.MergeFrom(a.DeepCopy())
		a.Status.JobRequestID = job
		if err := r.Status().Patch(ctx, a, patch); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("recording job request of agent %s: %w", a.Name, err)
		}
	}
	return nil
}

func (r *AgentPoolReconciler) createAgent(ctx context.Context, pool *agentryv1.AgentPool) error {
	agent := &agentryv1.Agent{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: pool.Name + "-",
			Namespace:    pool.Namespace,
			Labels:       map[string]string{agentryv1.PoolLabel: pool.Name},
		},
		Spec: agentryv1.AgentSpec{PoolName: pool.Name},
	}
	if err := controllerutil.SetControllerReference(pool, agent, r.Scheme()); err != nil {
		return err
	}
	return r.Create(ctx, agent)
}

// reconcileDelete deletes the pool's Agents and keeps the pool until they are
// gone: deregistering them needs the pool's server and credentials.
func (r *AgentPoolReconciler) reconcileDelete(ctx context.Context, pool *agentryv1.AgentPool) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(pool, agentryv1.AgentsFinalizer) {
		return ctrl.Result{}, nil
	}
	agents, err := r.ownedAgents(ctx, pool)
	if err != nil {
		return ctrl.Result{}, err
	}
	for i := range agents {
		if agents[i].DeletionTimestamp.IsZero() {
			if err := r.Delete(ctx, &agents[i]); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, fmt.Errorf("deleting agent %s: %w", agents[i].Name, err)
			}
		}
	}
	if len(agents) > 0 {
		ctrl.LoggerFrom(ctx).Info("Waiting for the pool's agents to be deregistered", "agents", len(agents))
		// Their deletion wakes this reconciler; the requeue is a safety net.
		return ctrl.Result{RequeueAfter: serverRetryInterval}, nil
	}
	patch := client.MergeFrom(pool.DeepCopy())
	controllerutil.RemoveFinalizer(pool, agentryv1.AgentsFinalizer)
	return ctrl.Result{}, client.IgnoreNotFound(r.Patch(ctx, pool, patch))
}

func pollInterval(pool *agentryv1.AgentPool) time.Duration {
	if d := pool.Spec.PollInterval; d != nil && d.Duration > 0 {
		return d.Duration
	}
	return defaultPollInterval
}

func maxAgents(pool *agentryv1.AgentPool) int32 {
	return ptr.Deref(pool.Spec.MaxAgents, agentryv1.DefaultMaxAgents)
}

func setServerUnreachable(pool *agentryv1.AgentPool, err error) {
	meta.SetStatusCondition(&pool.Status.Conditions, metav1.Condition{
		Type: agentryv1.PoolServerReachable, Status: metav1.ConditionFalse, Reason: serverErrorReason(err),
		Message: err.Error(), ObservedGeneration: pool.Generation,
	})
}

func setCounts(pool *agentryv1.AgentPool, t scaling.Tally, created int) {
	pool.Status.WaitingJobs = int32(t.Waiting)
	pool.Status.Agents = agentryv1.AgentCounts{
		Starting: int32(t.Starting + created),
		Idle:     int32(t.Idle),
		Busy:     int32(t.Busy),
		Total:    int32(t.Starting + t.Idle + t.Busy + created),
	}
}

// readyCondition says whether the pool can start agents, from what the
// reconcile observed.
func readyCondition(pool *agentryv1.AgentPool) metav1.Condition {
	c := metav1.Condition{Type: agentryv1.PoolReady, ObservedGeneration: pool.Generation}
	reachable := meta.FindStatusCondition(pool.Status.Conditions, agentryv1.PoolServerReachable)
	switch {
	case !hasAgentContainer(&pool.Spec.Template):
		c.Status, c.Reason = metav1.ConditionFalse, "InvalidTemplate"
		c.Message = fmt.Sprintf("The pod template has no container named %q", agentryv1.AgentContainerName)
	case reachable == nil:
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, "Pending", "The server was not asked yet"
	case reachable.Status != metav1.ConditionTrue:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, reachable.Reason, reachable.Message
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "Ready", "Agents are started for waiting jobs"
	}
	return c
}
