package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/test/stack"
)

// burstEnv is what every burst of a run shares: the stack, a client, the
// watches' timelines and the API server's audit log.
type burstEnv struct {
	cfg          config
	s            *stack.Stack
	kc           client.WithWatch
	agents, pods *timeline
	auditLog     string
}

// burstResult is what one burst measured. Each latency is per job: from
// its queue time to the creation of the pod that ran it (any idle agent
// takes any job, so this is what a job waited for a pod), and from its
// finish to its agent's removal. Both are timed by the API server's audit
// log; the benchmark's watch also gives the moments it saw each pod created
// and each Agent gone, for comparison.
type burstResult struct {
	wall                                       time.Duration
	succeeded, started, peak                   int
	toPod, toPodSeen, toRemoved, toRemovedSeen []time.Duration
}

// runBurst queues cfg.jobs jobs at once (n counts the bursts from 1), waits
// for them to finish and for every agent to be removed, and measures. The
// first burst is the one the profiles cover.
func runBurst(ctx context.Context, e burstEnv, n int) (burstResult, error) {
	cfg, s := e.cfg, e.s
	var res burstResult
	// The burst meets a warmed manager, as one that has been running for a
	// while: its key pool is full.
	if cfg.keyPoolSize > 0 {
		fmt.Fprintf(os.Stderr, "waiting for the manager's %d ready keys\n", cfg.keyPoolSize)
		if err := waitForKeys(ctx, s.MetricsURL, cfg.keyPoolSize); err != nil {
			return res, err
		}
	}
	profiled := make(chan error, 1)
	if cfg.apiServerProfile != "" && n == 1 {
		go func() { profiled <- apiServerProfile(ctx, s.Kube.CoreV1().RESTClient(), cfg.apiServerProfile) }()
	} else {
		profiled <- nil
	}
	if cfg.selfProfile != "" && n == 1 {
		f, err := os.Create(cfg.selfProfile)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
	}
	e.agents.mu.Lock()
	startedBefore := len(e.agents.added)
	e.agents.peak = e.agents.live
	e.agents.mu.Unlock()

	fmt.Fprintf(os.Stderr, "burst %d: queueing %d jobs\n", n, cfg.jobs)
	cpuBefore := sampleCPU()
	burstStart := time.Now()
	ids := make([]int64, cfg.jobs)
	for i := range ids {
		j, err := s.Jobs.QueueJob(ctx, jobapi.JobSpec{Pool: "default", Name: fmt.Sprintf("bench-%d-%d", n, i), Steps: []jobapi.Step{{Script: "echo bench"}}})
		if err != nil {
			return res, err
		}
		ids[i] = j.ID
	}
	jobs := make([]*jobapi.Job, len(ids))
	for i, id := range ids {
		for {
			j, err := s.Jobs.GetJob(ctx, id)
			if err != nil {
				return res, err
			}
			if j.State == jobapi.StateCompleted {
				jobs[i] = j
				break
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return res, err
			}
		}
	}
	res.wall = time.Since(burstStart)
	printCPU(cpuBefore, sampleCPU(), res.wall)
	if cfg.selfProfile != "" && n == 1 {
		pprof.StopCPUProfile()
	}
	if err := <-profiled; err != nil {
		return res, err
	}
	if err := waitRemoved(ctx, e, startedBefore); err != nil {
		return res, err
	}

	audited, err := readAudit(e.auditLog)
	if err != nil {
		return res, err
	}
	created := audited.created
	var unaudited []string
	for _, j := range jobs {
		_, podOK := created["pods"][j.AgentName]
		_, removedOK := audited.agentRemoved[j.AgentName]
		if !podOK || !removedOK {
			unaudited = append(unaudited, j.AgentName)
		}
	}
	if len(unaudited) > 0 {
		return res, fmt.Errorf("the API server's audit log %s lacks the pod create or the Agent removal of %d of the jobs' agents (first %s)",
			e.auditLog, len(unaudited), unaudited[0])
	}
	// The stages, for the breakdown on stderr.
	var toAgent, agentToPod, toPodEnded, podEndedToRemoved []time.Duration
	e.agents.mu.Lock()
	defer e.agents.mu.Unlock()
	e.pods.mu.Lock()
	defer e.pods.mu.Unlock()
	for _, j := range jobs {
		if j.Result == pipelines.ResultSucceeded {
			res.succeeded++
		}
		p, pok := created["pods"][j.AgentName]
		if pok && j.QueueTime != nil {
			res.toPod = append(res.toPod, max(p.Sub(*j.QueueTime), 0))
		}
		if at, ok := e.pods.added[j.AgentName]; ok && j.QueueTime != nil {
			res.toPodSeen = append(res.toPodSeen, max(at.Sub(*j.QueueTime), 0))
		}
		if at, ok := audited.agentRemoved[j.AgentName]; ok && j.FinishTime != nil {
			res.toRemoved = append(res.toRemoved, max(at.Sub(*j.FinishTime), 0))
		}
		if at, ok := e.agents.deleted[j.AgentName]; ok && j.FinishTime != nil {
			res.toRemovedSeen = append(res.toRemovedSeen, max(at.Sub(*j.FinishTime), 0))
		}
		a, aok := created["agents"][j.AgentName]
		ended, eok := e.pods.ended[j.AgentName]
		d, dok := audited.agentRemoved[j.AgentName]
		if aok && j.QueueTime != nil {
			toAgent = append(toAgent, a.Sub(*j.QueueTime))
		}
		if aok && pok {
			agentToPod = append(agentToPod, p.Sub(a))
		}
		if eok && j.FinishTime != nil {
			toPodEnded = append(toPodEnded, ended.Sub(*j.FinishTime))
		}
		if eok && dok {
			podEndedToRemoved = append(podEndedToRemoved, d.Sub(ended))
		}
	}
	if cfg.timeline != "" {
		if err := writeTimeline(cfg.timeline, n, jobs, audited, e.agents, e.pods); err != nil {
			return res, err
		}
	}
	res.started, res.peak = len(e.agents.added)-startedBefore, e.agents.peak
	for _, st := range []struct {
		name string
		d    []time.Duration
	}{
		{"job queued → its Agent created", toAgent},
		{"Agent created → pod created", agentToPod},
		{"job queued → pod seen by a watch", res.toPodSeen},
		{"job finished → pod seen ended", toPodEnded},
		{"pod seen ended → Agent removed", podEndedToRemoved},
	} {
		fmt.Fprintf(os.Stderr, "stage %-32s p50 %-8s p99 %s\n", st.name, pct(st.d, 50), pct(st.d, 99))
	}
	fmt.Fprintf(os.Stderr, "burst %d: queued → pod created p50 %s p99 %s; job finished → agent removed p50 %s p99 %s; agents started − jobs %d\n",
		n, pct(res.toPod, 50), pct(res.toPod, 99), pct(res.toRemoved, 50), pct(res.toRemoved, 99), res.started-cfg.jobs)
	return res, nil
}

