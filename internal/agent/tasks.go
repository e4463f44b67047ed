package agent

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// scriptTask is a built-in task the agent runs itself: an inline script
// given to a shell.
type scriptTask struct {
	name string   // as it appears in messages, e.g. "Bash"
	argv []string // the shell and its options; the script file is appended
}

// TaskLabel names a step's task the way a pipeline author writes it, e.g.
// "Bash@3", or by its id when it has no name.
func TaskLabel(ref pipelines.TaskStepReference) string {
	name := ref.Name
	if name == "" {
		name = ref.ID
	}
	if major, _, _ := strings.Cut(ref.Version, "."); major != "" {
		return name + "@" + major
	}
	return name
}

// matches reports whether ref is the built-in task want: by id, or by name
// and major version.
func matches(ref, want pipelines.TaskStepReference) bool {
	if ref.ID != "" && strings.EqualFold(ref.ID, want.ID) {
		return true
	}
	wantMajor, _, _ := strings.Cut(want.Version, ".")
	major, _, _ := strings.Cut(ref.Version, ".")
	return strings.EqualFold(ref.Name, want.Name) && (major == "" || major == wantMajor)
}

// resolveTask finds how to run a step's task. Bash@3 runs with
// `bash --noprofile --norc -e -o pipefail`; CmdLine@2 with `bash -e`, or
// `/bin/sh -e` where there is no bash.
func resolveTask(ref pipelines.TaskStepReference, inputs map[string]string) (scriptTask, error) {
	switch {
	case matches(ref, pipelines.TaskBash):
		if t := strings.TrimSpace(inputs["targetType"]); t != "" && !strings.EqualFold(t, "inline") {
			return scriptTask{}, fmt.Errorf("task %s: targetType %q is not supported: agentry-agent runs inline scripts only", TaskLabel(ref), t)
		}
		bash, err := lookBash()
		if err != nil {
			return scriptTask{}, fmt.Errorf("task %s needs bash: %w", TaskLabel(ref), err)
		}
		return scriptTask{name: "Bash", argv: []string{bash, "--noprofile", "--norc", "-e", "-o", "pipefail"}}, nil
	case matches(ref, pipelines.TaskCmdLine):
		if bash, err := lookBash(); err == nil {
			return scriptTask{name: "Bash", argv: []string{bash, "--noprofile", "--norc", "-e"}}, nil
		}
		return scriptTask{name: "sh", argv: []string{"/bin/sh", "-e"}}, nil
	}
	return scriptTask{}, fmt.Errorf("task %s is not supported: agentry-agent runs CmdLine@2 and Bash@3 only", TaskLabel(ref))
}

func lookBash() (string, error) { return exec.LookPath("bash") }
