// Command bench-agent measures the real agentry-agent binary against a real
// agentry-server on this machine and prints a table:
//
//   - process start → session open: from exec to the agent's "Waiting for a
//     job" log line, which it writes once its session is open (median of runs);
//   - peak RSS of the agent process while its job prints 100 MB: VmHWM from
//     /proc/PID/status, sampled until the process exits, and the kernel's
//     own maxrss from wait4;
//   - log throughput: the step's output bytes divided by the time from the
//     job's start (first lock renewal) to its finish (JobCompleted), which
//     includes uploading the whole log to the server;
//   - CPU per job: user+sys time of one agent process that takes a queued
//     one-step `echo bench` job, runs it and exits (median of -cpu-runs),
//     from the rusage wait4 returns, which counts the process and the
//     children it reaped (the step's shell). The agent runs as in a pod: no
//     --work-dir, so it makes and removes a temporary work folder. The
//     shell's share is measured apart, by running the same shell on the
//     same script alone; the agent's own share is the difference. Only the
//     sum user+sys is given: the kernel splits it by sampling clock ticks,
//     which says little about a process that lives a few ticks.
//
// Usage: go run ./hack/bench-agent [-agent PATH] [-mb 100] [-runs 7] [-cpu-runs 15] [-rows FILE]
//
// -rows also writes the figures as hack/benchrows lines, for hack/benchall.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"

	"github.com/agentry-dev/agentry/hack/benchrows"
	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server"
)

// Targets from issue 4.
const (
	targetSessionOpen = 100 * time.Millisecond
	targetRSSKiB      = 30 << 10
	targetMBps        = 50.0
)

func main() {
	agentBin := flag.String("agent", "", "agentry-agent binary (default: build ./cmd/agent)")
	mb := flag.Int("mb", 100, "megabytes the benchmark job prints")
	runs := flag.Int("runs", 7, "agent starts to time")
	cpuRuns := flag.Int("cpu-runs", 15, "one-step jobs to measure the agent's CPU time with")
	rowsPath := flag.String("rows", "", "also write the results to this file as tab-separated rows")
	flag.Parse()
	if *runs < 1 || *cpuRuns < 1 {
		fmt.Fprintln(os.Stderr, "bench-agent: -runs and -cpu-runs must be at least 1")
		os.Exit(2)
	}
	if err := run(*agentBin, *mb, *runs, *cpuRuns, *rowsPath); err != nil {
		fmt.Fprintln(os.Stderr, "bench-agent:", err)
		os.Exit(1)
	}
}

