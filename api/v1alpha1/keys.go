package v1alpha1

// Label, finalizer and volume names agentry puts on the objects it manages.
const (
	// PoolLabel names the AgentPool an Agent, Secret or pod belongs to.
	PoolLabel = "agentry.dev/pool"
	// AgentLabel names the Agent a Secret or pod belongs to.
	AgentLabel = "agentry.dev/agent"

	// ProtectedLabel is "true" on an agent pod that the pool's
	// PodDisruptionBudget keeps from eviction: from its creation, for the
	// job it was started for, and again whenever its agent holds a job. An
	// agent that has run idle for the idle protection period loses it.
	ProtectedLabel = "agentry.dev/protected"
	// SafeToEvictAnnotation tells the cluster autoscaler whether it may
	// evict a pod; agentry sets it to "false" on protected agent pods.
	SafeToEvictAnnotation = "cluster-autoscaler.kubernetes.io/safe-to-evict"
	// PoolCapability is the user capability every agent is registered with,
	// valued <namespace>/<AgentPool name>: it marks the registrations the
	// operator owns, so it can collect orphans without touching others.
	PoolCapability = "agentry.dev/pool"
	// DemandQueuedAtAnnotation is on an Agent started for a waiting job: that
	// job's queue time (RFC 3339), for the queued-to-pod-created metric.
	DemandQueuedAtAnnotation = "agentry.dev/demand-queued-at"
	// DeregisterFinalizer keeps an Agent until its server registration is removed.
	DeregisterFinalizer = "agentry.dev/deregister"
	// AgentsFinalizer keeps an AgentPool until its Agents are gone, because
	// deregistering them needs the pool's server and credentials.
	AgentsFinalizer = "agentry.dev/agents"

	// AgentContainerName is the container of the pool's template that runs the
	// agent and gets its credentials mounted.
	AgentContainerName = "agent"
	// AgentDir is where the agent's Secret is mounted in the agent container.
	AgentDir = "/var/run/agentry/agent"
	// AgentDirEnv tells the agent where its files are.
	AgentDirEnv = "AGENTRY_AGENT_DIR"
)
