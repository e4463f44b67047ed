package pipelines

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
)

// The names of the files Microsoft's agent keeps in its root folder. They are
// also the keys of an agent's Secret.
const (
	AgentFile       = ".agent"
	CredentialsFile = ".credentials"
	RSAParamsFile   = ".credentials_rsaparams"
)

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// AgentSettings is the .agent file.
type AgentSettings struct {
	AgentID    int    `json:"agentId"`
	AgentName  string `json:"agentName"`
	PoolID     int    `json:"poolId"`
	PoolName   string `json:"poolName,omitempty"`
	ServerURL  string `json:"serverUrl"`
	WorkFolder string `json:"workFolder"`
	// Ephemeral tells Microsoft's agent to take one job and unregister.
	Ephemeral bool `json:"ephemeral,omitempty"`
}

// CredentialData is the data of an OAuth credential.
type CredentialData struct {
	ClientID         string `json:"clientId"`
	AuthorizationURL string `json:"authorizationUrl"`
	OAuthEndpointURL string `json:"oauthEndpointUrl,omitempty"`
}

// Credentials is the .credentials file.
type Credentials struct {
	Scheme string         `json:"scheme"`
	Data   CredentialData `json:"data"`
}

// TokenURL is where the agent trades its assertion: oauthEndpointUrl, which
// defaults to authorizationUrl.
func (c Credentials) TokenURL() string {
	if c.Data.OAuthEndpointURL != "" {
		return c.Data.OAuthEndpointURL
	}
	return c.Data.AuthorizationURL
}

// AgentFiles is an agent's identity: its settings, its credential and its key.
type AgentFiles struct {
	Settings    AgentSettings
	Credentials Credentials
	Key         agentcrypto.RSAParameters
}

// Marshal encodes the three files as Microsoft's agent writes them: JSON,
// camelCase, UTF-8 with a BOM. The map is keyed by file name.
func (f AgentFiles) Marshal() (map[string][]byte, error) {
	out := map[string][]byte{}
	for name, v := range map[string]any{AgentFile: f.Settings, CredentialsFile: f.Credentials, RSAParamsFile: f.Key} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", name, err)
		}
		out[name] = append(append([]byte{}, utf8BOM...), b...)
	}
	return out, nil
}

// ParseAgentFiles decodes and checks the three files, with or without a BOM.
func ParseAgentFiles(files map[string][]byte) (AgentFiles, error) {
	var f AgentFiles
	for name, v := range map[string]any{AgentFile: &f.Settings, CredentialsFile: &f.Credentials, RSAParamsFile: &f.Key} {
		b, ok := files[name]
		if !ok {
			return AgentFiles{}, fmt.Errorf("%s is missing", name)
		}
		if err := json.Unmarshal(bytes.TrimPrefix(b, utf8BOM), v); err != nil {
			return AgentFiles{}, fmt.Errorf("%s is not valid JSON: %w", name, err)
		}
	}
	switch {
	case f.Settings.AgentID <= 0:
		return AgentFiles{}, errors.New(".agent has no agentId")
	case f.Settings.PoolID <= 0:
		return AgentFiles{}, errors.New(".agent has no poolId")
	case f.Settings.ServerURL == "":
		return AgentFiles{}, errors.New(".agent has no serverUrl")
	case f.Credentials.Scheme != "OAuth":
		return AgentFiles{}, fmt.Errorf(".credentials scheme is %q, want OAuth", f.Credentials.Scheme)
	case f.Credentials.Data.ClientID == "" || f.Credentials.TokenURL() == "":
		return AgentFiles{}, errors.New(".credentials has no clientId or authorizationUrl")
	}
	if _, err := f.Key.PrivateKey(); err != nil {
		return AgentFiles{}, fmt.Errorf("%s: %w", RSAParamsFile, err)
	}
	return f, nil
}

// ReadAgentDir reads the three files from an agent's root folder.
func ReadAgentDir(dir string) (AgentFiles, error) {
	files := map[string][]byte{}
	for _, name := range []string{AgentFile, CredentialsFile, RSAParamsFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return AgentFiles{}, fmt.Errorf("reading agent files: %w", err)
		}
		files[name] = b
	}
	return ParseAgentFiles(files)
}

// WriteAgentDir writes the three files into dir; the key file is mode 0600.
func WriteAgentDir(dir string, f AgentFiles) error {
	files, err := f.Marshal()
	if err != nil {
		return err
	}
	for name, b := range files {
		mode := os.FileMode(0o644)
		if name == RSAParamsFile {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, mode); err != nil {
			return err
		}
	}
	return nil
}
