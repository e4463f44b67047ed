package pipelines

import (
	"time"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
)

// List is the {count, value} wrapper the protocol puts around every list.
type List[T any] struct {
	Count int `json:"count"`
	Value []T `json:"value"`
}

// NewList wraps items, never as a null value.
func NewList[T any](items []T) List[T] {
	if items == nil {
		items = []T{}
	}
	return List[T]{Count: len(items), Value: items}
}

// WrappedException is the body of every error answer. Clients branch on TypeKey.
type WrappedException struct {
	Message   string `json:"message"`
	TypeName  string `json:"typeName,omitempty"`
	TypeKey   string `json:"typeKey"`
	ErrorCode int    `json:"errorCode"`
	EventID   int    `json:"eventId"`
}

// The typeKeys clients act on.
const (
	TypeKeySessionConflict      = "TaskAgentSessionConflictException"
	TypeKeySessionExpired       = "TaskAgentSessionExpiredException"
	TypeKeyAgentNotFound        = "TaskAgentNotFoundException"
	TypeKeyPoolNotFound         = "TaskAgentPoolNotFoundException"
	TypeKeyAccessTokenExpired   = "TaskAgentAccessTokenExpiredException"
	TypeKeyJobNotFound          = "TaskAgentJobNotFoundException"
	TypeKeyJobTokenExpired      = "TaskAgentJobTokenExpiredException"
	TypeKeyAccessDenied         = "AccessDeniedException"
	TypeKeyUnauthorized         = "VssUnauthorizedException"
	TypeKeyAgentExists          = "TaskAgentExistsException"
	TypeKeyPoolExists           = "TaskAgentPoolExistsException"
	TypeKeyBadRequest           = "ArgumentException"
	TypeKeyJobRequestNotFound   = "TaskAgentJobRequestNotFoundException"
	TypeKeyTimelineNotFound     = "TimelineNotFoundException"
	TypeKeyInvalidJobRequestMsg = "InvalidTaskAgentJobRequestException"
)

// TaskAgentPool is an agent pool.
type TaskAgentPool struct {
	ID        int        `json:"id"`
	Name      string     `json:"name"`
	IsHosted  bool       `json:"isHosted"`
	PoolType  string     `json:"poolType,omitempty"`
	Size      int        `json:"size"`
	CreatedOn *time.Time `json:"createdOn,omitempty"`
}

// TaskAgentAuthorization is how an agent authenticates: its public key, and
// the client id and token endpoint the server assigned it.
type TaskAgentAuthorization struct {
	AuthorizationURL string                 `json:"authorizationUrl,omitempty"`
	ClientID         string                 `json:"clientId,omitempty"`
	PublicKey        *agentcrypto.PublicKey `json:"publicKey,omitempty"`
}

// TaskAgentReference names an agent inside other objects.
type TaskAgentReference struct {
	ID            int         `json:"id"`
	Name          string      `json:"name"`
	Version       string      `json:"version,omitempty"`
	OSDescription string      `json:"osDescription,omitempty"`
	Enabled       *bool       `json:"enabled,omitempty"`
	Status        AgentStatus `json:"status,omitempty"`
}

// TaskAgent is a registered agent.
type TaskAgent struct {
	ID                 int                     `json:"id,omitempty"`
	Name               string                  `json:"name"`
	Version            string                  `json:"version,omitempty"`
	OSDescription      string                  `json:"osDescription,omitempty"`
	Enabled            *bool                   `json:"enabled,omitempty"`
	Status             AgentStatus             `json:"status,omitempty"`
	MaxParallelism     int                     `json:"maxParallelism,omitempty"`
	ProvisioningState  string                  `json:"provisioningState,omitempty"`
	CreatedOn          *time.Time              `json:"createdOn,omitempty"`
	Authorization      *TaskAgentAuthorization `json:"authorization,omitempty"`
	SystemCapabilities map[string]string       `json:"systemCapabilities,omitempty"`
	UserCapabilities   map[string]string       `json:"userCapabilities,omitempty"`
	AssignedRequest    *TaskAgentJobRequest    `json:"assignedRequest,omitempty"`
}

// TaskAgentSessionKey is the session's AES key, wrapped with the agent's
// public key when Encrypted is true.
type TaskAgentSessionKey struct {
	Encrypted bool   `json:"encrypted"`
	Value     []byte `json:"value"`
}

// TaskAgentSession is a listener session. The agent sends a zero SessionID;
// the server answers with the id and the wrapped key.
type TaskAgentSession struct {
	SessionID          string               `json:"sessionId"`
	OwnerName          string               `json:"ownerName"`
	Agent              TaskAgentReference   `json:"agent"`
	SystemCapabilities map[string]string    `json:"systemCapabilities,omitempty"`
	EncryptionKey      *TaskAgentSessionKey `json:"encryptionKey,omitempty"`
	UseFipsEncryption  bool                 `json:"useFipsEncryption,omitempty"`
}

// Message types.
const (
	MessageTypeJobRequest      = "PipelineAgentJobRequest"
	MessageTypeJobCancellation = "JobCancellation"
	MessageTypeAgentRefresh    = "AgentRefresh"
	MessageTypeJobMetadata     = "JobMetadataUpdate"
)

