package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/scaling"
)

const (
	// createConcurrency bounds the creates of one round of starts (one
	// reconcile's); rounds from successive reconciles may overlap.
	createConcurrency = 32
	// createTimeout bounds one round of Agent creates.
	createTimeout = time.Minute
	// serverRetryInterval is the shortest wait before calling a server that
	// just failed again.
	serverRetryInterval = 10 * time.Second
	// watchResyncInterval is how often a pool whose queue is watched is
	// reconciled anyway: a safety net, the watch wakes it on every change.
	watchResyncInterval = 30 * time.Second
	// defaultOrphanCheckInterval is how often a pool compares its server
	// registrations with its Agents.
	defaultOrphanCheckInterval = time.Minute
)

// AgentPoolReconciler starts Agents for a pool's waiting jobs, removes idle
// ones beyond the demand, keeps busy agents' pods from eviction and collects
// registrations and Agents that lost their other half.
type AgentPoolReconciler struct {
	client.Client
	// APIReader reads without the cache: Secrets, which are not cached, and
	// the pool's Agents, which must include the ones created a moment ago.
	APIReader client.Reader
	// Credentials reads the pools' admin tokens.
	Credentials *credentials
	Recorder    events.EventRecorder
	Connect     Connector
	// Watches runs the queue watches; nil polls always.
	Watches *queueWatchers
	// Jobs tells the Agent reconciler which jobs the server says its agents
	// hold; the queue watch fills it, or this reconciler when it polls.
	Jobs *agentJobs
	// NewAgents receives every Agent the pool creates, for the Agent
	// reconciler; nil hands nothing over.
	NewAgents *newAgents
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// OrphanCheckInterval is how often orphans are looked for.
	OrphanCheckInterval time.Duration

	lastOrphanCheck sync.Map // types.NamespacedName → time.Time
	// vanished holds, per pool, the Agents the last orphan check found
	// registered in their status but not on the server.
	vanished sync.Map // types.NamespacedName → map[types.UID]bool
	// created are the Agents this reconciler created that the cache may not
	// show yet, and the creates under way.
	created createdAgents
	// createFailures counts, per pool, the start rounds in a row in which a
	// create failed, for the back-off before the next.
	createFailures sync.Map // types.NamespacedName → *atomic.Int32
	// wakes queues pool reconciles from outside the watches.
	wakes chan event.GenericEvent
	// lastStatusWrite is when each pool's status was last written.
	lastStatusWrite sync.Map // types.NamespacedName → time.Time
	// serverPools holds each pool's server pool, looked up by name.
	serverPools sync.Map // types.NamespacedName → cachedServerPool
}

// createdAgentsMemory is how long a created Agent the cache does not show
// is counted anyway. The cache shows a new Agent within a second; one it
// never shows was deleted before it could.
const createdAgentsMemory = 10 * time.Second

// createdAgents remembers, per pool, the Agents being created and the ones
// created and not yet seen in the cache.
type createdAgents struct {
	mu    sync.Mutex
	pools map[types.NamespacedName]map[string]time.Time
	// creating counts the creates whose call has not returned.
	creating map[types.NamespacedName]int
}

// begin notes n creates about to be made.
func (c *createdAgents) begin(pool types.NamespacedName, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.creating == nil {
		c.creating = map[types.NamespacedName]int{}
	}
	c.creating[pool] += n
}

// done ends one create; name is the created Agent's, empty when the create
// failed. In one step, so that the Agent is never counted twice or not at all.
func (c *createdAgents) done(pool types.NamespacedName, name string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.creating[pool]
	if !ok {
		return // the pool was forgotten (deleted) meanwhile
	}
	c.creating[pool] = max(n-1, 0)
	if name != "" {
		c.addLocked(pool, name, now)
	}
}

func (c *createdAgents) add(pool types.NamespacedName, name string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addLocked(pool, name, now)
}

func (c *createdAgents) addLocked(pool types.NamespacedName, name string, now time.Time) {
	if c.pools == nil {
		c.pools = map[types.NamespacedName]map[string]time.Time{}
	}
	if c.pools[pool] == nil {
		c.pools[pool] = map[string]time.Time{}
	}
	c.pools[pool][name] = now
}

// pending returns the pool's created Agents not in seen, and the number of
// creates still under way; it forgets the Agents seen or created longer than
// createdAgentsMemory ago.
func (c *createdAgents) pending(pool types.NamespacedName, seen map[string]bool, now time.Time) (names []string, creating int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, at := range c.pools[pool] {
		if seen[name] || now.Sub(at) > createdAgentsMemory {
			delete(c.pools[pool], name)
			continue
		}
		names = append(names, name)
	}
	return names, c.creating[pool]
}

func (c *createdAgents) forget(pool types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pools, pool)
	delete(c.creating, pool)
}

