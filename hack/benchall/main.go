// Command benchall runs agentry's three benchmark programs one after another
// — hack/bench (agentry-server), hack/bench-agent and hack/bench-manager —
// and prints their figures as one table, with the machine, the Go version
// and the date on top. The programs' own output (their tables and progress)
// goes to stderr; stdout is only the combined table.
//
//	go run ./hack/benchall [-quick] [-only server,agent,manager,manager-idle-cpu]
//	    [-server-flags "..."] [-agent-flags "..."] [-manager-flags "..."]
//	    [-manager-idle-cpu-flags "..."]
//
// The manager benchmark needs KUBEBUILDER_ASSETS (make bench sets it). The
// programs never overlap: on a 2-core machine one would skew the other.
// benchall exits non-zero only when a program fails; a missed target is
// reported in the table, not an error, since on a shared machine targets are
// a reading, not a gate.
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/agentry-dev/agentry/hack/benchrows"
)

// program is one benchmark program, the flags it always gets and the flags
// -quick adds.
type program struct {
	name      string // as in -only
	pkg       string
	component string
	base      []string
	quick     []string
}

var programs = []program{
	{name: "server", pkg: "./hack/bench", component: "agentry-server",
		quick: []string{"-sessions", "1000", "-jobs", "50", "-burst", "200"}},
	{name: "agent", pkg: "./hack/bench-agent", component: "agentry-agent",
		quick: []string{"-mb", "20", "-runs", "3"}},
	{name: "manager", pkg: "./hack/bench-manager", component: "agentry-manager",
		quick: []string{"-bursts", "1", "-jobs", "10", "-max-agents", "10", "-idle-agents", "50"}},
	// The burst again, with the agent pods on CPU nothing else wants, as
	// on worker nodes apart from the control plane (the memory figure is
	// the first run's).
	{name: "manager-idle-cpu", pkg: "./hack/bench-manager", component: "agentry-manager",
		base:  []string{"-pods-on-idle-cpu", "-idle-agents", "0"},
		quick: []string{"-bursts", "1", "-jobs", "10", "-max-agents", "10"}},
}

type config struct {
	quick bool
	only  []string
	flags map[string][]string // extra flags per program name, after -quick's
}

func main() {
	cfg := config{flags: map[string][]string{}}
	only := flag.String("only", "server,agent,manager,manager-idle-cpu", "comma-separated programs to run")
	flag.BoolVar(&cfg.quick, "quick", false, "smaller runs (a minute or two, for trying the harness); figures are not comparable")
	extra := map[string]*string{}
	for _, p := range programs {
		extra[p.name] = flag.String(p.name+"-flags", "", "extra flags for "+p.pkg)
	}
	flag.Parse()
	cfg.only = strings.Split(*only, ",")
	for name, f := range extra {
		cfg.flags[name] = strings.Fields(*f)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchall:", err)
		os.Exit(1)
	}
}

// result is what one program produced.
type result struct {
	program
	args []string
	took time.Duration
	rows []benchrows.Row
	err  error
}

func run(ctx context.Context, cfg config) error {
	var selected []program
	for _, name := range cfg.only {
		i := slices.IndexFunc(programs, func(p program) bool { return p.name == name })
		if i < 0 {
			return fmt.Errorf("-only: no program %q (server, agent, manager, manager-idle-cpu)", name)
		}
		selected = append(selected, programs[i])
	}
	if slices.ContainsFunc(selected, func(p program) bool { return p.pkg == "./hack/bench-manager" }) && os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return errors.New("the manager benchmark needs KUBEBUILDER_ASSETS: run `make bench`, or leave it out with -only server,agent")
	}
	tmp, err := os.MkdirTemp("", "agentry-benchall-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	started, before := time.Now(), readTree()
	// Build all first, so a compile error shows before minutes of
	// benchmarks.
	for _, p := range selected {
		fmt.Fprintf(os.Stderr, "benchall: building %s\n", p.pkg)
		build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(tmp, p.name), p.pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building %s: %w", p.pkg, err)
		}
	}

	var results []result
	for _, p := range selected {
		if ctx.Err() != nil {
			break
		}
		results = append(results, runProgram(ctx, cfg, p, tmp))
	}

	if err := printReport(os.Stdout, started, before, readTree(), results); err != nil {
		return err
	}
	var failed []string
	for _, r := range results {
		if r.err != nil {
			failed = append(failed, r.pkg)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s", strings.Join(failed, ", "))
	}
	return ctx.Err()
}

