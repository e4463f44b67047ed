package agent

import (
	"strings"
	"testing"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

func TestResolveTask(t *testing.T) {
	tests := []struct {
		name     string
		ref      pipelines.TaskStepReference
		inputs   map[string]string
		wantArgs string // joined flags after the shell; "" when an error is wanted
		wantErr  string
	}{
		{"Bash by id", pipelines.TaskStepReference{ID: strings.ToUpper(pipelines.TaskBash.ID)}, nil, "--noprofile --norc -e -o pipefail", ""},
		{"Bash by name", pipelines.TaskStepReference{Name: "bash", Version: "3.1.0"}, map[string]string{"targetType": "inline"}, "--noprofile --norc -e -o pipefail", ""},
		{"CmdLine", pipelines.TaskCmdLine, nil, "--noprofile --norc -e", ""},
		{"CmdLine by name without version", pipelines.TaskStepReference{Name: "CmdLine"}, nil, "--noprofile --norc -e", ""},
		{"wrong major", pipelines.TaskStepReference{Name: "Bash", Version: "2.0.0"}, nil, "", "task Bash@2 is not supported"},
		{"unknown task", pipelines.TaskStepReference{ID: "x", Name: "PowerShell", Version: "2.200.0"}, nil, "", "task PowerShell@2 is not supported"},
		{"unknown without name", pipelines.TaskStepReference{ID: "1234"}, nil, "", "task 1234 is not supported"},
		{"Bash file path", pipelines.TaskBash, map[string]string{"targetType": "filePath"}, "", "targetType \"filePath\" is not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task, err := resolveTask(tt.ref, tt.inputs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(task.argv[1:], " "); got != tt.wantArgs {
				t.Errorf("flags = %q, want %q", got, tt.wantArgs)
			}
		})
	}
}
