package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

func TestResolveTask(t *testing.T) {
	sources := t.TempDir()
	if err := os.WriteFile(filepath.Join(sources, "build.sh"), []byte("echo hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vars := map[string]pipelines.VariableValue{"target": {Value: "release"}}
	expand := func(s string) string { return ExpandMacros(s, vars) }
	tests := []struct {
		name       string
		ref        pipelines.TaskStepReference
		inputs     map[string]string
		wantArgs   string // joined flags after the shell; "" when an error is wanted
		wantScript string // the generated script holds this
		wantErr    string
	}{
		{"Bash by id", pipelines.TaskStepReference{ID: strings.ToUpper(pipelines.TaskBash.ID)}, map[string]string{"script": "echo $(target)"}, "--noprofile --norc", "echo release", ""},
		{"Bash by name", pipelines.TaskStepReference{Name: "bash", Version: "3.1.0"}, map[string]string{"TargetType": "INLINE", "script": "x"}, "--noprofile --norc", "x", ""},
		{"CmdLine", pipelines.TaskCmdLine, map[string]string{"script": "echo $(target)"}, "--noprofile --norc", "echo release", ""},
		{"CmdLine by name without version", pipelines.TaskStepReference{Name: "CmdLine"}, nil, "--noprofile --norc", "", ""},
		{"Bash relative file path with arguments", pipelines.TaskBash, map[string]string{"targetType": "filePath", "filePath": "build.sh", "arguments": "--mode '$(target)' two"},
			"--noprofile --norc", "'" + filepath.Join(sources, "build.sh") + "' --mode 'release' two", ""},
		{"Bash absolute file path", pipelines.TaskBash, map[string]string{"targetType": "filePath", "filePath": filepath.Join(sources, "build.sh")},
			"--noprofile --norc", "'" + filepath.Join(sources, "build.sh") + "'", ""},
		{"Bash missing file", pipelines.TaskBash, map[string]string{"targetType": "filePath", "filePath": "nope.sh"}, "", "", "the script file " + filepath.Join(sources, "nope.sh") + " does not exist"},
		{"Bash empty file path", pipelines.TaskBash, map[string]string{"targetType": "filePath"}, "", "", "input filePath is empty"},
		{"Bash unknown target type", pipelines.TaskBash, map[string]string{"targetType": "url"}, "", "", `targetType "url" is not supported`},
		{"wrong major", pipelines.TaskStepReference{Name: "Bash", Version: "2.0.0"}, nil, "", "", "task Bash@2 is not supported"},
		{"unknown task", pipelines.TaskStepReference{ID: "x", Name: "PowerShell", Version: "2.200.0"}, nil, "", "", "task PowerShell@2 is not supported"},
		{"unknown without name", pipelines.TaskStepReference{ID: "1234"}, nil, "", "", "task 1234 is not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task, err := resolveTask(tt.ref, tt.inputs, expand, sources)
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
			if !strings.Contains(task.script, tt.wantScript) {
				t.Errorf("script = %q, want it to hold %q", task.script, tt.wantScript)
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"a b": "'a b'", "it's": `'it'\''s'`, "": "''"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