// waitRemoved waits until every agent started since startedBefore Agents
// had been is deregistered and removed.
func waitRemoved(ctx context.Context, e burstEnv, startedBefore int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		e.agents.mu.Lock()
		done := e.agents.live == 0 && len(e.agents.added) > startedBefore
		e.agents.mu.Unlock()
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			var left agentryv1.AgentList
			if err := e.kc.List(ctx, &left, client.InNamespace(stack.Namespace)); err != nil {
				return err
			}
			var desc []string
			for _, a := range left.Items {
				desc = append(desc, fmt.Sprintf("%s (phase %q, deleting %v, finalizers %v, agentId %d)",
					a.Name, a.Status.Phase, !a.DeletionTimestamp.IsZero(), a.Finalizers, a.Status.AgentID))
			}
			e.agents.mu.Lock()
			live := e.agents.live
			e.agents.mu.Unlock()
			return fmt.Errorf("agents were not all removed within 2 minutes: the watch counts %d live, the API server has %d: %s",
				live, len(left.Items), strings.Join(desc, "; "))
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// medianOf is the median burst's figure: of each burst's p-th percentile of
// what pick returns, the middle one (the lower of the two middle ones for an
// even count).
func medianOf(results []burstResult, pick func(burstResult) []time.Duration, p int) (time.Duration, bool) {
	var each []time.Duration
	for _, r := range results {
		if d := pick(r); len(d) > 0 {
			each = append(each, percentile(d, p))
		}
	}
	if len(each) == 0 {
		return 0, false
	}
	slices.Sort(each)
	return each[(len(each)-1)/2], true
}

// eachBurst lists each burst's p-th percentile of what pick returns.
func eachBurst(results []burstResult, pick func(burstResult) []time.Duration, p int) string {
	var each []string
	for _, r := range results {
		each = append(each, pct(pick(r), p))
	}
	return strings.Join(each, ", ")
}