// TaskAgentMessage is one message from the agent's queue. With IV set, Body
// is base64 of the AES-CBC ciphertext; otherwise it is plain JSON.
type TaskAgentMessage struct {
	MessageID   int64  `json:"messageId"`
	MessageType string `json:"messageType"`
	IV          []byte `json:"iv,omitempty"`
	Body        string `json:"body"`
}

// JobCancelMessage asks the agent to stop a job.
type JobCancelMessage struct {
	JobID   string `json:"jobId"`
	Timeout string `json:"timeout,omitempty"`
}

// PlanReference locates the orchestration plan a job belongs to.
type PlanReference struct {
	ScopeIdentifier string `json:"scopeIdentifier"`
	PlanType        string `json:"planType"`
	Version         int    `json:"version"`
	PlanID          string `json:"planId"`
	ArtifactURI     string `json:"artifactUri,omitempty"`
}

// TimelineReference names the job's timeline.
type TimelineReference struct {
	ID       string `json:"id"`
	ChangeID int    `json:"changeId"`
	Location string `json:"location,omitempty"`
}

// EndpointAuthorization is a service endpoint's credential.
type EndpointAuthorization struct {
	Scheme     string            `json:"scheme"`
	Parameters map[string]string `json:"parameters"`
}

// ServiceEndpoint is a connection the job may use. The one named
// SystemVssConnection carries the job-scoped access token.
type ServiceEndpoint struct {
	ID            string                 `json:"id,omitempty"`
	Name          string                 `json:"name"`
	Type          string                 `json:"type,omitempty"`
	URL           string                 `json:"url"`
	Authorization *EndpointAuthorization `json:"authorization,omitempty"`
	Data          map[string]string      `json:"data,omitempty"`
	IsReady       bool                   `json:"isReady,omitempty"`
}

// SystemVssConnection is the name of the endpoint that carries the job token.
const SystemVssConnection = "SystemVssConnection"

// JobResources are the endpoints, repositories and containers a job uses.
type JobResources struct {
	Endpoints    []ServiceEndpoint `json:"endpoints"`
	Repositories []map[string]any  `json:"repositories,omitempty"`
	Containers   []map[string]any  `json:"containers,omitempty"`
}

// MaskHint names text the agent must mask in every line it sends.
type MaskHint struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// VariableValue is a job variable.
type VariableValue struct {
	Value      string `json:"value"`
	IsSecret   bool   `json:"isSecret,omitempty"`
	IsReadOnly bool   `json:"isReadOnly,omitempty"`
}

// TaskStepReference names the task a step runs.
type TaskStepReference struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

// JobStep is one step of a job.
type JobStep struct {
	Type             string            `json:"type"`
	ID               string            `json:"id"`
	Name             string            `json:"name,omitempty"`
	DisplayName      string            `json:"displayName,omitempty"`
	Condition        string            `json:"condition,omitempty"`
	TimeoutInMinutes int               `json:"timeoutInMinutes,omitempty"`
	ContinueOnError  bool              `json:"continueOnError,omitempty"`
	Enabled          *bool             `json:"enabled,omitempty"`
	Inputs           map[string]string `json:"inputs,omitempty"`
	Reference        TaskStepReference `json:"reference"`
}

// Built-in script tasks the agent runs natively.
var (
	TaskCmdLine = TaskStepReference{ID: "d9bafed4-0b18-4f58-968d-86655b4d2ce9", Name: "CmdLine", Version: "2.212.0"}
	TaskBash    = TaskStepReference{ID: "6c731c3c-3c68-459a-a5c9-bde6e6595b5b", Name: "Bash", Version: "3.214.0"}
)

// AgentJobRequestMessage is the body of a PipelineAgentJobRequest message.
type AgentJobRequestMessage struct {
	MessageType    string                   `json:"messageType,omitempty"`
	Plan           PlanReference            `json:"plan"`
	Timeline       TimelineReference        `json:"timeline"`
	JobID          string                   `json:"jobId"`
	JobDisplayName string                   `json:"jobDisplayName"`
	JobName        string                   `json:"jobName"`
	RequestID      int64                    `json:"requestId"`
	LockedUntil    *time.Time               `json:"lockedUntil,omitempty"`
	Resources      JobResources             `json:"resources"`
	Workspace      map[string]any           `json:"workspace,omitempty"`
	Mask           []MaskHint               `json:"mask,omitempty"`
	Variables      map[string]VariableValue `json:"variables,omitempty"`
	Steps          []JobStep                `json:"steps"`
}

// JobToken returns the job-scoped access token and the URL it is for, from
// the SystemVssConnection endpoint.
func (m *AgentJobRequestMessage) JobToken() (url, token string, ok bool) {
	for _, e := range m.Resources.Endpoints {
		if e.Name == SystemVssConnection && e.Authorization != nil {
			t := e.Authorization.Parameters["AccessToken"]
			return e.URL, t, t != "" && e.URL != ""
		}
	}
	return "", "", false
}