// runProgram runs one built benchmark with its output on stderr and reads
// the rows it wrote.
func runProgram(ctx context.Context, cfg config, p program, tmp string) result {
	rowsPath := filepath.Join(tmp, p.name+".tsv")
	args := slices.Clone(p.base)
	if cfg.quick {
		args = append(args, p.quick...)
	}
	args = append(args, cfg.flags[p.name]...)
	r := result{program: p, args: args}
	fmt.Fprintf(os.Stderr, "benchall: running %s %s\n", p.pkg, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, filepath.Join(tmp, p.name), append(args, "-rows", rowsPath)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// On Ctrl-C let the program tear down what it started (the manager
	// benchmark runs a whole cluster) before it is killed.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	start := time.Now()
	r.err = cmd.Run()
	r.took = time.Since(start)
	if r.err != nil {
		return r
	}
	f, err := os.Open(rowsPath)
	if err != nil {
		r.err = fmt.Errorf("reading its rows: %w", err)
		return r
	}
	defer f.Close()
	if r.rows, err = benchrows.Read(f); err != nil {
		r.err = fmt.Errorf("reading its rows: %w", err)
	}
	return r
}

func printReport(w io.Writer, started time.Time, before, after tree, results []result) error {
	fmt.Fprintf(w, "agentry benchmarks, %s\n", started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "machine: %s\n", machine())
	fmt.Fprintf(w, "go:      %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "commit:  %s\n", before)
	if after != before {
		// The programs build what is checked out when they start, so
		// the figures may come from more than one version.
		fmt.Fprintf(w, "note:    the checkout changed during the run; now %s\n", after)
	}
	for _, r := range results {
		fmt.Fprintf(w, "ran:     %s  (%s)\n", strings.Join(append([]string{r.pkg}, r.args...), " "), r.took.Round(time.Second))
	}
	fmt.Fprintln(w)
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "component\tmetric\tmeasured\ttarget\tverdict")
	for _, r := range results {
		for _, row := range r.rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", row.Component, row.Metric, row.Measured, row.Target, row.Verdict)
		}
		if r.err != nil {
			fmt.Fprintf(tw, "%s\t%s failed: %v\t\t\t\n", r.component, r.pkg, r.err)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Empty target and verdict cells leave padding that has no use at a
	// line's end.
	for line := range strings.Lines(table.String()) {
		fmt.Fprintln(w, strings.TrimRight(line, " \n"))
	}
	met, missed := 0, 0
	for _, r := range results {
		for _, row := range r.rows {
			switch row.Verdict {
			case benchrows.OK:
				met++
			case benchrows.Missed:
				missed++
			}
		}
	}
	_, err := fmt.Fprintf(w, "\ntargets: %d met, %d missed (informational: a shared machine is noisy)\n", met, missed)
	return err
}

// machine describes the CPU, core count, memory and kernel from /proc.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d cores (nproc), %s%s%s", runtime.NumCPU(), model, mem, kernel)
}

// tree is the checked-out commit and a digest of its uncommitted changes
// to tracked files.
type tree struct {
	commit string
	diff   [sha256.Size]byte
	dirty  bool
}

func readTree() tree {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return tree{commit: "unknown"}
	}
	t := tree{commit: strings.TrimSpace(string(out))}
	if d, err := exec.Command("git", "diff", "HEAD").Output(); err == nil && len(d) > 0 {
		t.diff, t.dirty = sha256.Sum256(d), true
	}
	return t
}

func (t tree) String() string {
	if t.dirty {
		return t.commit + " (with uncommitted changes)"
	}
	return t.commit
}
