// Package dockerfile checks the Dockerfile's build stage without a Docker
// engine (there is none on agentry's build machines): it runs the very shell
// command of the build stage's last RUN for each binary, as the image build
// would, and checks the result is a static binary that starts.
package dockerfile

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// buildCommand returns the build stage's final RUN instruction, with line
// continuations joined.
func buildCommand(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	var last string
	inBuild := false
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "FROM "):
			inBuild = strings.HasSuffix(line, " AS build")
		case inBuild && strings.HasPrefix(line, "RUN "):
			last = strings.TrimPrefix(line, "RUN ")
		}
	}
	if !strings.Contains(last, "go build") {
		t.Fatalf("the build stage's last RUN is %q, want the go build command", last)
	}
	return last
}

func TestDockerfileBuildsEveryBinary(t *testing.T) {
	cmdline := buildCommand(t)
	b, _ := os.ReadFile("../../Dockerfile")
	// Every final stage must copy the binary its name promises.
	for _, stage := range []string{"agentry-manager", "agentry-agent", "agentry-server"} {
		if !regexp.MustCompile(`(?m)^FROM \S+ AS ` + stage + `$`).Match(b) {
			t.Errorf("Dockerfile has no final stage %q", stage)
		}
	}
	root, _ := filepath.Abs("../..")
	for _, binary := range []string{"agentry-manager", "agentry-agent", "agentry-server"} {
		t.Run(binary, func(t *testing.T) {
			out := t.TempDir()
			// The image writes to /out/app; here that folder is a temp dir.
			script := strings.ReplaceAll(cmdline, "/out/app", filepath.Join(out, "app"))
			cmd := exec.Command("sh", "-c", script)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "BINARY="+binary)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("the Dockerfile's build command failed for %s: %v\n%s", binary, err, b)
			}
			app := filepath.Join(out, "app")
			f, err := elf.Open(app)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("%s is dynamically linked; the distroless static image cannot run it", binary)
				}
			}
			if b, err := exec.Command(app, "--help").CombinedOutput(); err != nil {
				t.Errorf("%s --help: %v\n%s", binary, err, b)
			}
		})
	}
	bad := exec.Command("sh", "-c", cmdline)
	bad.Dir = root
	bad.Env = append(os.Environ(), "BINARY=nonsense")
	if err := bad.Run(); err == nil {
		t.Error("the build command accepted an unknown BINARY")
	}
}
