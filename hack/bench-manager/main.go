// Command bench-manager measures agentry-manager end to end on the local
// stack (test/stack: real cluster, process-backed node, agentry-server,
// agentry-manager and agentry-agent binaries): -bursts bursts of -jobs jobs,
// one after another, on a pool with -max-agents, then the operator's memory
// with -idle-agents Agent objects (registered agents whose pods cannot be
// scheduled). It prints a table; its latencies are the median burst's (of
// the bursts' p50s, the middle one; the same for p99), and each burst's is
// listed too.
//
//	go run ./hack/bench-manager [-bursts 3] [-jobs 100] [-max-agents 100] [-idle-agents 1000] [-rows FILE]
//
// Each burst starts once the manager's key pool is full (-key-pool-size), as
// it would be in a manager that has been running. On stderr it also prints
// where each burst's time went: each stage's p50 and p99, and then the
// reconcilers' mean time and queue wait, and with -api-requests the API
// server's request counts.
// -rows also writes the figures as hack/benchrows lines, for hack/benchall.
//
// Everything shares this machine's CPU, the agent pods' processes too. With
// -pods-on-idle-cpu they run under SCHED_IDLE and take only the CPU nothing
// else wants, as agent pods on worker nodes apart from the control plane
// would; those figures are labelled so.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/controllers"
	"github.com/agentry-dev/agentry/hack/benchrows"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/test/cluster"
	"github.com/agentry-dev/agentry/test/stack"
)

type config struct {
	jobs, bursts, maxAgents, idleAgents int
	repoRoot                            string
	keep                                bool
	rows                                string
	keyPoolSize                         int
	managerArgs                         string
	apiRequests                         bool
	timeline                            string
	apiServerProfile                    string
	selfProfile                         string
	idleCPUPods                         bool
}

func main() {
	var cfg config
	flag.IntVar(&cfg.jobs, "jobs", 100, "jobs in each burst")
	flag.IntVar(&cfg.bursts, "bursts", 3, "bursts, one after another; the table gives the median burst's figures and lists each burst's")
	flag.IntVar(&cfg.maxAgents, "max-agents", 100, "the burst pool's maxAgents")
	flag.IntVar(&cfg.idleAgents, "idle-agents", 1000, "Agent objects for the memory measurement (0 skips it)")
	flag.StringVar(&cfg.repoRoot, "repo", ".", "repository root")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the stack's work folder (logs) and print where it is")
	flag.IntVar(&cfg.keyPoolSize, "key-pool-size", controllers.DefaultKeyPoolSize, "the manager's --key-pool-size; the burst waits until the pool is full")
	flag.BoolVar(&cfg.apiRequests, "api-requests", false, "print the API server's request counts by resource and verb after the bursts")
	flag.StringVar(&cfg.managerArgs, "manager-args", "", "more agentry-manager flags, space-separated")
	flag.StringVar(&cfg.timeline, "timeline", "", "write each job's timeline (ms after its burst's first queue time) to this file, for finding where a burst's time goes")
	flag.StringVar(&cfg.selfProfile, "cpuprofile", "", "write a CPU profile of this process (the benchmark and its process-backed node) over the first burst to this file")
	flag.StringVar(&cfg.apiServerProfile, "apiserver-cpuprofile", "", "write a CPU profile of kube-apiserver over the first burst's first 3 s to this file (go tool pprof reads it)")
	flag.BoolVar(&cfg.idleCPUPods, "pods-on-idle-cpu", false, "run the agent pods' processes under SCHED_IDLE, so they take only CPU the control plane, agentry-manager and agentry-server leave, as agent pods on worker nodes of their own would; the rows' metrics say so")
	flag.StringVar(&cfg.rows, "rows", "", "also write the results to this file as tab-separated rows")
	flag.Parse()
	if cfg.bursts < 1 || cfg.jobs < 1 {
		fmt.Fprintln(os.Stderr, "bench-manager: -bursts and -jobs must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench-manager:", err)
		os.Exit(1)
	}
}

// timeline records when each named object was first added and deleted.
type timeline struct {
	mu      sync.Mutex
	added   map[string]time.Time
	deleted map[string]time.Time
	// ended is when a pod was first seen Succeeded or Failed.
	ended map[string]time.Time
	live  int
	peak  int
}

