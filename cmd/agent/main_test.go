package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentry-dev/agentry/internal/agent"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/poll"
	"github.com/agentry-dev/agentry/internal/server/servertest"
)

const testTimeout = 60 * time.Second

// buildAgent builds the real agentry-agent binary.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agentry-agent")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// agentProcess is the binary started with the given extra environment.
type agentProcess struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
}

func startAgent(t *testing.T, bin string, env []string, args ...string) *agentProcess {
	t.Helper()
	p := &agentProcess{cmd: exec.Command(bin, args...)}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AGENTRY_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	return p
}

// wait returns the exit code.
func (p *agentProcess) wait(t *testing.T) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(testTimeout):
		_ = p.cmd.Process.Kill()
		t.Fatalf("agentry-agent still running after %s; stderr:\n%s", testTimeout, p.stderr.String())
		return -1
	}
}

// lastLine is the process's exit reason.
func (p *agentProcess) lastLine() string {
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	return lines[len(lines)-1]
}

type fixture struct {
	srv *servertest.Instance
	dir string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	srv := servertest.Start(t, servertest.WithLongPoll(200*time.Millisecond))
	srv.CreatePool(t, "linux")
	files := srv.RegisterAgent(t, "linux", "agent-1")
	dir := t.TempDir()
	if err := pipelines.WriteAgentDir(dir, files); err != nil {
		t.Fatal(err)
	}
	return fixture{srv: srv, dir: dir}
}

func (f fixture) queue(t *testing.T, script string) *jobapi.Job {
	t.Helper()
	j, err := f.srv.Jobs.QueueJob(context.Background(), jobapi.JobSpec{Pool: "linux", Steps: []jobapi.Step{{Script: script}}})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestBinaryRunsAJob(t *testing.T) {
	bin := buildAgent(t)
	f := newFixture(t)
	job := f.queue(t, "echo binary-marker-$((6*7)); echo step-gomaxprocs=${GOMAXPROCS-unset}")
	work := filepath.Join(t.TempDir(), "work")
	p := startAgent(t, bin, []string{"AGENTRY_AGENT_DIR=" + f.dir, "AGENTRY_WORK_DIR=" + work})
	if code := p.wait(t); code != agent.ExitRanJob {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, agent.ExitRanJob, p.stderr.String())
	}
	if got := f.srv.WaitJob(t, job.ID, testTimeout); got.Result != pipelines.ResultSucceeded {
		t.Errorf("job result %s, want succeeded", got.Result)
	}
	log, err := f.srv.Jobs.JobLog(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log, "binary-marker-42") {
		t.Errorf("job log lacks the marker:\n%s", log)
	}
	// The agent runs on one P; its steps' Go programs must not inherit that.
	want := "step-gomaxprocs=unset"
	if v, ok := os.LookupEnv("GOMAXPROCS"); ok {
		want = "step-gomaxprocs=" + v
	}
	if !strings.Contains(log, want) {
		t.Errorf("job log lacks %q: the step's environment was changed:\n%s", want, log)
	}
	if _, err := os.Stat(work); err != nil {
		t.Errorf("--work-dir from the environment was not used: %v", err)
	}
}

// SIGTERM cancels the running job, which is still reported; the agent did
// its work, so it exits 0.
func TestBinaryStopsOnSIGTERM(t *testing.T) {
	bin := buildAgent(t)
	f := newFixture(t)
	job := f.queue(t, "echo started; sleep 300")
	p := startAgent(t, bin, nil, "--dir", f.dir)
	if err := poll.Until(context.Background(), testTimeout, 20*time.Millisecond, func() error {
		j, err := f.srv.Jobs.GetJob(context.Background(), job.ID)
		if err == nil && j.State != jobapi.StateRunning {
			err = fmt.Errorf("job %s", j.State)
		}
		return err
	}); err != nil {
		t.Fatalf("job never started: %v; stderr:\n%s", err, p.stderr.String())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signaled := time.Now()
	if code := p.wait(t); code != agent.ExitRanJob {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, agent.ExitRanJob, p.stderr.String())
	}
	// Kubernetes kills the pod 30 s (its default grace period) after SIGTERM.
	if took := time.Since(signaled); took >= 30*time.Second {
		t.Errorf("the agent took %s to leave after SIGTERM, longer than a pod's grace period", took)
	}
	if got := f.srv.WaitJob(t, job.ID, testTimeout); got.Result != pipelines.ResultCanceled {
		t.Errorf("job result %s, want canceled", got.Result)
	}
}

func TestBinaryExitCodes(t *testing.T) {
	bin := buildAgent(t)
	f := newFixture(t)
	tests := []struct {
		name     string
		env      []string
		args     []string
		want     int
		wantLast string
	}{
		{"no agent folder", nil, nil, agent.ExitBadConfiguration, "agentry-agent: bad configuration: no agent folder"},
		{"unknown flag", nil, []string{"--dir", f.dir, "--nope"}, agent.ExitBadConfiguration, "agentry-agent: bad configuration: unknown flag"},
		{"bad idle timeout in env", []string{"AGENTRY_IDLE_TIMEOUT=soon"}, []string{"--dir", f.dir}, agent.ExitBadConfiguration, "agentry-agent: bad configuration: AGENTRY_IDLE_TIMEOUT"},
		{"idle timeout", []string{"AGENTRY_AGENT_DIR=" + f.dir}, []string{"--idle-timeout", "300ms"}, agent.ExitIdleTimeout, "agentry-agent: no job arrived before the idle timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startAgent(t, bin, tt.env, tt.args...)
			if code := p.wait(t); code != tt.want {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.want, p.stderr.String())
			}
			if last := p.lastLine(); !strings.HasPrefix(last, tt.wantLast) {
				t.Errorf("last stderr line %q, want it to start with %q", last, tt.wantLast)
			}
		})
	}
}

func TestHelpListsExitCodes(t *testing.T) {
	var out bytes.Buffer
	cmd := newCommand(&out)
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for code, meaning := range map[int]string{
		agent.ExitRanJob: "ran a job", agent.ExitError: "other error", agent.ExitBadConfiguration: "bad configuration",
		agent.ExitCredentialsRejected: "credentials rejected", agent.ExitDeregistered: "deregistered", agent.ExitIdleTimeout: "idle timeout",
	} {
		if !strings.Contains(out.String(), " "+string(rune('0'+code))+"  "+meaning) {
			t.Errorf("help does not document exit code %d (%s):\n%s", code, meaning, out.String())
		}
	}
}
