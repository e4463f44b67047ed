package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
)

// newAgents hands the Agents the pool creates to the Agent reconciler as
// the API server returned them, so an agent's registration and pod do not
// wait for the watch to deliver its Agent: on a busy API server that watch
// can be a second behind. The reconciler uses an Agent from here only while
// its cache does not have it, and for newAgentMemory at most.
type newAgents struct {
	mu     sync.Mutex
	agents map[types.NamespacedName]newAgent
	events chan event.TypedGenericEvent[types.NamespacedName]
}

type newAgent struct {
	agent *agentryv1.Agent
	at    time.Time
}

// newAgentMemory is how long a created Agent is offered in place of the
// cache's: far longer than a watch lags, short enough that an Agent deleted
// right after its creation is not started from memory.
const newAgentMemory = 10 * time.Second

func newNewAgents() *newAgents {
	return &newAgents{
		agents: map[types.NamespacedName]newAgent{},
		// A burst's worth; should it be full, the watch brings the Agent.
		events: make(chan event.TypedGenericEvent[types.NamespacedName], 1024),
	}
}

// add keeps the created agent and wakes its reconcile. A nil receiver does
// nothing.
func (n *newAgents) add(agent *agentryv1.Agent, now time.Time) {
	if n == nil {
		return
	}
	key := types.NamespacedName{Namespace: agent.Namespace, Name: agent.Name}
	n.mu.Lock()
	for k, a := range n.agents {
		if now.Sub(a.at) > newAgentMemory {
			delete(n.agents, k)
		}
	}
	n.agents[key] = newAgent{agent: agent.DeepCopy(), at: now}
	n.mu.Unlock()
	select {
	case n.events <- event.TypedGenericEvent[types.NamespacedName]{Object: key}:
	default:
	}
}

// get returns a copy of the created Agent of that key, if it was created
// less than newAgentMemory ago; nil otherwise.
func (n *newAgents) get(key types.NamespacedName, now time.Time) *agentryv1.Agent {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	a, ok := n.agents[key]
	if !ok {
		return nil
	}
	if now.Sub(a.at) > newAgentMemory {
		delete(n.agents, key)
		return nil
	}
	return a.agent.DeepCopy()
}

// seen forgets the Agent of that key: the cache has it.
func (n *newAgents) seen(key types.NamespacedName) {
	if n == nil {
		return
	}
	n.mu.Lock()
	delete(n.agents, key)
	n.mu.Unlock()
}

// newAgentHandler enqueues a handed-over Agent as its watch event would: at
// urgentPriority.
var newAgentHandler = handler.TypedFuncs[types.NamespacedName, reconcile.Request]{
	GenericFunc: func(_ context.Context, e event.TypedGenericEvent[types.NamespacedName], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		addAt(q, urgentPriority, e.Object)
	},
}