func follow(w watch.Interface) *timeline {
	tl := &timeline{added: map[string]time.Time{}, deleted: map[string]time.Time{}, ended: map[string]time.Time{}}
	go func() {
		for ev := range w.ResultChan() {
			obj, ok := ev.Object.(metav1.Object)
			if !ok {
				continue
			}
			now := time.Now()
			tl.mu.Lock()
			if pod, ok := ev.Object.(*corev1.Pod); ok && (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed) {
				if _, seen := tl.ended[pod.Name]; !seen {
					tl.ended[pod.Name] = now
				}
			}
			switch ev.Type {
			case watch.Added:
				if _, seen := tl.added[obj.GetName()]; !seen {
					tl.added[obj.GetName()] = now
					tl.live++
					tl.peak = max(tl.peak, tl.live)
				}
			case watch.Deleted:
				if _, seen := tl.deleted[obj.GetName()]; !seen {
					tl.deleted[obj.GetName()] = now
					tl.live--
				}
			}
			tl.mu.Unlock()
		}
	}()
	return tl
}

func run(ctx context.Context, cfg config) error {
	root, err := filepath.Abs(cfg.repoRoot)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "agentry-bench-manager-")
	if err != nil {
		return err
	}
	if cfg.keep {
		fmt.Fprintln(os.Stderr, "logs in", filepath.Join(work, "logs"))
	} else {
		defer os.RemoveAll(work)
	}
	audit, auditLog, err := auditFlags(work, stack.Namespace)
	if err != nil {
		return err
	}
	s, err := stack.Start(ctx, stack.Options{RepoRoot: root, WorkDir: work, Progress: os.Stderr, IdleCPUPods: cfg.idleCPUPods, APIServerFlags: audit,
		ManagerArgs: append([]string{fmt.Sprintf("--key-pool-size=%d", cfg.keyPoolSize)}, strings.Fields(cfg.managerArgs)...)})
	defer s.Stop()
	if err != nil {
		return err
	}
	scheme, err := controllers.NewScheme()
	if err != nil {
		return err
	}
	kc, err := client.NewWithWatch(s.Cluster.Config, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := s.ApplySample(ctx, "agentry_v1alpha1_agentpool.yaml"); err != nil {
		return err
	}
	if out, err := s.Cluster.Kubectl("patch", "agentpools.agentry.dev", "linux", "-n", stack.Namespace, "--type=merge",
		"-p", fmt.Sprintf(`{"spec":{"maxAgents":%d}}`, cfg.maxAgents)); err != nil {
		return fmt.Errorf("kubectl patch: %w: %s", err, out)
	}
	// Retry watches: under a burst the API server may end a watch (a slow
	// consumer on a busy machine); they resume from the last event seen, so
	// no creation or deletion is missed.
	// The Agent watch asks for metadata only (names and deletions are all it
	// needs), which the API server sends in protobuf: a watch of whole
	// Agents would have it encode each one in JSON, for the benchmark alone.
	agentMeta := func() *metav1.PartialObjectMetadataList {
		l := &metav1.PartialObjectMetadataList{}
		l.SetGroupVersionKind(agentryv1.GroupVersion.WithKind("AgentList"))
		return l
	}
	agentList := agentMeta()
	if err := kc.List(ctx, agentList, client.InNamespace(stack.Namespace)); err != nil {
		return err
	}
	aw, err := watchtools.NewRetryWatcherWithContext(ctx, agentList.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return kc.Watch(ctx, agentMeta(), client.InNamespace(stack.Namespace), &client.ListOptions{Raw: &o})
		},
	})
	if err != nil {
		return err
	}
	defer aw.Stop()
	// The benchmark's own pod watch speaks protobuf, as the scheduler, the
	// controller manager, the node and agentry-manager do: in JSON it would
	// have the API server encode every pod change once more, for it alone.
	podClient, err := kubernetes.NewForConfig(cluster.ProtobufConfig(s.Cluster.Config))
	if err != nil {
		return err
	}
	podSelector := metav1.ListOptions{LabelSelector: agentryv1.AgentLabel}
	podList, err := podClient.CoreV1().Pods(stack.Namespace).List(ctx, podSelector)
	if err != nil {
		return err
	}
	pw, err := watchtools.NewRetryWatcherWithContext(ctx, podList.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = podSelector.LabelSelector
			return podClient.CoreV1().Pods(stack.Namespace).Watch(ctx, o)
		},
	})
	if err != nil {
		return err
	}
	defer pw.Stop()
	agents, pods := follow(aw), follow(pw)

	env := burstEnv{cfg: cfg, s: s, kc: kc, agents: agents, pods: pods, auditLog: auditLog}
	var results []burstResult
	for n := 1; n <= cfg.bursts; n++ {
		r, err := runBurst(ctx, env, n)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	succeeded, started, peak := 0, 0, 0
	for _, r := range results {
		succeeded += r.succeeded
		started += r.started
		peak = max(peak, r.peak)
	}
	jobsRun := cfg.jobs * cfg.bursts
	toPod := func(r burstResult) []time.Duration { return r.toPod }
	toPodSeen := func(r burstResult) []time.Duration { return r.toPodSeen }
	toRemoved := func(r burstResult) []time.Duration { return r.toRemoved }
	toRemovedSeen := func(r burstResult) []time.Duration { return r.toRemovedSeen }
	// The table's figures are the median burst's: each burst's p50 (or
	// p99), and of those the middle one; every burst's is listed below it.
	median := func(pick func(burstResult) []time.Duration, p int) string {
		d, ok := medianOf(results, pick, p)
		if !ok {
			return "n/a"
		}
		return d.Round(time.Millisecond).String()
	}
	medianRow := func(metric string, pick func(burstResult) []time.Duration, p int, target time.Duration) benchrows.Row {
		d, ok := medianOf(results, pick, p)
		return benchrows.Row{Component: "agentry-manager", Metric: metric, Measured: median(pick, p),
			Target: "< " + target.String(), Verdict: benchrows.Judge(ok && d < target)}
	}

	if m, err := scrape(ctx, s.MetricsURL); err == nil {
		fmt.Fprintf(os.Stderr, "manager key pool: %.0f ready after the burst, %.0f registrations made their key on the spot\n",
			m["agentry_key_pool_ready_keys"], m["agentry_key_pool_misses_total"])
		for _, c := range []string{"agentpool", "agent"} {
			fmt.Fprintf(os.Stderr, "controller %-9s reconciles %5.0f, mean %6.1f ms; queue wait mean %6.1f ms over %5.0f adds\n", c,
				m[`controller_runtime_reconcile_time_seconds_count{controller="`+c+`"}`],
				1000*m[`controller_runtime_reconcile_time_seconds_sum{controller="`+c+`"}`]/m[`controller_runtime_reconcile_time_seconds_count{controller="`+c+`"}`],
				1000*m[`workqueue_queue_duration_seconds_sum{controller="`+c+`",name="`+c+`"}`]/m[`workqueue_queue_duration_seconds_count{controller="`+c+`",name="`+c+`"}`],
				m[`workqueue_queue_duration_seconds_count{controller="`+c+`",name="`+c+`"}`])
		}
	}
	if cfg.apiRequests {
		printAPIRequests(s)
		if m, err := scrape(ctx, s.MetricsURL); err == nil {
			// The manager's own share, by method (client-go counts no resource).
			byMethod := map[string]float64{}
			for k, v := range m {
				if strings.HasPrefix(k, "rest_client_requests_total{") {
					if _, rest, ok := strings.Cut(k, `method="`); ok {
						method, _, _ := strings.Cut(rest, `"`)
						byMethod[method] += v
					}
				}
			}
			for _, method := range slices.Sorted(maps.Keys(byMethod)) {
				fmt.Fprintf(os.Stderr, "manager %-8s %6.0f\n", method, byMethod[method])
			}
		}
	}
	managerRSS := rss(s.PID("agentry-manager"))
	each := fmt.Sprintf(" (median of %d bursts)", cfg.bursts)
	if cfg.bursts == 1 {
		each = ""
	}
	wall := func(r burstResult) []time.Duration { return []time.Duration{r.wall} }
	rows := [][2]string{
		{"bursts × jobs (succeeded)", fmt.Sprintf("%d × %d (%d)", cfg.bursts, cfg.jobs, succeeded)},
		{"pool maxAgents", strconv.Itoa(cfg.maxAgents)},
		{"burst wall time (queue first → last finished)" + each, median(wall, 50)},
		{"queued → pod created p50 / p99" + each, median(toPod, 50) + " / " + median(toPod, 99)},
		{"  each burst's p50", eachBurst(results, toPod, 50)},
		{"  each burst's p99", eachBurst(results, toPod, 99)},
		{"queued → pod seen by the benchmark's watch p50 / p99" + each, median(toPodSeen, 50) + " / " + median(toPodSeen, 99)},
		{"job finished → agent deregistered & removed p50 / p99" + each, median(toRemoved, 50) + " / " + median(toRemoved, 99)},
		{"  each burst's p50", eachBurst(results, toRemoved, 50)},
		{"  each burst's p99", eachBurst(results, toRemoved, 99)},
		{"job finished → removal seen by the benchmark's watch p50 / p99" + each, median(toRemovedSeen, 50) + " / " + median(toRemovedSeen, 99)},
		{"agents started − jobs (all bursts)", strconv.Itoa(started - jobsRun)},
		{"peak live Agents", strconv.Itoa(peak)},
		{"manager RSS after the bursts", managerRSS},
	}
	// The rows file splits the percentiles so each figure is one value.
	row := func(metric, measured string) benchrows.Row {
		return benchrows.Row{Component: "agentry-manager", Metric: metric, Measured: measured}
	}
	out := []benchrows.Row{
		row(fmt.Sprintf("bursts × jobs (succeeded), pool maxAgents %d", cfg.maxAgents), fmt.Sprintf("%d × %d (%d)", cfg.bursts, cfg.jobs, succeeded)),
		row("burst wall time (queue first → last finished)"+each, median(wall, 50)),
		medianRow("queued → pod created p50"+each, toPod, 50, 500*time.Millisecond),
		row("queued → pod created p50, each burst", eachBurst(results, toPod, 50)),
		medianRow("queued → pod created p99"+each, toPod, 99, 2*time.Second),
		row("queued → pod created p99, each burst", eachBurst(results, toPod, 99)),
		row("queued → pod seen by the benchmark's watch p50 / p99"+each, median(toPodSeen, 50)+" / "+median(toPodSeen, 99)),
		medianRow("job finished → agent removed p50"+each, toRemoved, 50, time.Second),
		row("job finished → agent removed p50, each burst", eachBurst(results, toRemoved, 50)),
		medianRow("job finished → agent removed p99"+each, toRemoved, 99, 3*time.Second),
		row("job finished → agent removed p99, each burst", eachBurst(results, toRemoved, 99)),
		row("job finished → removal seen by the benchmark's watch p50 / p99"+each, median(toRemovedSeen, 50)+" / "+median(toRemovedSeen, 99)),
		{Component: "agentry-manager", Metric: "agents started − jobs (all bursts)", Measured: strconv.Itoa(started - jobsRun),
			Target: "0", Verdict: benchrows.Judge(started == jobsRun)},
		row("peak live Agents", strconv.Itoa(peak)),
		row("manager RSS after the bursts", managerRSS),
	}

	if cfg.idleAgents > 0 {
		m, err := idleAgentsRSS(ctx, s, kc, cfg.idleAgents)
		if err != nil {
			return err
		}
		rows = append(rows,
			[2]string{fmt.Sprintf("%d Agents registered with Secrets and pods in", m.agents), m.took.Round(time.Second).String()},
			[2]string{fmt.Sprintf("manager RSS with %d Agents (peak)", m.agents), m.rss + " (" + m.hwm + ")"})
		out = append(out,
			row(fmt.Sprintf("%d idle Agents registered with Secrets and pods in", m.agents), m.took.Round(time.Second).String()),
			benchrows.Row{Component: "agentry-manager", Metric: fmt.Sprintf("manager RSS with %d Agents", m.agents), Measured: m.rss,
				Target: "< 150 MiB", Verdict: judgeMiB(m.rss, 150)},
			row(fmt.Sprintf("manager peak RSS with %d Agents (VmHWM)", m.agents), m.hwm))
	}

	title := "agentry-manager benchmark"
	if cfg.idleCPUPods {
		// Figures of a different setting: they must not read as the
		// default run's.
		for i := range out {
			out[i].Metric += " (agent pods on idle CPU)"
		}
		title += " (agent pods on idle CPU)"
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, title+"\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return benchrows.WriteFile(cfg.rows, out)
}

// idleMemory is what idleAgentsRSS measured.
type idleMemory struct {
	agents   int
	took     time.Duration // until every Agent was registered with a Secret and a pod
	rss, hwm string        // the manager's VmRSS and VmHWM then
}

// idleAgentsRSS starts a second pool whose pods no node can take, with n
// warm agents: n Agents, each registered with a Secret and a pending pod,
// and reads the manager's memory once they are all registered.
func idleAgentsRSS(ctx context.Context, s *stack.Stack, kc client.WithWatch, n int) (idleMemory, error) {
	if out, err := s.ServerCLI(ctx, "pool", "create", "rss"); err != nil {
		return idleMemory{}, fmt.Errorf("pool create: %w: %s", err, out)
	}
	manifest := fmt.Sprintf(`apiVersion: agentry.dev/v1alpha1
kind: AgentPool
metadata: {name: rss, namespace: %s}
spec:
  server: {url: %s, poolName: rss, credentialsSecretRef: {name: %s}}
  minIdle: %d
  maxAgents: %d
  startupTimeout: 1h
  template:
    spec:
      nodeSelector: {agentry.dev/bench: nowhere}
      containers: [{name: agent, image: ghcr.io/agentry-dev/agentry-agent:v0.1.0}]
`, stack.Namespace, s.ServerURL, stack.AdminSecret, n, n)
	path := filepath.Join(os.TempDir(), fmt.Sprintf("agentry-bench-rss-%d.yaml", os.Getpid()))
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		return idleMemory{}, err
	}
	defer os.Remove(path)
	if out, err := s.Cluster.Kubectl("apply", "-f", path); err != nil {
		return idleMemory{}, fmt.Errorf("kubectl apply: %w: %s", err, out)
	}
	fmt.Fprintf(os.Stderr, "starting %d idle agents for the memory measurement\n", n)
	start := time.Now()
	for {
		var list agentryv1.AgentList
		if err := kc.List(ctx, &list, client.InNamespace(stack.Namespace), client.MatchingLabels{agentryv1.PoolLabel: "rss"}); err != nil {
			return idleMemory{}, err
		}
		registered := 0
		for _, a := range list.Items {
			if a.Status.AgentID != 0 && a.Status.PodName != "" {
				registered++
			}
		}
		if registered >= n {
			break
		}
		if time.Since(start) > 15*time.Minute {
			return idleMemory{}, fmt.Errorf("only %d of %d agents registered after 15 minutes", registered, n)
		}
		if err := sleep(ctx, time.Second); err != nil {
			return idleMemory{}, err
		}
	}
	took := time.Since(start)
	pid := s.PID("agentry-manager")
	return idleMemory{agents: n, took: took, rss: rss(pid), hwm: hwm(pid)}, nil
}