func run(agentBin string, mb, runs, cpuRuns int, rowsPath string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tmp, err := os.MkdirTemp("", "bench-agent-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if agentBin == "" {
		agentBin = filepath.Join(tmp, "agentry-agent")
		build := exec.Command("go", "build", "-trimpath", "-o", agentBin, "./cmd/agent")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("building the agent: %v\n%s", err, out)
		}
	}

	srv, err := startServer(ctx, tmp)
	if err != nil {
		return err
	}
	if _, err := srv.admin.AddPool(ctx, "bench"); err != nil {
		return err
	}

	// Process start → session open.
	var opens []time.Duration
	for i := range runs {
		dir, err := srv.registerAgent(ctx, tmp, "bench", fmt.Sprintf("start-%d", i))
		if err != nil {
			return err
		}
		d, err := timeSessionOpen(agentBin, dir)
		if err != nil {
			return err
		}
		opens = append(opens, d)
	}
	slices.Sort(opens)

	// CPU time of one-step jobs, and of their shell alone.
	// Every agent is registered (a key takes this process tens of
	// milliseconds of CPU) before any is timed, so that the machine is as
	// quiet as it gets while they run.
	var cpuDirs []string
	for i := range cpuRuns {
		dir, err := srv.registerAgent(ctx, tmp, "bench", fmt.Sprintf("cpu-%d", i))
		if err != nil {
			return err
		}
		cpuDirs = append(cpuDirs, dir)
	}
	runtime.GC()
	var jobCPU, shellCPU []time.Duration
	for _, dir := range cpuDirs {
		c, err := srv.timeJobCPU(ctx, agentBin, dir)
		if err != nil {
			return err
		}
		jobCPU = append(jobCPU, c)
	}
	for range cpuRuns {
		c, err := timeShellCPU(tmp)
		if err != nil {
			return err
		}
		shellCPU = append(shellCPU, c)
	}
	slices.Sort(jobCPU)
	slices.Sort(shellCPU)
	cpu, shell := jobCPU[len(jobCPU)/2], shellCPU[len(shellCPU)/2]

	// 100 MB job: RSS and throughput.
	dir, err := srv.registerAgent(ctx, tmp, "bench", "big")
	if err != nil {
		return err
	}
	const width = 100
	lines := mb * 1_000_000 / width
	job, err := srv.jobs.QueueJob(ctx, jobapi.JobSpec{Pool: "bench", Name: "print", Steps: []jobapi.Step{{
		Script: fmt.Sprintf(`yes "$(printf '%%0%dd' 7)" | head -n %d`, width-1, lines),
	}}})
	if err != nil {
		return err
	}
	hwm, maxrss, err := runSampled(agentBin, dir, filepath.Join(tmp, "work"))
	if err != nil {
		return err
	}
	j, err := srv.jobs.GetJob(ctx, job.ID)
	if err != nil {
		return err
	}
	if j.Result != pipelines.ResultSucceeded || j.StartTime == nil || j.FinishTime == nil {
		return fmt.Errorf("the benchmark job did not succeed: %+v", j)
	}
	log, err := srv.jobs.JobLog(ctx, job.ID)
	if err != nil {
		return err
	}
	output := lines * width
	took := j.FinishTime.Sub(*j.StartTime)
	mbps := float64(output) / 1e6 / took.Seconds()

	median := opens[len(opens)/2]
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "metric\tmeasured\ttarget\t\n")
	fmt.Fprintf(tw, "process start → session open (median of %d; min %s, max %s)\t%s\t< %s\t%s\n",
		len(opens), opens[0].Round(time.Millisecond), opens[len(opens)-1].Round(time.Millisecond), median.Round(time.Millisecond), targetSessionOpen, verdict(median < targetSessionOpen))
	fmt.Fprintf(tw, "agent peak RSS while printing %d MB (VmHWM)\t%.1f MiB\t< %d MiB\t%s\n", mb, float64(hwm)/1024, targetRSSKiB>>10, verdict(hwm < targetRSSKiB))
	fmt.Fprintf(tw, "agent peak RSS (wait4 maxrss)\t%.1f MiB\t\t\n", float64(maxrss)/1024)
	fmt.Fprintf(tw, "log throughput to the server (%d MB in %s)\t%.0f MB/s\t≥ %.0f MB/s\t%s\n", output/1_000_000, took.Round(time.Millisecond), mbps, targetMBps, verdict(mbps >= targetMBps))
	fmt.Fprintf(tw, "stored log\t%d bytes, %d lines\t\t\n", len(log), strings.Count(log, "\n"))
	fmt.Fprintf(tw, "%s\t%s (min %s, max %s)\t\t\n", cpuMetric(len(jobCPU)), ms(cpu), ms(jobCPU[0]), ms(jobCPU[len(jobCPU)-1]))
	fmt.Fprintf(tw, "%s\t%s\t\t\n", shellMetric(len(shellCPU)), ms(shell))
	fmt.Fprintf(tw, "%s\t%s\t\t\n", ownMetric, ms(cpu-shell))
	if err := tw.Flush(); err != nil {
		return err
	}
	const component = "agentry-agent"
	return benchrows.WriteFile(rowsPath, []benchrows.Row{
		{Component: component, Metric: fmt.Sprintf("process start → session open (median of %d)", len(opens)),
			Measured: median.Round(time.Millisecond).String(), Target: "< " + targetSessionOpen.String(), Verdict: benchrows.Judge(median < targetSessionOpen)},
		{Component: component, Metric: fmt.Sprintf("agent peak RSS while printing %d MB (VmHWM)", mb),
			Measured: fmt.Sprintf("%.1f MiB", float64(hwm)/1024), Target: fmt.Sprintf("< %d MiB", targetRSSKiB>>10), Verdict: benchrows.Judge(hwm < targetRSSKiB)},
		{Component: component, Metric: fmt.Sprintf("log throughput to the server (%d MB in %s)", output/1_000_000, took.Round(time.Millisecond)),
			Measured: fmt.Sprintf("%.0f MB/s", mbps), Target: fmt.Sprintf("≥ %.0f MB/s", targetMBps), Verdict: benchrows.Judge(mbps >= targetMBps)},
		{Component: component, Metric: cpuMetric(len(jobCPU)), Measured: ms(cpu)},
		{Component: component, Metric: shellMetric(len(shellCPU)), Measured: ms(shell)},
		{Component: component, Metric: ownMetric, Measured: ms(cpu - shell)},
	})
}

func cpuMetric(n int) string {
	return fmt.Sprintf("agent CPU per one-step echo job, with its shell (user+sys, median of %d)", n)
}

func shellMetric(n int) string {
	return fmt.Sprintf("of which the step's shell, run alone (user+sys, median of %d)", n)
}

const ownMetric = "agent's own CPU per job (difference of the medians)"

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// cpuOf is the user+sys time of an exited process and the children it
// reaped.
func cpuOf(ps *os.ProcessState) time.Duration { return ps.UserTime() + ps.SystemTime() }

// benchScript is the benchmark job's one step.
const benchScript = "echo bench"

