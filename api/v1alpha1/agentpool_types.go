package v1alpha1

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of AgentPoolSpec fields, also applied by the API server.
const (
	DefaultMaxAgents      int32 = 10
	DefaultCredentialsKey       = "token"
	DefaultPollInterval         = 2 * time.Second
	DefaultScaleDownDelay       = 30 * time.Second
	DefaultStartupTimeout       = 5 * time.Minute
)

// AuthType is how the operator presents the pool-admin token.
// +kubebuilder:validation:Enum=PersonalAccessToken;Bearer
type AuthType string

// Auth types.
const (
	// AuthPersonalAccessToken sends the token as HTTP Basic with an empty
	// user: an Azure DevOps PAT. agentry-server accepts it too.
	AuthPersonalAccessToken AuthType = "PersonalAccessToken"
	// AuthBearer sends the token as an OAuth bearer token.
	AuthBearer AuthType = "Bearer"
)

// AgentPool condition types.
const (
	// PoolReady is True when the pool can start agents: its server answers,
	// the pool exists there and the template is usable.
	PoolReady = "Ready"
	// PoolServerReachable is True when the server answered with the pool's id.
	PoolServerReachable = "ServerReachable"
)

// SecretKeySelector names one key of a Secret in the AgentPool's namespace.
type SecretKeySelector struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Key in the Secret's data.
	// +kubebuilder:default=token
	// +optional
	Key string `json:"key,omitempty"`
}

// ServerSpec says which server and pool the agents register with.
type ServerSpec struct {
	// URL of the server: the Azure DevOps organisation or collection URL, or
	// agentry-server's URL.
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="url must be an http:// or https:// URL with a host, such as https://dev.azure.com/my-org"
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url"`
	// AuthType is how the token is sent: PersonalAccessToken (HTTP Basic
	// with an empty user, what Azure DevOps expects and agentry-server
	// accepts) or Bearer.
	// +kubebuilder:default=PersonalAccessToken
	// +optional
	AuthType AuthType `json:"authType,omitempty"`
	// PoolName is the agent pool's name on the server.
	// +kubebuilder:validation:MinLength=1
	PoolName string `json:"poolName"`
	// CredentialsSecretRef names the Secret, in this AgentPool's namespace,
	// that holds the pool-admin token. Only the operator reads it; it never
	// reaches an agent pod.
	CredentialsSecretRef SecretKeySelector `json:"credentialsSecretRef"`
}

// AgentPoolSpec is the desired state of an AgentPool.
// +kubebuilder:validation:XValidation:rule="!has(self.minIdle) || !has(self.maxAgents) || self.minIdle <= self.maxAgents",message="minIdle must not be greater than maxAgents"
type AgentPoolSpec struct {
	// Server is where agents register and jobs come from.
	Server ServerSpec `json:"server"`
	// Template is the pod each agent runs in. It must have a container named
	// "agent"; the operator mounts the agent's credentials into that container
	// only, at /var/run/agentry/agent.
	// +kubebuilder:validation:XValidation:rule="self.spec.containers.exists(c, c.name == 'agent')",message="template must have a container named agent"
	Template corev1.PodTemplateSpec `json:"template"`
	// Capabilities are user capabilities registered with every agent, matched
	// against jobs' demands.
	// +optional
	Capabilities map[string]string `json:"capabilities,omitempty"`
	// MinIdle is how many agents to keep started and waiting beyond the
	// waiting jobs, so a new job starts without waiting for a pod.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +optional
	MinIdle int32 `json:"minIdle,omitempty"`
	// MaxAgents caps the pool's agents, starting, idle and busy together.
	// 0 stops the pool from starting agents.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxAgents *int32 `json:"maxAgents,omitempty"`
	// PollInterval is how often the server's job queue is read.
	// Against agentry-server the operator watches the queue and reacts at
	// once; this interval applies to servers without the watch (Azure DevOps).
	// +kubebuilder:default="2s"
	// +optional
	PollInterval *metav1.Duration `json:"pollInterval,omitempty"`
	// ScaleDownDelay is how long an agent beyond the waiting jobs and
	// minIdle stays idle before it is deregistered and removed.
	// +kubebuilder:default="30s"
	// +optional
	ScaleDownDelay *metav1.Duration `json:"scaleDownDelay,omitempty"`
	// StartupTimeout is how long an agent's pod may take to run before the
	// agent is marked Failed and removed.
	// +kubebuilder:default="5m"
	// +optional
	StartupTimeout *metav1.Duration `json:"startupTimeout,omitempty"`
}

// AgentCounts counts a pool's live agents by what they are doing.
type AgentCounts struct {
	// Starting agents are not yet registered or their pod is not yet running.
	// +optional
	Starting int32 `json:"starting"`
	// Idle agents run and have no job yet.
	// +optional
	Idle int32 `json:"idle"`
	// Busy agents run a job.
	// +optional
	Busy int32 `json:"busy"`
	// Total is starting + idle + busy.
	// +optional
	Total int32 `json:"total"`
}

// AgentPoolStatus is the observed state of an AgentPool.
type AgentPoolStatus struct {
	// Conditions: Ready, ServerReachable.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// PoolID is the pool's id on the server.
	// +optional
	PoolID int32 `json:"poolId,omitempty"`
	// WaitingJobs is how many of the pool's jobs wait for an agent.
	// +optional
	WaitingJobs int32 `json:"waitingJobs"`
	// Agents counts the pool's agents.
	// +optional
	Agents AgentCounts `json:"agents"`
}

// AgentPool keeps a set of ephemeral agents, one pod per job, in step with a
// server pool's job queue.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=agentry
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="an AgentPool's name is a label value and must be at most 63 characters"
// +kubebuilder:printcolumn:name="Server pool",type=string,JSONPath=`.spec.server.poolName`
// +kubebuilder:printcolumn:name="Waiting",type=integer,JSONPath=`.status.waitingJobs`
// +kubebuilder:printcolumn:name="Starting",type=integer,JSONPath=`.status.agents.starting`
// +kubebuilder:printcolumn:name="Idle",type=integer,JSONPath=`.status.agents.idle`
// +kubebuilder:printcolumn:name="Busy",type=integer,JSONPath=`.status.agents.busy`
// +kubebuilder:printcolumn:name="Max",type=integer,JSONPath=`.spec.maxAgents`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AgentPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AgentPoolSpec   `json:"spec"`
	Status AgentPoolStatus `json:"status,omitempty"`
}

// AgentPoolList is a list of AgentPools.
//
// +kubebuilder:object:root=true
type AgentPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AgentPool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&AgentPool{}, &AgentPoolList{})
}
