package pipelines

import (
	"encoding/json"
	"testing"
)

// FuzzParseAgentFiles feeds arbitrary file contents to the agent-file reader.
func FuzzParseAgentFiles(f *testing.F) {
	good, _ := testFiles(f).Marshal()
	f.Add(good[AgentFile], good[CredentialsFile], good[RSAParamsFile])
	f.Add([]byte("\xef\xbb\xbf{}"), []byte(`{"scheme":"OAuth"}`), []byte(`{}`))
	f.Fuzz(func(t *testing.T, agent, creds, key []byte) {
		got, err := ParseAgentFiles(map[string][]byte{AgentFile: agent, CredentialsFile: creds, RSAParamsFile: key})
		if err != nil {
			return
		}
		if got.Settings.AgentID <= 0 || got.Credentials.TokenURL() == "" {
			t.Fatalf("accepted incomplete files: %+v", got.Settings)
		}
	})
}

// FuzzDecodeMessages feeds arbitrary JSON to the wire types an agent or the
// operator decodes from a server.
func FuzzDecodeMessages(f *testing.F) {
	f.Add([]byte(`{"messageId":1,"messageType":"PipelineAgentJobRequest","iv":"AAAAAAAAAAAAAAAAAAAAAA==","body":"x"}`))
	f.Add([]byte(`{"plan":{"version":8},"jobId":"j","requestId":3,"steps":[{"type":"task","inputs":{"script":"echo"}}]}`))
	f.Add([]byte(`{"count":1,"value":[{"requestId":1,"result":2}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m TaskAgentMessage
		_ = json.Unmarshal(b, &m)
		var j AgentJobRequestMessage
		if json.Unmarshal(b, &j) == nil {
			_, _, _ = j.JobToken()
		}
		var l List[TaskAgentJobRequest]
		if json.Unmarshal(b, &l) == nil {
			for i := range l.Value {
				_ = l.Value[i].Waiting()
			}
		}
		var e WrappedException
		_ = json.Unmarshal(b, &e)
	})
}
