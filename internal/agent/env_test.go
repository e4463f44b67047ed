package agent

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

func TestEnvName(t *testing.T) {
	tests := map[string]string{
		"build.sourcesDirectory": "BUILD_SOURCESDIRECTORY",
		"my var.x":               "MY_VAR_X",
		"ALREADY_UPPER":          "ALREADY_UPPER",
		"a.b.c":                  "A_B_C",
		"":                       "",
	}
	for in, want := range tests {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStepEnv(t *testing.T) {
	base := []string{"PATH=/bin", "AGENTRY_AGENT_DIR=/secret/dir", "HOME=/root", "SYSTEM_ACCESSTOKEN=inherited", "MY_VAR=from-agent"}
	vars := map[string]pipelines.VariableValue{
		"my.var":             {Value: "from-job"},
		"password":           {Value: "hunter2", IsSecret: true},
		"system.accessToken": {Value: "tok", IsSecret: false},
		"bad=name":           {Value: "x"},
		"nul":                {Value: "a\x00b"},
	}
	tests := []struct {
		name   string
		enable string
		want   []string
	}{
		{"token not exported by default", "", []string{"PATH=/bin", "HOME=/root", "MY_VAR=from-job"}},
		{"token exported when enabled", "true", []string{"PATH=/bin", "HOME=/root", "MY_VAR=from-job", "SYSTEM_ENABLEACCESSTOKEN=true", "SYSTEM_ACCESSTOKEN=tok"}},
		{"only the exact value true enables", "yes", []string{"PATH=/bin", "HOME=/root", "MY_VAR=from-job", "SYSTEM_ENABLEACCESSTOKEN=yes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := map[string]pipelines.VariableValue{}
			for k, x := range vars {
				v[k] = x
			}
			if tt.enable != "" {
				v["system.enableAccessToken"] = pipelines.VariableValue{Value: tt.enable}
			}
			if diff := cmp.Diff(tt.want, StepEnv(base, v, "tok")); diff != "" {
				t.Errorf("StepEnv (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExpandMacros(t *testing.T) {
	vars := map[string]pipelines.VariableValue{
		"Build.SourcesDirectory": {Value: "/w/s"},
		"password":               {Value: "hunter2", IsSecret: true},
		"system.accessToken":     {Value: "tok", IsSecret: true},
		"nested":                 {Value: "$(password)"},
	}
	tests := []struct{ in, want string }{
		{"cd $(build.sourcesdirectory)", "cd /w/s"},
		{"echo $(password)", "echo hunter2"},
		{"echo $(unknown) $(password)", "echo $(unknown) hunter2"},
		{"echo $(System.AccessToken)", "echo $(System.AccessToken)"},
		{"echo $(nested)", "echo $(password)"}, // one pass only
		{"echo $(PASSWORD)x$(password)", "echo hunter2xhunter2"},
		{"echo $(not closed", "echo $(not closed"},
		{"echo $(a b)", "echo $(a b)"},
		{"$HOME and $(HOME)", "$HOME and $(HOME)"},
	}
	for _, tt := range tests {
		if got := ExpandMacros(tt.in, vars); got != tt.want {
			t.Errorf("ExpandMacros(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
