package server

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// ProjectID is the scopeIdentifier of every plan agentry-server sends: it
// has one implicit project. (uuid v5 of https://agentry.dev/project.)
const ProjectID = "343ffe56-9689-56be-a19b-0085b1f7988f"

// Plan facts of every job agentry-server sends.
const (
	planType = "Build"
	// planVersion 8 makes agents finish with a JobCompleted event.
	planVersion = pipelines.JobCompletedPlanVersion
	// defaultJobName is Azure's name for the only job of a pipeline.
	defaultJobName = "__default"
	// systemVssConnectionID is the well-known id Azure gives that endpoint.
	systemVssConnectionID = "00000002-0000-8888-8000-000000000000"
)

// jobPlan is the plan reference of a job.
func jobPlan(j store.Job) pipelines.PlanReference {
	return pipelines.PlanReference{ScopeIdentifier: ProjectID, PlanType: planType, Version: planVersion, PlanID: j.PlanID}
}

func isSystemVariable(name string) bool {
	return len(name) >= 7 && strings.EqualFold(name[:7], "system.")
}

func displayName(j store.Job) string {
	if j.Name != "" {
		return j.Name
	}
	return "Job"
}

// jobMessage builds the PipelineAgentJobRequest body for a job assigned to
// an agent: baseURL is the server's public URL, token the job token.
func jobMessage(j store.Job, baseURL, token string) pipelines.AgentJobRequestMessage {
	collection := strings.TrimRight(baseURL, "/") + "/"
	vars := map[string]pipelines.VariableValue{}
	for k, v := range j.Spec.Variables {
		vars[k] = v
	}
	ro := func(v string) pipelines.VariableValue { return pipelines.VariableValue{Value: v, IsReadOnly: true} }
	for k, v := range map[string]string{
		"system.collectionUri":               collection,
		"system.teamFoundationCollectionUri": collection,
		"system.teamProjectId":               ProjectID,
		"system.teamProject":                 "agentry",
		"system.hostType":                    "build",
		"system.planId":                      j.PlanID,
		"system.timelineId":                  j.TimelineID,
		"system.jobId":                       j.JobID,
		"system.jobName":                     defaultJobName,
		"system.jobDisplayName":              displayName(j),
		"system.jobAttempt":                  strconv.Itoa(max(j.Attempts+1, 1)),
		"system.definitionName":              displayName(j),
		"system.pullRequest.isFork":          "False",
		"build.buildId":                      strconv.FormatInt(j.RequestID, 10),
		"build.buildNumber":                  strconv.FormatInt(j.RequestID, 10),
	} {
		vars[k] = ro(v)
	}
	// The job's time-out is enforced twice: here (Sweep cancels the job) and
	// by the agent, which reads system.jobTimeout and stops the running step.
	if j.Spec.TimeoutInMinutes > 0 {
		vars["system.jobTimeout"] = ro(strconv.Itoa(j.Spec.TimeoutInMinutes))
	}

	enabled := true
	steps := make([]pipelines.JobStep, 0, len(j.Spec.Steps))
	for i, st := range j.Spec.Steps {
		ref, name := pipelines.TaskCmdLine, "Command Line Script"
		inputs := map[string]string{"script": st.Script}
		if st.Task == jobapi.TaskBash {
			ref, name = pipelines.TaskBash, "Bash Script"
			inputs["targetType"] = "inline"
		}
		if st.DisplayName != "" {
			name = st.DisplayName
		}
		steps = append(steps, pipelines.JobStep{
			Type: "task", ID: uuid.NewString(), Name: fmt.Sprintf("%s%d", ref.Name, i+1), DisplayName: name,
			Condition: "succeeded()", Enabled: &enabled, Inputs: inputs, Reference: ref,
		})
	}

	var locked *time.Time
	if !j.LockedUntil.IsZero() {
		t := j.LockedUntil.UTC()
		locked = &t
	}
	return pipelines.AgentJobRequestMessage{
		MessageType:    pipelines.MessageTypeJobRequest,
		Plan:           jobPlan(j),
		Timeline:       pipelines.TimelineReference{ID: j.TimelineID},
		JobID:          j.JobID,
		JobDisplayName: displayName(j),
		JobName:        defaultJobName,
		RequestID:      j.RequestID,
		LockedUntil:    locked,
		Resources: pipelines.JobResources{Endpoints: []pipelines.ServiceEndpoint{{
			ID: systemVssConnectionID, Name: pipelines.SystemVssConnection, Type: "ExternalTfs", URL: collection,
			Authorization: &pipelines.EndpointAuthorization{Scheme: "OAuth", Parameters: map[string]string{"AccessToken": token}},
			IsReady:       true,
		}}},
		Mask:      []pipelines.MaskHint{{Type: "regex", Value: token}},
		Variables: vars,
		Steps:     steps,
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// jobState is the user-facing state of a job.
func jobState(j store.Job) string {
	switch {
	case j.Finished():
		return jobapi.StateCompleted
	case !j.CancelTime.IsZero():
		return jobapi.StateCanceling
	case !j.StartTime.IsZero():
		return jobapi.StateRunning
	case !j.AssignTime.IsZero():
		return jobapi.StateAssigned
	}
	return jobapi.StateQueued
}

// toJob is a job as the job API shows it.
func toJob(j store.Job) jobapi.Job {
	return jobapi.Job{
		ID: j.RequestID, JobID: j.JobID, Pool: j.PoolName, PoolID: j.PoolID, Name: displayName(j),
		State: jobState(j), Result: j.Result, Demands: j.Spec.Demands,
		QueueTime: timePtr(j.QueueTime), AssignTime: timePtr(j.AssignTime), StartTime: timePtr(j.StartTime),
		FinishTime: timePtr(j.FinishTime), AgentID: j.AgentID, AgentName: j.AgentName,
		TimeoutInMinutes: j.Spec.TimeoutInMinutes, Attempts: j.Attempts, CancelTime: timePtr(j.CancelTime),
	}
}

// toJobRequest is a job as the pool's queue shows it.
func toJobRequest(j store.Job) pipelines.TaskAgentJobRequest {
	r := pipelines.TaskAgentJobRequest{
		RequestID: j.RequestID, QueueTime: timePtr(j.QueueTime), AssignTime: timePtr(j.AssignTime),
		ReceiveTime: timePtr(j.ReceiveTime), FinishTime: timePtr(j.FinishTime), LockedUntil: timePtr(j.LockedUntil),
		PlanType: planType, PlanID: j.PlanID, JobID: j.JobID, JobName: defaultJobName, Demands: j.Spec.Demands,
		PoolID: j.PoolID, ScopeID: ProjectID,
		Definition: &pipelines.OwnerReference{ID: int(j.RequestID), Name: displayName(j)},
		Owner:      &pipelines.OwnerReference{ID: int(j.RequestID), Name: displayName(j)},
	}
	if j.Finished() {
		res := j.Result
		r.Result = &res
	}
	if j.AgentID != 0 {
		r.ReservedAgent = &pipelines.TaskAgentReference{ID: j.AgentID, Name: j.AgentName}
	}
	return r
}

// toTaskAgent is an agent as the pool shows it.
func toTaskAgent(a store.Agent, online bool, assigned *pipelines.TaskAgentJobRequest) pipelines.TaskAgent {
	enabled := a.Enabled
	pub := a.PublicKey
	status := pipelines.AgentOffline
	if online {
		status = pipelines.AgentOnline
	}
	return pipelines.TaskAgent{
		ID: a.ID, Name: a.Name, Version: a.Version, OSDescription: a.OSDescription, Enabled: &enabled,
		Status: status, MaxParallelism: a.MaxParallelism, ProvisioningState: a.ProvisioningState,
		CreatedOn: timePtr(a.CreatedOn),
		Authorization: &pipelines.TaskAgentAuthorization{
			AuthorizationURL: a.AuthorizationURL, ClientID: a.ClientID, PublicKey: &pub,
		},
		SystemCapabilities: a.SystemCapabilities, UserCapabilities: a.UserCapabilities,
		AssignedRequest: assigned,
	}
}

func toTaskAgentPool(p store.Pool, size int) pipelines.TaskAgentPool {
	return pipelines.TaskAgentPool{ID: p.ID, Name: p.Name, PoolType: "automation", Size: size, CreatedOn: timePtr(p.CreatedOn)}
}
