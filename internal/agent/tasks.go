package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// scriptTask is a built-in task the agent runs itself: a generated script
// file given to a shell.
type scriptTask struct {
	name   string   // as it appears in messages, e.g. "Bash"
	argv   []string // the shell and its options; the script file is appended
	script string   // what the generated script file holds
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

// resolveTask finds how to run a step's task, as Microsoft's tasks do on
// Linux: CmdLine@2 and Bash@3 both write the script to a file and run
// `bash --noprofile --norc FILE` (no -e: a script's exit code is its last
// command's). CmdLine@2 falls back to /bin/sh where there is no bash.
// Bash@3 with targetType filePath runs `bash FILE ARGUMENTS` from a
// generated script, so arguments are split and quoted by the shell as on
// Azure. expand applies $(name) macros to inputs; sources is where a
// relative filePath is found.
func resolveTask(ref pipelines.TaskStepReference, inputs map[string]string, expand func(string) string, sources string) (scriptTask, error) {
	switch {
	case matches(ref, pipelines.TaskBash):
		bash, err := lookBash()
		if err != nil {
			return scriptTask{}, fmt.Errorf("task %s needs bash: %w", TaskLabel(ref), err)
		}
		t := scriptTask{name: "Bash", argv: []string{bash, "--noprofile", "--norc"}}
		switch target := strings.TrimSpace(input(inputs, "targetType")); {
		case target == "" || strings.EqualFold(target, "inline"):
			t.script = expand(input(inputs, "script"))
		case strings.EqualFold(target, "filePath"):
			path := strings.TrimSpace(expand(input(inputs, "filePath")))
			if path == "" {
				return scriptTask{}, fmt.Errorf("task %s: input filePath is empty", TaskLabel(ref))
			}
			if !filepath.IsAbs(path) {
				path = filepath.Join(sources, path)
			}
			if fi, err := os.Stat(path); err != nil || fi.IsDir() {
				return scriptTask{}, fmt.Errorf("task %s: the script file %s does not exist", TaskLabel(ref), path)
			}
			t.script = "exec " + shellQuote(bash) + " " + shellQuote(path)
			if args := strings.TrimSpace(expand(input(inputs, "arguments"))); args != "" {
				t.script += " " + args
			}
		default:
			return scriptTask{}, fmt.Errorf("task %s: targetType %q is not supported: use inline or filePath", TaskLabel(ref), target)
		}
		return t, nil
	case matches(ref, pipelines.TaskCmdLine):
		script := expand(input(inputs, "script"))
		if bash, err := lookBash(); err == nil {
			return scriptTask{name: "Bash", argv: []string{bash, "--noprofile", "--norc"}, script: script}, nil
		}
		return scriptTask{name: "sh", argv: []string{"/bin/sh"}, script: script}, nil
	}
	return scriptTask{}, fmt.Errorf("task %s is not supported: agentry-agent runs CmdLine@2 and Bash@3 only", TaskLabel(ref))
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func lookBash() (string, error) { return exec.LookPath("bash") }