// SetupWithManager registers the reconciler.
func (r *AgentPoolReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		// Status writes need no reconcile; the queue is watched or polled.
		For(&agentryv1.AgentPool{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// Only what changes the count wakes the pool: an Agent's creation,
		// deletion, phase or registration, not each condition it records.
		Owns(&agentryv1.Agent{}, builder.WithPredicates(agentCountChanged)).
		Owns(&policyv1.PodDisruptionBudget{}).
		// An agent pod that ended frees its place at once, before its Agent
		// is updated or deleted.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(poolOfPod), builder.WithPredicates(podEndedNow)).
		Named("agentpool")
	r.wakes = make(chan event.GenericEvent, 64)
	b = b.WatchesRawSource(source.Channel(r.wakes, &handler.EnqueueRequestForObject{}))
	if r.Watches != nil {
		if err := mgr.Add(r.Watches); err != nil {
			return err
		}
		b = b.WatchesRawSource(source.Channel(r.Watches.events, &handler.EnqueueRequestForObject{}))
	}
	return b.Complete(r)
}

// agentCountChanged passes Agent updates that can change how the pool counts
// its agents.
var agentCountChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		before, ok1 := e.ObjectOld.(*agentryv1.Agent)
		after, ok2 := e.ObjectNew.(*agentryv1.Agent)
		if !ok1 || !ok2 {
			return true
		}
		return before.Status.Phase != after.Status.Phase || before.Status.AgentID != after.Status.AgentID ||
			before.DeletionTimestamp.IsZero() != after.DeletionTimestamp.IsZero() ||
			meta.IsStatusConditionTrue(before.Status.Conditions, agentryv1.AgentRegisteredCondition) !=
				meta.IsStatusConditionTrue(after.Status.Conditions, agentryv1.AgentRegisteredCondition)
	},
}

// poolOfPod maps an agent pod to its pool.
func poolOfPod(_ context.Context, o client.Object) []reconcile.Request {
	pool := o.GetLabels()[agentryv1.PoolLabel]
	if pool == "" || o.GetLabels()[agentryv1.AgentLabel] == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: pool}}}
}

// podEndedNow passes only the update in which a pod ends.
var podEndedNow = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		before, ok1 := e.ObjectOld.(*corev1.Pod)
		after, ok2 := e.ObjectNew.(*corev1.Pod)
		return ok1 && ok2 && !podEnded(before) && podEnded(after)
	},
}

