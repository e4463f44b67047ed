package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// userHZ is the kernel's clock tick for /proc/<pid>/stat times; 100 on
// every Linux the benchmark runs on.
const userHZ = 100

// cpuUse is CPU time by process name: every process on the machine whose
// name is one of the burst's parts, and this process (the benchmark and its
// process-backed node) with its reaped children (the agent pods' processes).
type cpuUse map[string]time.Duration

// sampleCPU reads /proc. Processes that have exited and were not reaped by
// this one are missed; the control plane, agentry-server and
// agentry-manager outlive the burst.
func sampleCPU() cpuUse {
	use := cpuUse{}
	parts := map[string]bool{"kube-apiserver": true, "etcd": true, "kube-scheduler": true, "kube-controller": true,
		"agentry-manager": true, "agentry-server": true}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	self := os.Getpid()
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		name, f := procStat(d)
		if f == nil {
			continue
		}
		switch {
		case pid == self:
			use["benchmark and node"] += ticks(f[11]) + ticks(f[12])
			use["agent pods (reaped)"] += ticks(f[13]) + ticks(f[14])
		case parts[name]:
			use[name] += ticks(f[11]) + ticks(f[12])
		}
	}
	return use
}

// procStat returns a /proc/<pid>/stat's command name and the fields after
// it (f[11] is utime, f[12] stime, f[13] cutime, f[14] cstime).
func procStat(dir string) (string, []string) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return "", nil
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", nil
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 15 {
		return "", nil
	}
	return s[open+1 : end], f
}

func ticks(field string) time.Duration {
	n, _ := strconv.ParseInt(field, 10, 64)
	return time.Duration(n) * time.Second / userHZ
}

// printCPU prints, on stderr, each part's CPU time between two samples and
// its share of the total.
func printCPU(before, after cpuUse, wall time.Duration) {
	var total time.Duration
	for k := range after {
		total += after[k] - before[k]
	}
	names := make([]string, 0, len(after))
	for k := range after {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int { return int((after[b] - before[b]) - (after[a] - before[a])) })
	fmt.Fprintf(os.Stderr, "cpu over the burst: %.2f s in %.2f s of wall time\n", total.Seconds(), wall.Seconds())
	for _, k := range names {
		d := after[k] - before[k]
		fmt.Fprintf(os.Stderr, "cpu %-22s %6.2f s  %3.0f %%\n", k, d.Seconds(), 100*d.Seconds()/max(total.Seconds(), 1e-9))
	}
}