// timeJobCPU queues a one-step job and runs the agent whose files are in
// dir (a fresh registration, as the operator makes one per job) until it
// leaves; it returns the CPU the agent process and its children used.
func (s *benchServer) timeJobCPU(ctx context.Context, bin, dir string) (time.Duration, error) {
	job, err := s.jobs.QueueJob(ctx, jobapi.JobSpec{Pool: "bench", Name: "echo", Steps: []jobapi.Step{{Script: benchScript}}})
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(bin, "--dir", dir, "--idle-timeout", "30s")
	cmd.Env = agentEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("the agent failed: %w\n%s", err, stderr.String())
	}
	j, err := s.jobs.GetJob(ctx, job.ID)
	if err != nil {
		return 0, err
	}
	if j.Result != pipelines.ResultSucceeded {
		return 0, fmt.Errorf("the one-step job did not succeed: %+v", j)
	}
	return cpuOf(cmd.ProcessState), nil
}

// timeShellCPU runs the benchmark step as the agent runs a CmdLine@2 step,
// `bash --noprofile --norc FILE`, and returns its CPU time.
func timeShellCPU(tmp string) (time.Duration, error) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		return 0, err
	}
	script := filepath.Join(tmp, "step.sh")
	if err := os.WriteFile(script, []byte(benchScript+"\n"), 0o644); err != nil {
		return 0, err
	}
	cmd := exec.Command(bash, "--noprofile", "--norc", script)
	cmd.Env = agentEnv()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("the step's shell failed: %w", err)
	}
	return cpuOf(cmd.ProcessState), nil
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

type benchServer struct {
	url   string
	admin *pipelines.Client
	jobs  jobapi.Client
}

func startServer(ctx context.Context, tmp string) (*benchServer, error) {
	data := filepath.Join(tmp, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	if err := server.InitDataDir(data); err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	admin := "admin-" + hex.EncodeToString(tok)
	srv, err := server.New(server.Config{AdminToken: admin, Log: logr.Discard(), LongPoll: 200 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() { _ = srv.Run(ctx, ln) }()
	url := "http://" + ln.Addr().String()
	c := pipelines.NewClient(url, pipelines.PersonalAccessToken(admin), nil)
	return &benchServer{url: url, admin: c, jobs: jobapi.Client{Client: c}}, nil
}

// registerAgent registers an agent and writes its three files; it returns
// their folder.
func (s *benchServer) registerAgent(ctx context.Context, tmp, pool, name string) (string, error) {
	p, err := s.admin.GetPoolByName(ctx, pool)
	if err != nil {
		return "", err
	}
	key, err := agentcrypto.GenerateKey()
	if err != nil {
		return "", err
	}
	pub := agentcrypto.PublicKeyOf(&key.PublicKey)
	a, err := s.admin.AddAgent(ctx, p.ID, pipelines.TaskAgent{
		Name: name, Version: "4.255.0", MaxParallelism: 1, ProvisioningState: "Provisioned",
		Authorization:      &pipelines.TaskAgentAuthorization{PublicKey: &pub},
		SystemCapabilities: map[string]string{"Agent.OS": "Linux", "Agent.Name": name},
	})
	if err != nil {
		return "", err
	}
	dir := filepath.Join(tmp, "agents", name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return dir, pipelines.WriteAgentDir(dir, pipelines.AgentFiles{
		Settings: pipelines.AgentSettings{AgentID: a.ID, AgentName: a.Name, PoolID: p.ID, PoolName: p.Name, ServerURL: s.url, WorkFolder: "_work"},
		Credentials: pipelines.Credentials{Scheme: "OAuth", Data: pipelines.CredentialData{
			ClientID: a.Authorization.ClientID, AuthorizationURL: a.Authorization.AuthorizationURL,
		}},
		Key: agentcrypto.ParametersOf(key),
	})
}

// timeSessionOpen starts the agent with no job waiting and returns the time
// until it logs that its session is open; it then idles out.
func timeSessionOpen(bin, dir string) (time.Duration, error) {
	cmd := exec.Command(bin, "--dir", dir, "--idle-timeout", "300ms")
	cmd.Env = agentEnv()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	var took time.Duration
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if took == 0 && strings.Contains(sc.Text(), `"Waiting for a job"`) {
			took = time.Since(start)
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if took == 0 || (err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 5)) {
		return 0, fmt.Errorf("the agent did not open a session (exit %v)", err)
	}
	return took, nil
}

// runSampled runs the agent until it leaves, sampling its peak RSS.
func runSampled(bin, dir, work string) (hwmKiB, maxrssKiB int64, err error) {
	cmd := exec.Command(bin, "--dir", dir, "--work-dir", work, "--idle-timeout", "60s")
	cmd.Env = agentEnv()
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if v := vmHWM(status); v > hwmKiB {
			hwmKiB = v
		}
		select {
		case err := <-done:
			if err != nil {
				return 0, 0, fmt.Errorf("the agent failed: %w", err)
			}
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				maxrssKiB = ru.Maxrss
			}
			return hwmKiB, maxrssKiB, nil
		case <-tick.C:
		}
	}
}

// vmHWM reads the peak resident set size (KiB) of a running process, 0 once
// it is gone.
func vmHWM(statusPath string) int64 {
	b, err := os.ReadFile(statusPath)
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func agentEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AGENTRY_") {
			env = append(env, kv)
		}
	}
	return env
}
