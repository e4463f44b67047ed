package agent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// DecodeMessageBody returns a message's JSON body. A message with an IV is
// base64 of AES-CBC ciphertext under the session key; one without is plain
// JSON. A leading UTF-8 BOM is removed either way.
func DecodeMessageBody(msg *pipelines.TaskAgentMessage, sessionKey []byte) ([]byte, error) {
	body := []byte(msg.Body)
	if len(msg.IV) > 0 {
		if len(sessionKey) == 0 {
			return nil, errors.New("message is encrypted but the session has no key")
		}
		ct, err := base64.StdEncoding.DecodeString(strings.TrimSpace(msg.Body))
		if err != nil {
			return nil, errors.New("encrypted message body is not base64")
		}
		if body, err = agentcrypto.Decrypt(sessionKey, msg.IV, ct); err != nil {
			return nil, err
		}
	}
	return bytes.TrimPrefix(body, utf8BOM), nil
}

// DecodeJobMessage decodes a PipelineAgentJobRequest and checks it has what
// running and reporting the job needs. Errors never quote the body: it
// carries the job token and secret variables.
func DecodeJobMessage(msg *pipelines.TaskAgentMessage, sessionKey []byte) (*pipelines.AgentJobRequestMessage, error) {
	body, err := DecodeMessageBody(msg, sessionKey)
	if err != nil {
		return nil, fmt.Errorf("job message %d: %w", msg.MessageID, err)
	}
	var job pipelines.AgentJobRequestMessage
	if err := json.Unmarshal(body, &job); err != nil {
		return nil, fmt.Errorf("job message %d is not a job: %w", msg.MessageID, describeJSONError(err))
	}
	var missing []string
	if job.JobID == "" {
		missing = append(missing, "jobId")
	}
	if job.RequestID <= 0 {
		missing = append(missing, "requestId")
	}
	if job.Plan.PlanID == "" || job.Plan.ScopeIdentifier == "" {
		missing = append(missing, "plan")
	}
	if job.Timeline.ID == "" {
		missing = append(missing, "timeline")
	}
	if _, _, ok := job.JobToken(); !ok {
		missing = append(missing, "the "+pipelines.SystemVssConnection+" endpoint")
	}
	if len(missing) > 0 {
		return &job, fmt.Errorf("job message %d has no %s", msg.MessageID, strings.Join(missing, ", "))
	}
	return &job, nil
}

// decodeCancel decodes a JobCancellation message.
func decodeCancel(msg *pipelines.TaskAgentMessage, sessionKey []byte) (*pipelines.JobCancelMessage, error) {
	body, err := DecodeMessageBody(msg, sessionKey)
	if err != nil {
		return nil, err
	}
	var c pipelines.JobCancelMessage
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("cancellation message %d: %w", msg.MessageID, describeJSONError(err))
	}
	return &c, nil
}

// describeJSONError keeps the position and kind of a JSON error and drops
// anything that could quote the payload.
func describeJSONError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("invalid JSON at offset %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Errorf("field %q has the wrong type (%s)", typ.Field, typ.Value)
	}
	return errors.New("invalid JSON")
}
