package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
)

// endedPodPriority puts an Agent whose pod has ended ahead of the queue.
// During a burst the Agent queue is full of registrations; an agent that
// finished its job should be deregistered and removed without waiting
// behind them (job finished → agent removed is what users watch).
const endedPodPriority = 10

// endedPodHandler enqueues a pod's Agent with endedPodPriority when the pod
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
		req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: pod.Namespace, Name: ref.Name}}
		if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
			pq.AddWithOpts(priorityqueue.AddOpts{Priority: ptr.To(endedPodPriority)}, req)
		} else {
			q.Add(req)
		}
	}
}