// waitForKeys waits until the manager's metrics say its key pool holds n
// keys.
func waitForKeys(ctx context.Context, metricsURL string, n int) error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ready, err := gauge(ctx, metricsURL, "agentry_key_pool_ready_keys")
		if err == nil && ready >= float64(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the manager's key pool has %v of %d keys after 3 minutes (last error: %v)", ready, n, err)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// scrape reads a Prometheus text endpoint into series → value.
func scrape(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 || strings.HasPrefix(line, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, nil
}

// gauge reads one unlabelled metric from a Prometheus text endpoint.
func gauge(ctx context.Context, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s not in %s", name, url)
}

func pct(d []time.Duration, p int) string {
	if len(d) == 0 {
		return "n/a"
	}
	return percentile(d, p).Round(time.Millisecond).String()
}

// percentile is the p-th percentile (nearest rank) of a non-empty sample.
func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(float64(p)/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// mebibytes reads a figure such as "83.7 MiB" or "85712 kB" back as MiB.
func mebibytes(s string) (float64, bool) {
	var v float64
	var unit string
	if _, err := fmt.Sscanf(s, "%f %s", &v, &unit); err != nil {
		return 0, false
	}
	switch unit {
	case "MiB":
		return v, true
	case "kB":
		return v / 1024, true
	}
	return 0, false
}

func procStatus(pid int, field string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "n/a"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.Atoi(strings.Fields(v)[0])
			return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
		}
	}
	return "n/a"
}

func rss(pid int) string { return procStatus(pid, "VmRSS") }
func hwm(pid int) string { return procStatus(pid, "VmHWM") }

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// judgeMiB is OK when a memory figure is below limit MiB.
func judgeMiB(s string, limit float64) benchrows.Verdict {
	v, ok := mebibytes(s)
	return benchrows.Judge(ok && v < limit)
}

// printAPIRequests prints the API server's request counts by client,
// resource and verb (a diagnostic: where the API server's time goes).
func printAPIRequests(s *stack.Stack) {
	out, err := s.Cluster.Kubectl("get", "--raw", "/metrics")
	if err != nil {
		return
	}
	counts := map[string]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(line[strings.IndexByte(line, '{')+1:strings.LastIndexByte(line, '}')], ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				labels[k] = strings.Trim(v, `"`)
			}
		}
		v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		counts[labels["resource"]+"/"+labels["subresource"]+" "+labels["verb"]] += v
	}
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b string) int { return int(counts[b] - counts[a]) })
	for _, k := range keys[:min(25, len(keys))] {
		fmt.Fprintf(os.Stderr, "api %-40s %6.0f\n", k, counts[k])
	}
}

