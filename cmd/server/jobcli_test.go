package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/servertest"
)

// TestJobCancelFollowAndSecrets covers job cancel, job logs -f and queue's
// --secret/--var/--timeout from the command line.
func TestJobCancelFollowAndSecrets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := map[string]string{envAdminToken: "cli-test-token"}
	env[envServerURL] = startServe(t, env, t.TempDir())
	cli := func(args ...string) string {
		t.Helper()
		out, stderr, err := runCLI(t, ctx, env, nil, args...)
		if err != nil {
			t.Fatalf("agentry-server %s: %v (stderr %q)", strings.Join(args, " "), err, stderr)
		}
		return out
	}
	cli("pool", "create", "default")

	queued := strings.TrimSpace(cli("job", "queue", "--pool", "default", "--script", "sleep 100"))
	if out := cli("job", "cancel", queued); out != "completed (canceled)\n" {
		t.Errorf("job cancel of a queued job printed %q", out)
	}

	id := strings.TrimSpace(cli("job", "queue", "--pool", "default", "--script", "echo $PW",
		"--secret", "PW=t0ps3cret", "--var", "A=b", "--timeout", "7"))
	if out := cli("job", "get", "-o", "json", id); strings.Contains(out, "t0ps3cret") || !strings.Contains(out, `"timeoutInMinutes": 7`) {
		t.Errorf("job get -o json printed:\n%s\nwant the timeout and no secret", out)
	}
	admin := pipelines.NewClient(env[envServerURL], pipelines.PersonalAccessToken(env[envAdminToken]), nil)
	inst := &servertest.Instance{URL: env[envServerURL], Admin: admin, Jobs: jobapi.Client{Client: admin}}
	agent := servertest.Connect(t, inst.RegisterAgent(t, "default", "agent-1"))
	job := agent.NextJob(t, 10*time.Second)
	if v := job.Variables["PW"]; v.Value != "t0ps3cret" || !v.IsSecret || job.Variables["A"].Value != "b" {
		t.Errorf("job variables = %+v", job.Variables)
	}

	type result struct {
		out string
		err error
	}
	followed := make(chan result, 1)
	go func() {
		out, _, err := runCLI(t, ctx, env, nil, "job", "logs", "-f", id)
		followed <- result{out, err}
	}()
	// The agent leaks the secret into its log; the follower ends with the job.
	agent.Complete(t, job, pipelines.ResultSucceeded, "pw t0ps3cret\n")
	r := <-followed
	if r.err != nil || r.out != "pw ***\n" {
		t.Errorf("job logs -f = %q, %v; want the log with the secret masked", r.out, r.err)
	}
	if _, _, err := runCLI(t, ctx, env, nil, "job", "cancel", id); err == nil || !strings.Contains(err.Error(), "already finished") {
		t.Errorf("cancel of a finished job: %v", err)
	}
}
