// Command demo runs agentry whole on this machine and shows it working: a
// small real cluster with a process-backed node, agentry-server, the
// operator, the sample pool, and three sample jobs (two succeed, one fails
// on purpose). It prints progress live, each job's result and the end of its
// log, tears everything down, and exits non-zero if any job did not end as
// it should. Run it with `make demo`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/test/stack"
)

type sample struct {
	name   string
	script string
	want   pipelines.TaskResult
}

var samples = []sample{
	{"hello", "echo Hello from an ephemeral agentry agent; uname -sm", pipelines.ResultSucceeded},
	{"build", "set -e; for i in 1 2 3; do echo compiling module $i; done; echo build OK", pipelines.ResultSucceeded},
	{"broken-test", "echo running tests; echo 'FAIL: expected 2, got 3' >&2; exit 1", pipelines.ResultFailed},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "agentry-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	s, err := stack.Start(ctx, stack.Options{RepoRoot: root, WorkDir: work, Progress: os.Stdout})
	defer func() {
		fmt.Println("tearing down")
		s.Stop()
	}()
	if err != nil {
		return err
	}
	fmt.Println("applying config/samples/agentry_v1alpha1_agentpool.yaml with kubectl")
	if err := s.ApplySample(ctx, "agentry_v1alpha1_agentpool.yaml"); err != nil {
		return err
	}

	ids := make([]int64, len(samples))
	for i, smp := range samples {
		out, err := s.ServerCLI(ctx, "job", "queue", "--pool", "default", "--script", smp.script)
		if err != nil {
			return fmt.Errorf("queueing %s: %w", smp.name, err)
		}
		if ids[i], err = strconv.ParseInt(out, 10, 64); err != nil {
			return fmt.Errorf("job queue printed %q, want a job id", out)
		}
		fmt.Printf("queued job %d (%s)\n", ids[i], smp.name)
	}

	jobs, err := follow(ctx, s, ids)
	if err != nil {
		fmt.Fprintln(os.Stderr, "---- agentry-manager log (tail) ----\n"+s.Logs("agentry-manager", 30))
		return err
	}

	failures := 0
	fmt.Println()
	for i, j := range jobs {
		verdict := "as expected"
		if j.Result != samples[i].want {
			verdict = fmt.Sprintf("UNEXPECTED, wanted %s", samples[i].want)
			failures++
		}
		fmt.Printf("job %d %-12s %-10s on %-24s (%s)\n", j.ID, samples[i].name, j.Result, j.AgentName, verdict)
		log, err := s.Jobs.JobLog(ctx, j.ID)
		if err != nil {
			return err
		}
		for _, line := range tail(log, 5) {
			fmt.Println("    │ " + line)
		}
	}
	if failures > 0 {
		return fmt.Errorf("%d sample job(s) did not end as they should", failures)
	}
	fmt.Println("\nall sample jobs ended as expected")
	return nil
}

// follow prints a status line whenever it changes (checked four times a
// second) until every job is completed and
// the operator has removed every agent.
func follow(ctx context.Context, s *stack.Stack, ids []int64) ([]*jobapi.Job, error) {
	jobs := make([]*jobapi.Job, len(ids))
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	last := ""
	for {
		counts := map[string]int{}
		done := 0
		for i, id := range ids {
			j, err := s.Jobs.GetJob(ctx, id)
			if err != nil {
				return nil, err
			}
			jobs[i] = j
			counts[j.State]++
			if j.State == jobapi.StateCompleted {
				done++
			}
		}
		pods, err := s.Kube.CoreV1().Pods(stack.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		phases := map[string]int{}
		for _, p := range pods.Items {
			phases[strings.ToLower(string(p.Status.Phase))]++
		}
		line := fmt.Sprintf("jobs: %d waiting, %d running, %d done | agent pods: %d pending, %d running, %d finished",
			counts[jobapi.StateQueued], counts[jobapi.StateAssigned]+counts[jobapi.StateRunning], done,
			phases["pending"], phases["running"], phases["succeeded"]+phases["failed"])
		if line != last {
			fmt.Println(line)
			last = line
		}
		if done == len(ids) && len(pods.Items) == 0 {
			return jobs, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("jobs did not finish: %w", ctx.Err())
		case <-t.C:
		}
	}
}

func tail(s string, n int) []string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