// writeTimeline writes one line per job of burst n (the first burst
// starts the file, the others add to it): when (ms after the burst's first
// job was queued) it was queued, its agent's Agent and pod were created (by
// the audit log), the pod was seen by the watch, it was assigned, started
// and finished, its pod was seen ended, and its Agent was removed (by the
// audit log) and seen removed by the watch. The caller holds both
// timelines' locks.
func writeTimeline(path string, n int, jobs []*jobapi.Job, audited auditTimes, agents, pods *timeline) error {
	created := audited.created
	var t0 time.Time
	for _, j := range jobs {
		if j.QueueTime != nil && (t0.IsZero() || j.QueueTime.Before(t0)) {
			t0 = *j.QueueTime
		}
	}
	ms := func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "-"
		}
		return strconv.FormatInt(t.Sub(t0).Milliseconds(), 10)
	}
	at := func(m map[string]time.Time, k string) *time.Time {
		if v, ok := m[k]; ok {
			return &v
		}
		return nil
	}
	var b strings.Builder
	flags := os.O_WRONLY | os.O_APPEND
	if n == 1 {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		b.WriteString("burst\tjob\tqueued\tagent\tpod\tpodSeen\tassigned\tstarted\tfinished\tpodEnded\tremoved\tremovedSeen\tagentName\n")
	}
	for _, j := range jobs {
		fmt.Fprintf(&b, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n, j.ID, ms(j.QueueTime), ms(at(created["agents"], j.AgentName)),
			ms(at(created["pods"], j.AgentName)), ms(at(pods.added, j.AgentName)), ms(j.AssignTime), ms(j.StartTime), ms(j.FinishTime),
			ms(at(pods.ended, j.AgentName)), ms(at(audited.agentRemoved, j.AgentName)), ms(at(agents.deleted, j.AgentName)), j.AgentName)
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// apiServerProfile writes a 3 s CPU profile of kube-apiserver, taken from its
// /debug/pprof endpoint (on by default), to path.
func apiServerProfile(ctx context.Context, rc rest.Interface, path string) error {
	data, err := rc.Get().AbsPath("/debug/pprof/profile").Param("seconds", "3").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("profiling kube-apiserver: %w", err)
	}
	return os.WriteFile(path, data, 0o644)
}
