package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
)

// Priorities in the Agent queue, for what a user waits on. An agent whose
// job finished or whose pod ended goes first: its reconcile is short
// (deregister, delete) and job finished → agent removed is what users
// watch. A new Agent (a job waits for its pod) and a deletion come next.
// The rest (recording that a pod runs, marking a busy pod) waits behind
// them during a burst.
const (
	finishPriority = 20
	urgentPriority = 10
)

// urgentAgentHandler enqueues an Agent at urgentPriority when it is created
// (not when the cache lists it at start-up) and when its generation changes
// (its deletion).
type urgentAgentHandler struct{}

var _ handler.EventHandler = urgentAgentHandler{}

func (urgentAgentHandler) Create(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if e.IsInInitialList {
		// Start-up: what happens now goes first, as controller-runtime's
		// own handlers do it.
		addAt(q, handler.LowPriority, client.ObjectKeyFromObject(e.Object))
		return
	}
	addAt(q, urgentPriority, client.ObjectKeyFromObject(e.Object))
}

func (urgentAgentHandler) Update(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	addAt(q, urgentPriority, client.ObjectKeyFromObject(e.ObjectNew))
}

func (urgentAgentHandler) Delete(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.Object)})
}

func (urgentAgentHandler) Generic(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.Object)})
}

// agentWakeHandler enqueues the Agents agentJobs wakes: first of all when
// their job finished.
var agentWakeHandler = handler.TypedFuncs[agentWake, reconcile.Request]{
	GenericFunc: func(_ context.Context, e event.TypedGenericEvent[agentWake], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if e.Object.finished {
			addAt(q, finishPriority, e.Object.agent)
			return
		}
		q.Add(reconcile.Request{NamespacedName: e.Object.agent})
	},
}

// addAt enqueues key at priority when q is a priority queue.
func addAt(q workqueue.TypedRateLimitingInterface[reconcile.Request], priority int, key types.NamespacedName) {
	req := reconcile.Request{NamespacedName: key}
	if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
		pq.AddWithOpts(priorityqueue.AddOpts{Priority: ptr.To(priority)}, req)
		return
	}
	q.Add(req)
}

// endedPodHandler enqueues a pod's Agent with finishPriority when the pod
// has ended or is being deleted. Other pod events reach the Agent through
// Owns at normal priority.
type endedPodHandler struct{}

var _ handler.EventHandler = endedPodHandler{}

func (endedPodHandler) Create(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if pod, ok := e.Object.(*corev1.Pod); ok {
		enqueueEnded(pod, q)
	}
}

func (endedPodHandler) Update(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if pod, ok := e.ObjectNew.(*corev1.Pod); ok {
		enqueueEnded(pod, q)
	}
}

func (endedPodHandler) Delete(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if pod, ok := e.Object.(*corev1.Pod); ok {
		enqueueAgentOf(pod, q)
	}
}

func (endedPodHandler) Generic(context.Context, event.GenericEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
}

func enqueueEnded(pod *corev1.Pod, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || pod.DeletionTimestamp != nil {
		enqueueAgentOf(pod, q)
	}
}

// enqueueAgentOf enqueues the pod's Agent: the controller owner of kind Agent.
func enqueueAgentOf(pod *corev1.Pod, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	for _, ref := range pod.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller || ref.Kind != "Agent" || ref.APIVersion != agentryv1.GroupVersion.String() {
			continue
		}
		addAt(q, finishPriority, types.NamespacedName{Namespace: pod.Namespace, Name: ref.Name})
	}
}
