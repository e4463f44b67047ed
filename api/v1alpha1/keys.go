package v1alpha1

// Label, finalizer and volume names agentry puts on the objects it manages.
const (
	// PoolLabel names the AgentPool an Agent, Secret or pod belongs to.
	PoolLabel = "agentry.dev/pool"
	// AgentLabel names the Agent a Secret or pod belongs to.
	AgentLabel = "agentry.dev/agent"

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
