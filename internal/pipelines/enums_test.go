package pipelines

import (
	"encoding/json"
	"testing"
)

func TestTaskResultReadsNamesAndNumbers(t *testing.T) {
	cases := map[string]TaskResult{
		`"succeeded"`: ResultSucceeded, `"Failed"`: ResultFailed, `2`: ResultFailed, `"3"`: ResultCanceled,
		`5`: ResultAbandoned, `null`: "",
	}
	for in, want := range cases {
		var got TaskResult
		if err := json.Unmarshal([]byte(in), &got); err != nil || got != want {
			t.Errorf("Unmarshal(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`"great"`, `9`, `-1`, `{}`, `true`} {
		var got TaskResult
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("Unmarshal(%s) = %q, want an error", bad, got)
		}
	}
}

func TestAgentStatusAndState(t *testing.T) {
	var s AgentStatus
	if err := json.Unmarshal([]byte(`2`), &s); err != nil || s != AgentOnline {
		t.Errorf("status 2 = %q, %v; want online", s, err)
	}
	if err := json.Unmarshal([]byte(`"Offline"`), &s); err != nil || s != AgentOffline {
		t.Errorf(`status "Offline" = %q, %v`, s, err)
	}
	var st TimelineRecordState
	if err := json.Unmarshal([]byte(`1`), &st); err != nil || st != StateInProgress {
		t.Errorf("state 1 = %q, %v; want inProgress", st, err)
	}
}

func TestJobRequestWaiting(t *testing.T) {
	var waiting, taken, done TaskAgentJobRequest
	mustJSON(t, `{"requestId":1,"queueTime":"2026-11-26T10:00:00Z"}`, &waiting)
	mustJSON(t, `{"requestId":2,"receiveTime":"2026-11-26T10:00:01Z"}`, &taken)
	mustJSON(t, `{"requestId":3,"result":"failed","finishTime":"2026-11-26T10:00:02Z"}`, &done)
	if !waiting.Waiting() || taken.Waiting() || done.Waiting() {
		t.Errorf("Waiting() = %v %v %v, want true false false", waiting.Waiting(), taken.Waiting(), done.Waiting())
	}
}

func TestJobToken(t *testing.T) {
	var m AgentJobRequestMessage
	mustJSON(t, `{"resources":{"endpoints":[{"name":"other","url":"x"},
		{"name":"SystemVssConnection","url":"https://srv/","authorization":{"scheme":"OAuth","parameters":{"AccessToken":"tok"}}}]}}`, &m)
	u, tok, ok := m.JobToken()
	if !ok || u != "https://srv/" || tok != "tok" {
		t.Errorf("JobToken() = %q, %q, %v", u, tok, ok)
	}
	var none AgentJobRequestMessage
	if _, _, ok := none.JobToken(); ok {
		t.Error("JobToken() found a token in a message without endpoints")
	}
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatal(err)
	}
}
