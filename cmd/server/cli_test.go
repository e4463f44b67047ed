package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server"
	"github.com/agentry-dev/agentry/internal/server/servertest"
)

// runCLI runs one command line in process with the given environment.
func runCLI(t *testing.T, ctx context.Context, env map[string]string, onListen func(net.Addr), args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := &cli{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return env[k] }, onListen: onListen}
	cmd := c.command()
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return stdout.String(), stderr.String(), err
}

// startServe runs `agentry-server serve` in process on a free port and
// returns its URL; it stops when the test ends.
func startServe(t *testing.T, env map[string]string, dataDir string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		_, _, err := runCLI(t, ctx, env, func(a net.Addr) { addr <- a },
			"serve", "--listen", "127.0.0.1:0", "--data", dataDir, "--long-poll", "200ms")
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case a := <-addr:
		return "http://" + a.String()
	case err := <-done:
		t.Fatalf("serve stopped: %v", err)
	}
	return ""
}

func TestServeAndClient(t *testing.T) {
	ctx := context.Background()
	env := map[string]string{envAdminToken: "cli-test-token"}
	dataDir := filepath.Join(t.TempDir(), "data")
	env[envServerURL] = startServe(t, env, dataDir)
	if _, err := os.Stat(filepath.Join(dataDir, server.DataMarker)); err != nil {
		t.Errorf("serve did not prepare its data folder: %v", err)
	}
	cli := func(args ...string) string {
		t.Helper()
		out, stderr, err := runCLI(t, ctx, env, nil, args...)
		if err != nil {
			t.Fatalf("agentry-server %s: %v (stderr %q)", strings.Join(args, " "), err, stderr)
		}
		return out
	}

	if out := cli("pool", "create", "default"); out != "1\n" {
		t.Errorf("pool create printed %q, want the pool id", out)
	}
	out := cli("job", "queue", "--pool", "default", "--name", "demo", "--bash", "--script", "echo one", "--script", "echo two")
	id, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("job queue printed %q, want only the job id", out)
	}
	if out := cli("job", "get", strconv.FormatInt(id, 10)); field(out, "State") != "queued" || field(out, "Name") != "demo" {
		t.Errorf("job get printed:\n%s\nwant a queued job named demo", out)
	}

	// An agent takes the job and finishes it.
	admin := pipelines.NewClient(env[envServerURL], pipelines.PersonalAccessToken(env[envAdminToken]), nil)
	inst := &servertest.Instance{URL: env[envServerURL], Admin: admin, Jobs: jobapi.Client{Client: admin}}
	agent := servertest.Connect(t, inst.RegisterAgent(t, "default", "agent-1"))
	job := agent.NextJob(t, 10*time.Second)
	if len(job.Steps) != 2 || job.Steps[0].Reference != pipelines.TaskBash || job.Steps[1].Inputs["script"] != "echo two" {
		t.Errorf("the job's steps are %+v, want two Bash@3 steps", job.Steps)
	}
	agent.Complete(t, job, pipelines.ResultSucceeded, "one\ntwo\n")

	var got jobapi.Job
	if err := json.Unmarshal([]byte(cli("job", "get", "-o", "json", strconv.FormatInt(id, 10))), &got); err != nil {
		t.Fatalf("job get -o json is not JSON: %v", err)
	}
	if got.ID != id || got.State != jobapi.StateCompleted || got.Result != pipelines.ResultSucceeded || got.AgentName != "agent-1" {
		t.Errorf("job get -o json = %+v, want it completed and succeeded on agent-1", got)
	}
	if out := cli("job", "get", strconv.FormatInt(id, 10)); field(out, "Result") != "succeeded" || field(out, "Agent") != "agent-1 (1)" {
		t.Errorf("job get printed:\n%s\nwant the result", out)
	}
	if out := cli("job", "logs", strconv.FormatInt(id, 10)); out != "one\ntwo\n" {
		t.Errorf("job logs printed %q, want the uploaded log", out)
	}
	if out := cli("job", "list", "--state", "completed"); !strings.Contains(out, "succeeded") {
		t.Errorf("job list printed:\n%s", out)
	}
}

// field reads "Key:   value" from job get's text output.
func field(out, key string) string {
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestCLIErrors(t *testing.T) {
	ctx := context.Background()
	env := map[string]string{envAdminToken: "tok"}
	env[envServerURL] = startServe(t, env, t.TempDir())
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"serve without a token", map[string]string{}, []string{"serve", "--listen", "127.0.0.1:0", "--data", t.TempDir()}, envAdminToken},
		{"client without a token", map[string]string{envServerURL: env[envServerURL]}, []string{"pool", "list"}, envAdminToken},
		{"client with a wrong token", map[string]string{envServerURL: env[envServerURL], envAdminToken: "nope"}, []string{"pool", "list"}, "401"},
		{"queue without a script", env, []string{"job", "queue", "--pool", "default"}, "script"},
		{"queue in a missing pool", env, []string{"job", "queue", "--pool", "nope", "--script", "x"}, "does not exist"},
		{"bad job id", env, []string{"job", "get", "x"}, "positive integer"},
		{"missing job", env, []string{"job", "logs", "99"}, "404"},
		{"unknown output", env, []string{"job", "get", "1", "-o", "yaml"}, "not"},
		{"bad log format", env, []string{"serve", "--log-format", "xml"}, "text or json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runCLI(t, ctx, tc.env, nil, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v (stdout %q), want an error mentioning %q", err, out, tc.want)
			}
		})
	}
}

// TestEveryFlagIsDocumented walks the command tree: every command has a
// short description and every flag a usage text.
func TestEveryFlagIsDocumented(t *testing.T) {
	c := &cli{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}
	var walk func(cmd *cobra.Command)
	walk = func(cmd *cobra.Command) {
		if cmd.Short == "" {
			t.Errorf("command %q has no description", cmd.CommandPath())
		}
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if strings.TrimSpace(f.Usage) == "" {
				t.Errorf("flag --%s of %q has no usage text", f.Name, cmd.CommandPath())
			}
		})
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(c.command())
}