// OwnerReference names the definition or owner of a job request.
type OwnerReference struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// TaskAgentJobRequest is a job in a pool's queue.
type TaskAgentJobRequest struct {
	RequestID     int64                `json:"requestId"`
	QueueTime     *time.Time           `json:"queueTime,omitempty"`
	AssignTime    *time.Time           `json:"assignTime,omitempty"`
	ReceiveTime   *time.Time           `json:"receiveTime,omitempty"`
	FinishTime    *time.Time           `json:"finishTime,omitempty"`
	Result        *TaskResult          `json:"result,omitempty"`
	LockedUntil   *time.Time           `json:"lockedUntil,omitempty"`
	PlanType      string               `json:"planType,omitempty"`
	PlanID        string               `json:"planId,omitempty"`
	JobID         string               `json:"jobId,omitempty"`
	JobName       string               `json:"jobName,omitempty"`
	Demands       []string             `json:"demands,omitempty"`
	ReservedAgent *TaskAgentReference  `json:"reservedAgent,omitempty"`
	MatchedAgents []TaskAgentReference `json:"matchedAgents,omitempty"`
	PoolID        int                  `json:"poolId"`
	ScopeID       string               `json:"scopeId,omitempty"`
	HostID        string               `json:"hostId,omitempty"`
	Definition    *OwnerReference      `json:"definition,omitempty"`
	Owner         *OwnerReference      `json:"owner,omitempty"`
	Data          map[string]string    `json:"data,omitempty"`
	Priority      int                  `json:"priority,omitempty"`
}

// Waiting reports whether the request has neither been taken by an agent nor
// finished: the demand an autoscaler acts on (KEDA's rule).
func (r *TaskAgentJobRequest) Waiting() bool {
	return r.Result == nil && r.ReceiveTime == nil && r.FinishTime == nil
}

// TaskLogReference points at a log.
type TaskLogReference struct {
	ID       int    `json:"id"`
	Location string `json:"location,omitempty"`
}

// Issue is an error or warning attached to a timeline record.
type Issue struct {
	Type     string            `json:"type"`
	Category string            `json:"category,omitempty"`
	Message  string            `json:"message"`
	Data     map[string]string `json:"data,omitempty"`
}

// TimelineRecord is one node (job, step) of a plan's timeline.
type TimelineRecord struct {
	ID               string               `json:"id"`
	ParentID         *string              `json:"parentId,omitempty"`
	Type             string               `json:"type,omitempty"`
	Name             string               `json:"name,omitempty"`
	RefName          string               `json:"refName,omitempty"`
	StartTime        *time.Time           `json:"startTime,omitempty"`
	FinishTime       *time.Time           `json:"finishTime,omitempty"`
	CurrentOperation string               `json:"currentOperation,omitempty"`
	PercentComplete  *int                 `json:"percentComplete,omitempty"`
	State            *TimelineRecordState `json:"state,omitempty"`
	Result           *TaskResult          `json:"result,omitempty"`
	ResultCode       string               `json:"resultCode,omitempty"`
	ChangeID         int                  `json:"changeId,omitempty"`
	LastModified     *time.Time           `json:"lastModified,omitempty"`
	WorkerName       string               `json:"workerName,omitempty"`
	Order            *int                 `json:"order,omitempty"`
	Log              *TaskLogReference    `json:"log,omitempty"`
	ErrorCount       *int                 `json:"errorCount,omitempty"`
	WarningCount     *int                 `json:"warningCount,omitempty"`
	Issues           []Issue              `json:"issues,omitempty"`
}

// TimelineRecordFeedLines is a batch of live console lines for one step.
type TimelineRecordFeedLines struct {
	Count     int      `json:"count"`
	Value     []string `json:"value"`
	StepID    string   `json:"stepId"`
	StartLine *int64   `json:"startLine,omitempty"`
}

// TaskLog is an uploaded log.
type TaskLog struct {
	ID            int        `json:"id"`
	Path          string     `json:"path"`
	LineCount     int64      `json:"lineCount,omitempty"`
	CreatedOn     *time.Time `json:"createdOn,omitempty"`
	LastChangedOn *time.Time `json:"lastChangedOn,omitempty"`
	Location      string     `json:"location,omitempty"`
}

// JobEvent is a plan event; JobCompleted finishes a job on plan version 8 and later.
type JobEvent struct {
	Name      string     `json:"name"`
	JobID     string     `json:"jobId"`
	RequestID int64      `json:"requestId"`
	Result    TaskResult `json:"result"`
}

// JobCompletedEvent is the name of the plan event that finishes a job.
const JobCompletedEvent = "JobCompleted"

// JobCompletedPlanVersion is the first plan version that finishes jobs with
// a JobCompleted event rather than a job-request PATCH.
const JobCompletedPlanVersion = 8

// AccessToken is the token endpoint's answer.
type AccessToken struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope,omitempty"`
}

// Token endpoint form values (RFC 7523).
const (
	GrantTypeClientCredentials = "client_credentials"
	ClientAssertionTypeJWT     = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)