func (r *AgentPoolReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile reads the pool's job queue, starts the Agents it asks for and
// removes the ones it no longer needs.
func (r *AgentPoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pool := &agentryv1.AgentPool{}
	if err := r.Get(ctx, req.NamespacedName, pool); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !pool.DeletionTimestamp.IsZero() {
		r.forget(req.NamespacedName)
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
	obs := &poolObservation{}
	result, err := r.reconcileAgents(ctx, pool, obs)
	pool.Status.ObservedGeneration = pool.Generation
	meta.SetStatusCondition(&pool.Status.Conditions, readyCondition(pool, obs))
	if !equality.Semantic.DeepEqual(before.Status, pool.Status) {
		if wait := r.countsWait(req.NamespacedName, &before.Status, &pool.Status); wait > 0 {
			if result.RequeueAfter == 0 || wait < result.RequeueAfter {
				result.RequeueAfter = wait
			}
		} else if perr := r.patchStatus(ctx, pool); perr != nil {
			if err == nil {
				err = fmt.Errorf("writing status: %w", perr)
			}
		} else {
			r.lastStatusWrite.Store(req.NamespacedName, r.now())
		}
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	return result, nil
}

// statusCountsInterval is the least time between two status writes that
// change nothing but the counts: during a burst every change of the queue
// would write one, and each write holds the reconcile that the next jobs
// wait for.
const statusCountsInterval = time.Second

// countsWait is how long to hold a status write that changes only the
// counts; 0 writes it now.
func (r *AgentPoolReconciler) countsWait(key types.NamespacedName, before, after *agentryv1.AgentPoolStatus) time.Duration {
	b, a := before.DeepCopy(), after.DeepCopy()
	b.Agents, a.Agents, b.WaitingJobs, a.WaitingJobs = agentryv1.AgentCounts{}, agentryv1.AgentCounts{}, 0, 0
	if !equality.Semantic.DeepEqual(b, a) {
		return 0
	}
	last, ok := r.lastStatusWrite.Load(key)
	if !ok {
		return 0
	}
	return max(statusCountsInterval-r.now().Sub(last.(time.Time)), 0)
}

func (r *AgentPoolReconciler) forget(key types.NamespacedName) {
	if r.Watches != nil {
		r.Watches.Stop(key)
	}
	r.lastOrphanCheck.Delete(key)
	r.vanished.Delete(key)
	r.created.forget(key)
	r.createFailures.Delete(key)
	r.lastStatusWrite.Delete(key)
	r.serverPools.Delete(key)
	if r.Jobs != nil {
		r.Jobs.forget(key)
	}
	forgetPoolMetrics(key.Namespace, key.Name)
}

// poolObservation is what one reconcile learnt beyond the status fields,
// for the Ready condition.
type poolObservation struct {
	// backoff, when not empty, says why and how long agent starts are held.
	backoff string
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
// what it saw in the status, creates the Agents that are missing and removes
// the surplus.
func (r *AgentPoolReconciler) reconcileAgents(ctx context.Context, pool *agentryv1.AgentPool, obs *poolObservation) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	now := r.now()
	interval := durationOr(pool.Spec.PollInterval, agentryv1.DefaultPollInterval)
	retry := ctrl.Result{RequeueAfter: max(interval, serverRetryInterval)}

	token, err := r.Credentials.token(ctx, pool)
	if err != nil {
		setServerUnreachable(pool, err)
		log.Info("Cannot read the pool's credentials", "error", err.Error())
		return retry, nil
	}
	server := r.Connect(pool.Spec.Server, token)
	serverPool, err := r.serverPool(ctx, pool, server, token)
	if err != nil {
		setServerUnreachable(pool, err)
		log.Info("Cannot resolve the server pool", "serverPool", pool.Spec.Server.PoolName, "error", err.Error())
		return retry, nil
	}
	poolID := serverPool.ID
	pool.Status.PoolID = int32(poolID)

	requests, watching, err := r.readQueue(ctx, pool, server, token, poolID)
	if err != nil {
		r.serverPools.Delete(client.ObjectKeyFromObject(pool))
		setServerUnreachable(pool, err)
		log.Info("Cannot read the pool's job queue", "poolId", poolID, "error", err.Error())
		return retry, nil
	}
	meta.SetStatusCondition(&pool.Status.Conditions, metav1.Condition{
		Type: agentryv1.PoolServerReachable, Status: metav1.ConditionTrue, Reason: "PoolFound",
		Message: fmt.Sprintf("The server has pool %q with id %d", serverPool.Name, serverPool.ID), ObservedGeneration: pool.Generation,
	})
	next := interval
	if watching {
		next = min(watchResyncInterval, r.orphanCheckInterval())
	}

	if err := r.ensureDisruptionBudget(ctx, pool); err != nil {
		return ctrl.Result{}, err
	}
	agents, err := r.countedAgents(ctx, pool, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	pods, err := r.agentPods(ctx, pool)
	if err != nil {
		return ctrl.Result{}, err
	}
	states := agentStates(agents, pods)
	caps := poolCapabilities(pool)
	tally := scaling.Count(requests, states, caps.Satisfy)
	if err := r.collectOrphans(ctx, pool, server, poolID, now); err != nil {
		// Orphans are collected next time; demand must not wait for them.
		log.Info("Cannot look for orphaned registrations", "error", err.Error())
	}

	decide := func() int {
		if !hasAgentContainer(&pool.Spec.Template) {
			return 0
		}
		return scaling.Decide(tally.Waiting, int(pool.Spec.MinIdle), int(maxAgents(pool)), tally.Available(), tally.Total)
	}
	start := decide()
	if start > 0 && watching {
		// The watch's snapshot was taken before the Agents were listed: a job
		// that an agent took, ran and left with in between looks waiting there,
		// with no agent for it. Agents are started on a queue read after the
		// list.
		state, err := server.WatchQueue(ctx, poolID, 0, 0) // revision 0: the queue now
		if err != nil {
			r.serverPools.Delete(client.ObjectKeyFromObject(pool))
			setServerUnreachable(pool, err)
			log.Info("Cannot read the pool's job queue", "poolId", poolID, "error", err.Error())
			return retry, nil
		}
		requests = state.JobRequests
		tally = scaling.Count(requests, states, caps.Satisfy)
		start = decide()
	}
	if start > 0 {
		failures, last, reason := startFailures(agents)
		if wait := scaling.StartRetryAfter(failures, last, now); wait > 0 {
			obs.backoff = fmt.Sprintf("%d agents in a row failed to start (last: %s); the next starts in %s",
				failures, reason, wait.Round(time.Second))
			log.Info("Holding agent starts after start failures", "failures", failures, "retryIn", wait)
			start, next = 0, min(next, wait)
		}
	}
	log.V(1).Info("Observed the queue", "watching", watching, "requests", len(requests), "waitingJobs", tally.Waiting,
		"available", tally.Available(), "total", tally.Total, "start", start)
	if start > 0 {
		log.Info("Starting agents", "count", start, "waitingJobs", tally.Waiting, "available", tally.Available(), "total", tally.Total)
	}
	demand := demandQueueTimes(requests, tally, caps)
	queued := make([]*time.Time, start)
	for i := range queued {
		if k := tally.Available() + i; k < len(demand) {
			queued[i] = &demand[k]
		}
	}
	r.startAgents(ctx, pool, queued)
	setCounts(pool, tally, start)

	r.wakeBusyAgents(ctx, pool, agents)

	if start == 0 {
		remove, wait := scaling.Surplus(tally, int(pool.Spec.MinIdle), int(maxAgents(pool)),
			durationOr(pool.Spec.ScaleDownDelay, agentryv1.DefaultScaleDownDelay), now)
		if wait > 0 {
			next = min(next, wait)
		}
		if err := r.scaleDown(ctx, pool, server, poolID, agents, remove, now); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// serverPoolTTL is how long a pool's server pool, once looked up by name,
// is used without asking again. A burst reconciles a pool on every change
// of its queue; the pool's id does not change with them. A failed call to
// the server forgets it at once.
const serverPoolTTL = 10 * time.Second

// cachedServerPool is a server pool as looked up for a pool's server
// settings and token.
type cachedServerPool struct {
	config string
	pool   pipelines.TaskAgentPool
	at     time.Time
}

// serverPool returns the pool's server pool, looked up by name at most once
// per serverPoolTTL.
func (r *AgentPoolReconciler) serverPool(ctx context.Context, pool *agentryv1.AgentPool, server Server, token string) (*pipelines.TaskAgentPool, error) {
	key := client.ObjectKeyFromObject(pool)
	sum := sha256.Sum256([]byte(pool.Spec.Server.URL + "\x00" + string(pool.Spec.Server.AuthType) + "\x00" + pool.Spec.Server.PoolName + "\x00" + token))
	config := hex.EncodeToString(sum[:])
	now := r.now()
	if v, ok := r.serverPools.Load(key); ok {
		if c := v.(cachedServerPool); c.config == config && now.Sub(c.at) < serverPoolTTL {
			return &c.pool, nil
		}
	}
	p, err := server.GetPoolByName(ctx, pool.Spec.Server.PoolName)
	if err != nil {
		r.serverPools.Delete(key)
		return nil, err
	}
	r.serverPools.Store(key, cachedServerPool{config: config, pool: *p, at: now})
	return p, nil
}

// readQueue returns the pool's unfinished job requests: from the queue
// watch when it runs, otherwise read now (servers without the watch, or
// while it reconnects). watching says the watch will wake the pool.
func (r *AgentPoolReconciler) readQueue(ctx context.Context, pool *agentryv1.AgentPool, server Server, token string, poolID int) (requests []pipelines.TaskAgentJobRequest, watching bool, err error) {
	if r.Watches != nil {
		requests, current, _ := r.Watches.Queue(pool, server, token, poolID)
		if current {
			return requests, true, nil
		}
	}
	requests, err = server.ListJobRequests(ctx, poolID)
	if err == nil && r.Jobs != nil {
		r.Jobs.observe(ctx, client.ObjectKeyFromObject(pool), requests)
	}
	return requests, false, err
}

// wakeBusyAgents wakes the Agents whose status is behind what the server
// says of their job. The Agent reconciler records a job when the queue shows
// it; this catches a wake-up that found the Agent's cached status behind.
func (r *AgentPoolReconciler) wakeBusyAgents(ctx context.Context, pool *agentryv1.AgentPool, agents []agentryv1.Agent) {
	if r.Jobs == nil {
		return
	}
	key := client.ObjectKeyFromObject(pool)
	for i := range agents {
		a := &agents[i]
		job, ok := r.Jobs.lookup(key, int(a.Status.AgentID))
		if !ok || !a.DeletionTimestamp.IsZero() || a.Status.Phase.Finished() || (!job.Finished && a.Status.JobRequestID == job.RequestID) {
			continue
		}
		r.Jobs.wake(ctx, agentWake{agent: client.ObjectKeyFromObject(a), finished: job.Finished})
	}
}

// poolCapabilities are what the pool's agents offer to jobs' demands: the
// system capabilities agentry-agent reports (the OS and architecture the
// template's node selector pins, the agent version) and the pool's user
// capabilities, which win.
func poolCapabilities(pool *agentryv1.AgentPool) pipelines.Capabilities {
	system := map[string]string{"Agent.Version": AgentVersion, "Agent.OS": "Linux"}
	sel := pool.Spec.Template.Spec.NodeSelector
	switch sel[corev1.LabelOSStable] {
	case "windows":
		system["Agent.OS"] = "Windows_NT"
	case "darwin":
		system["Agent.OS"] = "Darwin"
	}
	switch sel[corev1.LabelArchStable] {
	case "amd64":
		system["Agent.OSArchitecture"] = "X64"
	case "arm64":
		system["Agent.OSArchitecture"] = "ARM64"
	}
	return pipelines.NewCapabilities(system, userCapabilities(pool))
}

// userCapabilities are registered with every agent of the pool: the pool's
// own, and the marker that says the registration is this pool's.
func userCapabilities(pool *agentryv1.AgentPool) map[string]string {
	caps := make(map[string]string, len(pool.Spec.Capabilities)+1)
	for k, v := range pool.Spec.Capabilities {
		caps[k] = v
	}
	caps[agentryv1.PoolCapability] = poolMarker(pool)
	return caps
}

func poolMarker(pool *agentryv1.AgentPool) string { return pool.Namespace + "/" + pool.Name }

// agentPods returns the pool's agent pods from the cache, by name: whether
// each has ended (the pod says so before its Agent does).
func (r *AgentPoolReconciler) agentPods(ctx context.Context, pool *agentryv1.AgentPool) (map[string]bool, error) {
	var pods corev1.PodList
	// Read only (names and phases), on every reconcile of a busy pool: the
	// cache's own objects, not a copy of each.
	if err := r.List(ctx, &pods, client.InNamespace(pool.Namespace), client.MatchingLabels{agentryv1.PoolLabel: pool.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing agent pods: %w", err)
	}
	ended := make(map[string]bool, len(pods.Items))
	for i := range pods.Items {
		ended[pods.Items[i].Name] = podEnded(&pods.Items[i])
	}
	return ended, nil
}

func podEnded(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// agentStates describes the pool's Agents for the scaling math. An Agent
// whose pod ended (pods says which have) still takes room until it is
// gone: it may still be registered, and maxAgents caps Agent objects, not
// just pods. So does a pod that outlives its Agent (a finished agent's
// Agent goes as its pod is told to stop): maxAgents caps pods too. Only an
// Agent kept after it failed to start (deregistered, without pod) counts
// for nothing.
func agentStates(agents []agentryv1.Agent, pods map[string]bool) []scaling.AgentState {
	states := make([]scaling.AgentState, len(agents), len(agents)+len(pods))
	named := make(map[string]bool, len(agents))
	for i, a := range agents {
		named[a.Name] = true
		states[i] = scaling.AgentState{
			Name:     a.Name,
			AgentID:  int(a.Status.AgentID),
			Running:  a.Status.Phase == agentryv1.AgentRunning,
			Finished: retainedStartFailure(&a),
			Deleting: !a.DeletionTimestamp.IsZero() || a.Status.Phase.Finished() ||
				(a.Status.PodName != "" && pods[a.Status.PodName]),
			HeldJob: a.Status.JobRequestID,
		}
		if a.Status.StartTime != nil {
			states[i].RunningSince = a.Status.StartTime.Time
		}
	}
	for name := range pods {
		if !named[name] {
			states = append(states, scaling.AgentState{Name: name, Deleting: true})
		}
	}
	return states
}

// retainedStartFailure reports whether the Agent is one kept after its pod
// failed to start, deregistered and without pod.
func retainedStartFailure(a *agentryv1.Agent) bool {
	c := meta.FindStatusCondition(a.Status.Conditions, agentryv1.AgentStartedCondition)
	return a.Status.Phase == agentryv1.AgentFailed && c != nil && c.Status == metav1.ConditionFalse &&
		!meta.IsStatusConditionTrue(a.Status.Conditions, agentryv1.AgentRegisteredCondition)
}

// startFailures counts the pool's retained Agents that failed to start since
// an agent last started, with the time and reason of the newest.
func startFailures(agents []agentryv1.Agent) (n int, last time.Time, reason string) {
	var lastStart time.Time
	for _, a := range agents {
		if a.Status.StartTime != nil && a.Status.StartTime.After(lastStart) {
			lastStart = a.Status.StartTime.Time
		}
	}
	for _, a := range agents {
		c := meta.FindStatusCondition(a.Status.Conditions, agentryv1.AgentStartedCondition)
		if a.Status.Phase != agentryv1.AgentFailed || c == nil || c.Status != metav1.ConditionFalse || a.Status.CompletionTime == nil {
			continue
		}
		if at := a.Status.CompletionTime.Time; at.After(lastStart) {
			n++
			if at.After(last) {
				last, reason = at, c.Reason+": "+c.Message
			}
		}
	}
	return n, last, reason
}

// demandQueueTimes returns the queue times of the waiting requests the pool
// meets, oldest first: the i-th agent that is or becomes available serves
// the i-th of them.
func demandQueueTimes(requests []pipelines.TaskAgentJobRequest, t scaling.Tally, caps pipelines.Capabilities) []time.Time {
	var times []time.Time
	for i := range requests {
		r := &requests[i]
		if r.Waiting() && (r.ReservedAgent == nil || r.ReservedAgent.ID == 0) && r.QueueTime != nil && caps.Satisfy(r.Demands) {
			times = append(times, *r.QueueTime)
		}
	}
	slices.SortFunc(times, time.Time.Compare)
	return times
}

// ownedAgents lists the pool's Agents from the API server, not the cache.
func (r *AgentPoolReconciler) ownedAgents(ctx context.Context, pool *agentryv1.AgentPool) ([]agentryv1.Agent, error) {
	return r.listOwnedAgents(ctx, r.APIReader, pool)
}

// countedAgents lists the pool's Agents for counting: from the cache, plus
// the ones this reconciler created that the cache does not show yet
// (counted as starting), so a burst's Agents are never counted too few and
// started twice.
//
// The Agents share their maps and slices with the cache (a burst reconciles
// the pool on every change of its queue, and copying every Agent each time
// held about 5 % of the manager's CPU samples over a burst, perf record):
// they are read only, and copied before anything changes one.
func (r *AgentPoolReconciler) countedAgents(ctx context.Context, pool *agentryv1.AgentPool, now time.Time) ([]agentryv1.Agent, error) {
	agents, err := r.listOwnedAgents(ctx, r.Client, pool, client.UnsafeDisableDeepCopy)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(agents))
	for _, a := range agents {
		seen[a.Name] = true
	}
	names, creating := r.created.pending(client.ObjectKeyFromObject(pool), seen, now)
	for _, name := range names {
		agents = append(agents, agentryv1.Agent{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: pool.Namespace}})
	}
	// An Agent still being created counts as one starting: it has no name yet.
	for range creating {
		agents = append(agents, agentryv1.Agent{ObjectMeta: metav1.ObjectMeta{Namespace: pool.Namespace}})
	}
	return agents, nil
}

func (r *AgentPoolReconciler) listOwnedAgents(ctx context.Context, reader client.Reader, pool *agentryv1.AgentPool, opts ...client.ListOption) ([]agentryv1.Agent, error) {
	var list agentryv1.AgentList
	opts = append([]client.ListOption{client.InNamespace(pool.Namespace), client.MatchingLabels{agentryv1.PoolLabel: pool.Name}}, opts...)
	if err := reader.List(ctx, &list, opts...); err != nil {
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

// ensureDisruptionBudget makes the pool's PodDisruptionBudget: it selects
// the pool's protected agent pods (see agentryv1.ProtectedLabel) and allows
// none of them to be evicted, so a node drain waits for their jobs instead
// of killing them. A budget with another spec (one an earlier version made,
// or one edited by hand) gets the pool's back.
func (r *AgentPoolReconciler) ensureDisruptionBudget(ctx context.Context, pool *agentryv1.AgentPool) error {
	want := disruptionBudgetSpec(pool)
	var pdb policyv1.PodDisruptionBudget
	err := r.Get(ctx, client.ObjectKey{Namespace: pool.Namespace, Name: pool.Name}, &pdb)
	switch {
	case err == nil:
		if !metav1.IsControlledBy(&pdb, pool) || (equality.Semantic.DeepEqual(pdb.Spec.Selector, want.Selector) &&
			equality.Semantic.DeepEqual(pdb.Spec.MinAvailable, want.MinAvailable) && pdb.Spec.MaxUnavailable == nil) {
			return nil
		}
		patch := client.MergeFrom(pdb.DeepCopy())
		pdb.Spec.Selector, pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable = want.Selector, want.MinAvailable, nil
		if err := r.Patch(ctx, &pdb, patch); err != nil {
			return fmt.Errorf("updating PodDisruptionBudget: %w", err)
		}
		return nil
	case !apierrors.IsNotFound(err):
		return err
	}
	pdb = policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: pool.Name, Namespace: pool.Namespace, Labels: map[string]string{agentryv1.PoolLabel: pool.Name}},
		Spec:       want,
	}
	if err := controllerutil.SetControllerReference(pool, &pdb, r.Scheme()); err != nil {
		return err
	}
	if err := r.Create(ctx, &pdb); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating PodDisruptionBudget: %w", err)
	}
	return nil
}

// disruptionBudgetSpec is the spec of the pool's PodDisruptionBudget: every
// protected pod of the pool must stay. Kubernetes' disruption controller
// takes only an integer minAvailable for pods whose controller has no scale
// subresource, as an Agent has none (with maxUnavailable it cannot count the
// pods it expects, and leaves the budget failed); the largest integer
// requires them all, however many there are.
func disruptionBudgetSpec(pool *agentryv1.AgentPool) policyv1.PodDisruptionBudgetSpec {
	return policyv1.PodDisruptionBudgetSpec{
		MinAvailable: ptr.To(intstr.FromInt32(math.MaxInt32)),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{
			agentryv1.PoolLabel:      pool.Name,
			agentryv1.ProtectedLabel: "true",
		}},
	}
}

// startAgents creates one Agent per entry of queued (the queue time of the
// job it is for, if known), concurrently and without holding the reconcile:
// under a burst each create waits for a busy API server, and demand that
// arrives meanwhile is met by the next reconcile, which counts the creates
// still under way. A failed create wakes the pool again after a back-off,
// which grows while creates keep failing.
//
// The creates run on the reconcile's context, which controller-runtime ends
// when the manager stops, not when the reconcile returns.
func (r *AgentPoolReconciler) startAgents(ctx context.Context, pool *agentryv1.AgentPool, queued []*time.Time) {
	if len(queued) == 0 {
		return
	}
	key := client.ObjectKeyFromObject(pool)
	owner := pool.DeepCopy()
	r.created.begin(key, len(queued))
	go func() {
		ctx, cancel := context.WithTimeout(ctx, createTimeout)
		defer cancel()
		var g errgroup.Group
		g.SetLimit(createConcurrency)
		var failed atomic.Int32
		var firstErr atomic.Value
		for _, q := range queued {
			g.Go(func() error {
				name, err := r.createAgent(ctx, owner, q)
				r.created.done(key, name, r.now())
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				return nil
			})
		}
		_ = g.Wait()
		if ctx.Err() != nil && failed.Load() > 0 && errors.Is(firstErr.Load().(error), context.Canceled) {
			return // the manager is stopping
		}
		if failed.Load() == 0 {
			r.createFailures.Delete(key)
			return
		}
		err := firstErr.Load().(error)
		n, _ := r.createFailures.LoadOrStore(key, new(atomic.Int32))
		retry := min(time.Second<<min(n.(*atomic.Int32).Add(1)-1, 6), time.Minute)
		ctrl.LoggerFrom(ctx).Error(err, "Creating agents failed; trying again", "failed", failed.Load(), "of", len(queued), "retryIn", retry)
		r.Recorder.Eventf(owner, nil, corev1.EventTypeWarning, "CreateFailed", "StartAgents",
			"Creating %d of %d agents failed: %s", failed.Load(), len(queued), err.Error())
		time.AfterFunc(retry, func() { wakePool(r.wakes, key) })
	}()
}

func (r *AgentPoolReconciler) createAgent(ctx context.Context, pool *agentryv1.AgentPool, queuedAt *time.Time) (string, error) {
	agent := &agentryv1.Agent{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: pool.Name + "-",
			Namespace:    pool.Namespace,
			Labels:       map[string]string{agentryv1.PoolLabel: pool.Name},
			// Set at birth, it saves the Agent reconciler a write per agent.
			Finalizers: []string{agentryv1.DeregisterFinalizer},
		},
		Spec: agentryv1.AgentSpec{PoolName: pool.Name},
	}
	if queuedAt != nil {
		agent.Annotations = map[string]string{agentryv1.DemandQueuedAtAnnotation: queuedAt.UTC().Format(time.RFC3339Nano)}
	}
	if err := controllerutil.SetControllerReference(pool, agent, r.Scheme()); err != nil {
		return "", err
	}
	if err := r.Create(ctx, agent); err != nil {
		return "", err
	}
	r.NewAgents.add(agent, r.now())
	return agent.Name, nil
}

// scaleDown removes surplus idle agents (agents is countedAgents', read
// only): each is deregistered first, right after the server confirmed it
// holds no job, and only then is its Agent (and with it the pod) deleted. A
// job the server hands to the agent in between is re-queued by the server
// when the agent is deleted.
func (r *AgentPoolReconciler) scaleDown(ctx context.Context, pool *agentryv1.AgentPool, server Server, poolID int,
	agents []agentryv1.Agent, remove []scaling.AgentState, now time.Time) error {
	log := ctrl.LoggerFrom(ctx)
	for _, victim := range remove {
		i := slices.IndexFunc(agents, func(a agentryv1.Agent) bool { return a.Name == victim.Name })
		if i < 0 {
			continue
		}
		a := agents[i].DeepCopy()
		reg, err := server.GetAgent(ctx, poolID, victim.AgentID)
		switch {
		case pipelines.StatusCode(err) == 404:
			// Already gone on the server; the Agent goes too.
		case err != nil:
			return fmt.Errorf("checking agent %d before scaling down: %w", victim.AgentID, err)
		case reg.AssignedRequest != nil && reg.AssignedRequest.FinishTime == nil && reg.AssignedRequest.Result == nil:
			log.Info("Keeping an idle agent that just got a job", "agent", a.Name, "jobRequest", reg.AssignedRequest.RequestID)
			continue
		default:
			log.Info("Deregistering a surplus idle agent", "agent", a.Name, "agentId", victim.AgentID, "idleFor", now.Sub(victim.RunningSince).Round(time.Second))
			if err := server.DeleteAgent(ctx, poolID, victim.AgentID); err != nil {
				return fmt.Errorf("deregistering surplus agent %d: %w", victim.AgentID, err)
			}
			deregistrationsTotal.WithLabelValues(pool.Namespace, pool.Name, "scaledDown").Inc()
		}
		patch := client.MergeFrom(a.DeepCopy())
		setDeregistered(a, "ScaledDown", "Deregistered as a surplus idle agent")
		if err := r.Status().Patch(ctx, a, patch); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("recording the deregistration of agent %s: %w", a.Name, err)
		}
		if err := r.Delete(ctx, a); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting surplus agent %s: %w", a.Name, err)
		}
		r.Recorder.Eventf(pool, a, corev1.EventTypeNormal, "ScaledDown", "ScaleDown",
			"Removed agent %s, idle for %s beyond the waiting jobs and minIdle", a.Name, now.Sub(victim.RunningSince).Round(time.Second))
	}
	return nil
}

// collectOrphans, at most every OrphanCheckInterval, deregisters server
// agents that carry this pool's marker and name prefix but have no Agent
// (left by a crash or a hand-deleted Agent whose finalizer was removed), and
// deletes Agents whose registration vanished from the server. before is
// the pool's Agents listed (from the API server: a cached Agent may not show
// yet that it was deregistered) before the server's agents are read, so an
// agent registered in between is never taken for vanished; the Agents are
// listed again after, so an agent created in between is never taken for an
// orphan.
func (r *AgentPoolReconciler) collectOrphans(ctx context.Context, pool *agentryv1.AgentPool, server Server, poolID int, now time.Time) error {
	key := client.ObjectKeyFromObject(pool)
	interval := r.orphanCheckInterval()
	if last, ok := r.lastOrphanCheck.Load(key); ok && now.Sub(last.(time.Time)) < interval {
		return nil
	}
	before, err := r.ownedAgents(ctx, pool)
	if err != nil {
		return err
	}
	registrations, err := server.ListAgentsWithCapabilities(ctx, poolID)
	if err != nil {
		return err
	}
	r.lastOrphanCheck.Store(key, now)
	var after agentryv1.AgentList
	if err := r.APIReader.List(ctx, &after, client.InNamespace(pool.Namespace)); err != nil {
		return err
	}
	haveAgent := map[string]bool{}
	for _, a := range after.Items {
		haveAgent[strings.ToLower(a.Name)] = true
	}
	registered := map[int]bool{}
	log := ctrl.LoggerFrom(ctx)
	for _, reg := range registrations {
		registered[reg.ID] = true
		if reg.UserCapabilities[agentryv1.PoolCapability] != poolMarker(pool) ||
			!strings.HasPrefix(strings.ToLower(reg.Name), strings.ToLower(pool.Name)+"-") || haveAgent[strings.ToLower(reg.Name)] {
			continue
		}
		log.Info("Deregistering an orphaned registration", "agentName", reg.Name, "agentId", reg.ID)
		if err := server.DeleteAgent(ctx, poolID, reg.ID); err != nil {
			return fmt.Errorf("deregistering orphan %d: %w", reg.ID, err)
		}
		deregistrationsTotal.WithLabelValues(pool.Namespace, pool.Name, "orphan").Inc()
		r.Recorder.Eventf(pool, nil, corev1.EventTypeWarning, "OrphanDeregistered", "CollectOrphans",
			"Deregistered server agent %s (id %d): it had no Agent", reg.Name, reg.ID)
	}
	// An Agent is taken for vanished only when two checks in a row find it
	// so: the Agent reconciler deregisters an agent a moment before it
	// records that, and one check can fall in between.
	suspects := map[types.UID]bool{}
	previous, _ := r.vanished.Load(key)
	for i := range before {
		a := &before[i]
		if a.Status.AgentID == 0 || registered[int(a.Status.AgentID)] || !a.DeletionTimestamp.IsZero() || a.Status.Phase.Finished() ||
			!meta.IsStatusConditionTrue(a.Status.Conditions, agentryv1.AgentRegisteredCondition) {
			continue
		}
		suspects[a.UID] = true
		if seen, _ := previous.(map[types.UID]bool); !seen[a.UID] {
			continue
		}
		delete(suspects, a.UID)
		log.Info("Deleting an agent whose registration vanished", "agent", a.Name, "agentId", a.Status.AgentID)
		patch := client.MergeFrom(a.DeepCopy())
		setDeregistered(a, "RegistrationVanished", "The server no longer has this agent")
		if err := r.Status().Patch(ctx, a, patch); client.IgnoreNotFound(err) != nil {
			return err
		}
		if err := r.Delete(ctx, a); client.IgnoreNotFound(err) != nil {
			return err
		}
		failuresTotal.WithLabelValues(pool.Namespace, pool.Name, "RegistrationVanished").Inc()
		r.Recorder.Eventf(a, nil, corev1.EventTypeWarning, "RegistrationVanished", "CollectOrphans",
			"The server no longer has agent %d; deleting the Agent", a.Status.AgentID)
	}
	r.vanished.Store(key, suspects)
	return nil
}

func (r *AgentPoolReconciler) orphanCheckInterval() time.Duration {
	if r.OrphanCheckInterval > 0 {
		return r.OrphanCheckInterval
	}
	return defaultOrphanCheckInterval
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

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d != nil && d.Duration > 0 {
		return d.Duration
	}
	return def
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
		Total:    int32(t.Total + created),
	}
	waitingJobsGauge.WithLabelValues(pool.Namespace, pool.Name).Set(float64(t.Waiting))
	for state, n := range map[string]int32{"starting": pool.Status.Agents.Starting, "idle": pool.Status.Agents.Idle, "busy": pool.Status.Agents.Busy} {
		agentsGauge.WithLabelValues(pool.Namespace, pool.Name, state).Set(float64(n))
	}
}

// readyCondition says whether the pool can start agents, from what the
// reconcile observed.
func readyCondition(pool *agentryv1.AgentPool, obs *poolObservation) metav1.Condition {
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
	case obs.backoff != "":
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "StartBackoff", obs.backoff
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "Ready", "Agents are started for waiting jobs"
	}
	return c
}
