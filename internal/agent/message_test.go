package agent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

const testToken = "job-token-must-not-leak"

func testJob() pipelines.AgentJobRequestMessage {
	return pipelines.AgentJobRequestMessage{
		Plan:           pipelines.PlanReference{ScopeIdentifier: "scope", PlanType: "agentry", Version: 8, PlanID: "plan-1"},
		Timeline:       pipelines.TimelineReference{ID: "timeline-1"},
		JobID:          "job-1",
		JobDisplayName: "Build",
		RequestID:      7,
		Resources: pipelines.JobResources{Endpoints: []pipelines.ServiceEndpoint{{
			Name: pipelines.SystemVssConnection, URL: "http://server.example",
			Authorization: &pipelines.EndpointAuthorization{Scheme: "OAuth", Parameters: map[string]string{"AccessToken": testToken}},
		}}},
		Variables: map[string]pipelines.VariableValue{"password": {Value: "hunter2", IsSecret: true}},
		Steps:     []pipelines.JobStep{{Type: "task", ID: "step-1", Reference: pipelines.TaskBash, Inputs: map[string]string{"script": "echo hi"}}},
	}
}

var testKey = bytes.Repeat([]byte{7}, agentcrypto.SessionKeySize)

func encryptedMessage(t testing.TB, key, plaintext []byte) *pipelines.TaskAgentMessage {
	t.Helper()
	iv, ct, err := agentcrypto.Encrypt(key, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	return &pipelines.TaskAgentMessage{MessageID: 3, MessageType: pipelines.MessageTypeJobRequest, IV: iv, Body: base64.StdEncoding.EncodeToString(ct)}
}

func TestDecodeJobMessage(t *testing.T) {
	want := testJob()
	body, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	bom := append([]byte{0xEF, 0xBB, 0xBF}, body...)
	noToken := testJob()
	noToken.Resources.Endpoints = nil
	noTokenBody, _ := json.Marshal(noToken)
	otherKey := bytes.Repeat([]byte{9}, agentcrypto.SessionKeySize)

	tests := []struct {
		name    string
		msg     *pipelines.TaskAgentMessage
		key     []byte
		wantErr string // substring; "" means success
	}{
		{"encrypted", encryptedMessage(t, testKey, body), testKey, ""},
		{"encrypted with BOM", encryptedMessage(t, testKey, bom), testKey, ""},
		{"plain", &pipelines.TaskAgentMessage{MessageID: 3, Body: string(body)}, testKey, ""},
		{"plain with BOM, no session key", &pipelines.TaskAgentMessage{MessageID: 3, Body: string(bom)}, nil, ""},
		{"wrong key", encryptedMessage(t, otherKey, body), testKey, "does not decrypt"},
		{"encrypted without a session key", encryptedMessage(t, testKey, body), nil, "no key"},
		{"not base64", &pipelines.TaskAgentMessage{MessageID: 3, IV: make([]byte, 16), Body: "%%%"}, testKey, "not base64"},
		{"short IV", &pipelines.TaskAgentMessage{MessageID: 3, IV: []byte{1}, Body: base64.StdEncoding.EncodeToString(make([]byte, 16))}, testKey, "does not decrypt"},
		{"not JSON", &pipelines.TaskAgentMessage{MessageID: 3, Body: "hunter2 {"}, nil, "invalid JSON"},
		{"no job token", &pipelines.TaskAgentMessage{MessageID: 3, Body: string(noTokenBody)}, nil, "SystemVssConnection"},
		{"empty", &pipelines.TaskAgentMessage{MessageID: 3, Body: "{}"}, nil, "no jobId, requestId, plan, timeline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeJobMessage(tt.msg, tt.key)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				for _, secret := range []string{testToken, "hunter2"} {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("error %q quotes the message body", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("decoded job (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeCancel(t *testing.T) {
	msg := encryptedMessage(t, testKey, []byte(`{"jobId":"job-1","timeout":"00:05:00"}`))
	got, err := decodeCancel(msg, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if got.JobID != "job-1" {
		t.Errorf("jobId = %q, want job-1", got.JobID)
	}
}

// FuzzDecodeJobMessage feeds arbitrary bodies through both the plain and the
// encrypted path: decoding must never panic, must agree between the two
// paths, and must never quote the body in an error.
func FuzzDecodeJobMessage(f *testing.F) {
	// Seeds beyond testdata/fuzz: a valid job, with and without a BOM.
	body, _ := json.Marshal(testJob())
	f.Add(body, []byte{}, false)
	f.Add(append([]byte{0xEF, 0xBB, 0xBF}, body...), []byte{}, true)
	f.Fuzz(func(t *testing.T, plaintext, iv []byte, encrypt bool) {
		plain := &pipelines.TaskAgentMessage{MessageID: 1, Body: string(plaintext)}
		plainJob, plainErr := DecodeJobMessage(plain, testKey)
		if plainErr == nil && (plainJob.JobID == "" || plainJob.RequestID <= 0) {
			t.Fatalf("accepted a job without id: %+v", plainJob)
		}
		if plainErr != nil && len(plaintext) >= 8 && strings.Contains(plainErr.Error(), string(plaintext)) {
			t.Fatalf("error quotes the body: %v", plainErr)
		}

		// Arbitrary IV and body bytes: no panic, only ErrDecrypt-style errors.
		raw := &pipelines.TaskAgentMessage{MessageID: 1, IV: iv, Body: base64.StdEncoding.EncodeToString(plaintext)}
		if len(iv) > 0 {
			_, _ = DecodeJobMessage(raw, testKey)
		}

		if encrypt {
			enc := encryptedMessage(t, testKey, plaintext)
			encJob, encErr := DecodeJobMessage(enc, testKey)
			if (encErr == nil) != (plainErr == nil) {
				t.Fatalf("encrypted and plain disagree: %v vs %v", encErr, plainErr)
			}
			if encErr == nil && !cmp.Equal(encJob, plainJob) {
				t.Fatalf("encrypted and plain decode differently:\n%s", cmp.Diff(plainJob, encJob))
			}
			if errors.Is(encErr, agentcrypto.ErrDecrypt) {
				t.Fatalf("a body encrypted with the session key did not decrypt: %v", encErr)
			}
		}
	})
}
