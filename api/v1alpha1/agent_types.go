package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AgentPhase is where an Agent is in its one-job life.
// +kubebuilder:validation:Enum=Pending;Registered;Running;Succeeded;Failed
type AgentPhase string

// Agent phases.
const (
	// AgentPending: created, not yet registered with the server.
	AgentPending AgentPhase = "Pending"
	// AgentRegistered: registered, its Secret written, its pod not yet running.
	AgentRegistered AgentPhase = "Registered"
	// AgentRunning: its pod runs.
	AgentRunning AgentPhase = "Running"
	// AgentSucceeded: its pod exited 0; the agent is being removed.
	AgentSucceeded AgentPhase = "Succeeded"
	// AgentFailed: its pod failed or vanished; the agent is being removed.
	AgentFailed AgentPhase = "Failed"
)

// Finished reports whether the agent's pod has ended.
func (p AgentPhase) Finished() bool { return p == AgentSucceeded || p == AgentFailed }

// Agent condition types.
const (
	// AgentRegisteredCondition is True while the agent is registered with the
	// server, and False once it was deregistered or registration failed.
	AgentRegisteredCondition = "Registered"
	// AgentStartedCondition is True once the agent's pod runs, and False
	// with the reason when it could not start (ImagePullFailed,
	// Unschedulable, StartupTimeout, ...).
	AgentStartedCondition = "Started"
)

// AgentSpec is the desired state of an Agent.
type AgentSpec struct {
	// PoolName is the AgentPool, in the same namespace, the agent belongs to.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="poolName is immutable"
	PoolName string `json:"poolName"`
}

// AgentStatus is the observed state of an Agent.
type AgentStatus struct {
	// Phase is where the agent is in its life.
	// +optional
	Phase AgentPhase `json:"phase,omitempty"`
	// AgentID is the agent's id on the server.
	// +optional
	AgentID int32 `json:"agentId,omitempty"`
	// PoolID is the id, on the server, of the pool the agent is registered in.
	// +optional
	PoolID int32 `json:"poolId,omitempty"`
	// PodName is the agent's pod.
	// +optional
	PodName string `json:"podName,omitempty"`
	// SecretName is the Secret holding the agent's settings and private key.
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// JobRequestID is the job request the agent took, once known.
	// +optional
	JobRequestID int64 `json:"jobRequestId,omitempty"`
	// StartTime is when the agent's pod started running.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// CompletionTime is when the agent's pod ended.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Conditions: Registered.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Agent is one ephemeral agent: a server registration, a Secret with its
// credentials and a pod that takes one job. Its AgentPool creates it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=agentry
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="an Agent's name is a label value and must be at most 63 characters"
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.poolName`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Agent ID",type=integer,JSONPath=`.status.agentId`
// +kubebuilder:printcolumn:name="Job",type=integer,JSONPath=`.status.jobRequestId`
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.status.podName`,priority=1
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Started")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Agent struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AgentSpec   `json:"spec"`
	Status AgentStatus `json:"status,omitempty"`
}

// AgentList is a list of Agents.
//
// +kubebuilder:object:root=true
type AgentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Agent `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Agent{}, &AgentList{})
}
