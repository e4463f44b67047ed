package controllers

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
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
	if item.Name != "done" || prio != finishPriority {
		t.Errorf("first out = %s at priority %d, want the ended pod's Agent at %d", item.Name, prio, finishPriority)
	}
}

// An agent whose job finished goes first, then a new Agent, both ahead of
// bookkeeping (a pod that started, a job that was assigned); Agents listed
// at start-up go last.
func TestAgentEventsPrioritise(t *testing.T) {
	q := priorityqueue.New[reconcile.Request]("test")
	defer q.ShutDown()
	ctx := context.Background()
	agent := func(name string) *agentryv1.Agent {
		return &agentryv1.Agent{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}}
	}
	key := func(name string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: name} }
	urgentAgentHandler{}.Create(ctx, event.CreateEvent{Object: agent("listed"), IsInInitialList: true}, q)
	agentWakeHandler.Generic(ctx, event.TypedGenericEvent[agentWake]{Object: agentWake{agent: key("assigned")}}, q)
	urgentAgentHandler{}.Create(ctx, event.CreateEvent{Object: agent("new")}, q)
	agentWakeHandler.Generic(ctx, event.TypedGenericEvent[agentWake]{Object: agentWake{agent: key("finished"), finished: true}}, q)

	var got []string
	for q.Len() > 0 {
		item, _, _ := q.GetWithPriority()
		got = append(got, item.Name)
		q.Done(item)
	}
	want := []string{"finished", "new", "assigned", "listed"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order out of the queue (-want +got):\n%s", diff)
	}
}
