package controllers

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
)

// An Agent whose pod ended jumps the queue; one whose pod still runs does
// not get enqueued by this handler at all.
func TestEndedPodHandlerPrioritises(t *testing.T) {
	q := priorityqueue.New[reconcile.Request]("test")
	defer q.ShutDown()
	pod := func(name string, phase corev1.PodPhase) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, OwnerReferences: []metav1.OwnerReference{{
				APIVersion: agentryv1.GroupVersion.String(), Kind: "Agent", Name: name, Controller: ptr.To(true),
			}}},
			Status: corev1.PodStatus{Phase: phase},
		}
	}
	q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "registering"}})
	h := endedPodHandler{}
	h.Update(context.Background(), event.UpdateEvent{ObjectNew: pod("running", corev1.PodRunning)}, q)
	h.Update(context.Background(), event.UpdateEvent{ObjectNew: pod("done", corev1.PodSucceeded)}, q)

	if q.Len() != 2 {
		t.Fatalf("queue holds %d items, want the registration and the ended pod's Agent", q.Len())
	}
	item, prio, _ := q.GetWithPriority()
	if item.Name != "done" || prio != endedPodPriority {
		t.Errorf("first out = %s at priority %d, want the ended pod's Agent at %d", item.Name, prio, endedPodPriority)
	}
}
