package pipelines

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/google/go-cmp/cmp"
)

func testFiles(t testing.TB) AgentFiles {
	t.Helper()
	k, err := agentcrypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return AgentFiles{
		Settings: AgentSettings{AgentID: 7, AgentName: "linux-abcde", PoolID: 3, PoolName: "default",
			ServerURL: "https://dev.azure.com/org", WorkFolder: "_work"},
		Credentials: Credentials{Scheme: "OAuth", Data: CredentialData{
			ClientID: "0d3b3c1e-0000-4000-8000-000000000001", AuthorizationURL: "https://vstoken.dev.azure.com/org"}},
		Key: agentcrypto.ParametersOf(k),
	}
}

func TestAgentFilesRoundTrip(t *testing.T) {
	want := testFiles(t)
	dir := t.TempDir()
	if err := WriteAgentDir(dir, want); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{AgentFile, CredentialsFile, RSAParamsFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, utf8BOM) {
			t.Errorf("%s does not start with a UTF-8 BOM as Microsoft's agent writes it", name)
		}
	}
	st, _ := os.Stat(filepath.Join(dir, RSAParamsFile))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %v, want 0600", RSAParamsFile, st.Mode().Perm())
	}
	got, err := ReadAgentDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
	if got.Credentials.TokenURL() != want.Credentials.Data.AuthorizationURL {
		t.Errorf("TokenURL = %q, want authorizationUrl when oauthEndpointUrl is empty", got.Credentials.TokenURL())
	}
}

// Microsoft's agent writes camelCase with a BOM; hand-written files may have
// neither and other casing. Both must read.
func TestParseAgentFilesAsMicrosoftWritesThem(t *testing.T) {
	f := testFiles(t)
	files, _ := f.Marshal()
	files[AgentFile] = []byte(`{"AgentId": 7, "AgentName": "linux-abcde", "PoolId": 3, "PoolName": "default",
		"ServerUrl": "https://dev.azure.com/org", "WorkFolder": "_work", "AcceptTeeEula": false}`)
	files[CredentialsFile] = append(bytes.Clone(utf8BOM), []byte(`{"scheme":"OAuth","data":{"clientId":"c","authorizationUrl":"https://a/","oauthEndpointUrl":"https://a/oauth2/token"}}`)...)
	got, err := ParseAgentFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	if got.Settings.AgentID != 7 || got.Credentials.TokenURL() != "https://a/oauth2/token" {
		t.Errorf("parsed %+v / token URL %q", got.Settings, got.Credentials.TokenURL())
	}
}

func TestParseAgentFilesErrors(t *testing.T) {
	good, _ := testFiles(t).Marshal()
	with := func(name string, content string) map[string][]byte {
		m := map[string][]byte{}
		for k, v := range good {
			m[k] = v
		}
		if content == "<missing>" {
			delete(m, name)
		} else {
			m[name] = []byte(content)
		}
		return m
	}
	cases := []struct {
		name  string
		files map[string][]byte
		want  string
	}{
		{"missing key file", with(RSAParamsFile, "<missing>"), ".credentials_rsaparams is missing"},
		{"agent not json", with(AgentFile, "{"), ".agent is not valid JSON"},
		{"no agent id", with(AgentFile, `{"poolId":1,"serverUrl":"http://x"}`), "no agentId"},
		{"no server", with(AgentFile, `{"agentId":1,"poolId":1}`), "no serverUrl"},
		{"wrong scheme", with(CredentialsFile, `{"scheme":"Negotiate","data":{"clientId":"c","authorizationUrl":"u"}}`), "want OAuth"},
		{"no client id", with(CredentialsFile, `{"scheme":"OAuth","data":{}}`), "no clientId"},
		{"broken key", with(RSAParamsFile, `{"modulus":"AQAB","exponent":"AQAB","d":"AQ=="}`), RSAParamsFile},
	}
	for _, c := range cases {
		_, err := ParseAgentFiles(c.files)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", c.name, err, c.want)
		}
	}
}

// The Secret's files must be what Microsoft's agent reads from its root
// folder (AgentSettings, OAuth CredentialData and RSAParametersSerializable
// in its source), so the same Secret runs Microsoft's agent against Azure
// DevOps: the documented field names, with JSON types the agent accepts.
func TestSecretFilesAreInMicrosoftsFormat(t *testing.T) {
	f := testFiles(t)
	f.Settings.Ephemeral = true // as the operator registers every agent
	files, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	decode := func(name string) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(bytes.TrimPrefix(files[name], utf8BOM), &m); err != nil {
			t.Fatalf("%s is not JSON: %v", name, err)
		}
		return m
	}
	wantTypes := func(name string, m map[string]any, want map[string]string) {
		t.Helper()
		for field, typ := range want {
			v, ok := m[field]
			got := fmt.Sprintf("%T", v)
			if !ok || got != typ {
				t.Errorf("%s: field %q = %v (%s), want a %s", name, field, v, got, typ)
			}
		}
	}
	agent := decode(AgentFile)
	wantTypes(AgentFile, agent, map[string]string{
		"agentId": "float64", "agentName": "string", "poolId": "float64", "poolName": "string",
		"serverUrl": "string", "workFolder": "string", "ephemeral": "bool",
	})
	creds := decode(CredentialsFile)
	if creds["scheme"] != "OAuth" {
		t.Errorf(".credentials scheme = %v, want OAuth", creds["scheme"])
	}
	data, _ := creds["data"].(map[string]any)
	wantTypes(CredentialsFile+" data", data, map[string]string{"clientId": "string", "authorizationUrl": "string"})
	params := decode(RSAParamsFile)
	fields := []string{"d", "dp", "dq", "exponent", "inverseQ", "modulus", "p", "q"}
	if len(params) != len(fields) {
		t.Errorf("%s has fields %v, want exactly %v", RSAParamsFile, slices.Sorted(maps.Keys(params)), fields)
	}
	for _, f := range fields {
		s, _ := params[f].(string)
		if _, err := base64.StdEncoding.DecodeString(s); s == "" || err != nil {
			t.Errorf("%s: %q = %q, want standard base64 (%v)", RSAParamsFile, f, s, err)
		}
	}
	// Microsoft's agent writes and reads the key file itself; one it wrote
	// (camelCase, BOM, .NET's big-endian byte arrays) reads back as the key.
	key, err := ParseAgentFiles(files)
	if err != nil {
		t.Fatalf("the Secret's files do not parse back: %v", err)
	}
	if _, err := key.Key.PrivateKey(); err != nil {
		t.Errorf("the key file does not give a usable RSA key: %v", err)
	}
}
