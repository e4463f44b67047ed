// Command agentry-agent is the in-pod agent: it registers nothing, takes
// exactly one job from an Azure-Pipelines-protocol server with the identity
// in its agent folder, runs it, reports it, and exits.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/spf13/cobra"

	"github.com/agentry-dev/agentry/internal/agent"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = agent.DefaultVersion

const help = `agentry-agent takes exactly one job from its pool, runs it, reports it and exits.

It reads the agent's identity (.agent, .credentials, .credentials_rsaparams, as
written by the operator or by Microsoft's agent configuration) from --dir.

Exit codes:
  0  ran a job and reported it (whatever the job's result)
  1  other error (server unreachable after retries, protocol error, stopped before a job)
  2  bad configuration (flags, missing or invalid agent files, work folder)
  3  credentials rejected by the server
  4  deregistered: the agent's registration was deleted
  5  idle timeout: no job arrived within --idle-timeout`

func main() {
	// The agent waits on its server and its step's process; its Go code
	// needs no second P, and one costs each job thread wake-ups: a third
	// fewer context switches and 5-10% less CPU for a one-step job (more on
	// an idle machine), with the same log throughput. The environment
	// still decides when it sets GOMAXPROCS; steps do not inherit this.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newCommand(os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "agentry-agent: %s\n", oneLine(err))
	}
	os.Exit(agent.ExitCode(err))
}

func newCommand(stderr io.Writer) *cobra.Command {
	var (
		cfg       agent.Config
		verbosity int
	)
	idle, idleErr := envDuration("AGENTRY_IDLE_TIMEOUT")
	cmd := &cobra.Command{
		Use:     "agentry-agent",
		Short:   "Run one Azure Pipelines job, then exit",
		Long:    help,
		Version: version,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("%w: unexpected arguments %q", agent.ErrConfig, args)
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if idleErr != nil && !cmd.Flags().Changed("idle-timeout") {
				return fmt.Errorf("%w: %w", agent.ErrConfig, idleErr)
			}
			cfg.Version = version
			cfg.Log = newLogger(stderr, verbosity)
			return run(cmd.Context(), cfg)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %w", agent.ErrConfig, err) })
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", os.Getenv("AGENTRY_AGENT_DIR"), "folder with the agent files (env AGENTRY_AGENT_DIR)")
	f.StringVar(&cfg.WorkDir, "work-dir", os.Getenv("AGENTRY_WORK_DIR"), "work folder for the job (env AGENTRY_WORK_DIR; default a temporary folder removed at exit)")
	f.DurationVar(&cfg.IdleTimeout, "idle-timeout", idle, "exit with code 5 when no job arrived in this time; 0 waits forever (env AGENTRY_IDLE_TIMEOUT)")
	f.IntVarP(&verbosity, "verbosity", "v", 0, "log verbosity")
	return cmd
}

func run(ctx context.Context, cfg agent.Config) error {
	out, err := agent.Run(ctx, cfg)
	if err != nil {
		return err
	}
	cfg.Log.Info("Leaving", "jobId", out.JobID, "result", out.Result)
	return nil
}

func envDuration(name string) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

func newLogger(w io.Writer, verbosity int) logr.Logger {
	return funcr.NewJSON(func(obj string) { fmt.Fprintln(w, obj) }, funcr.Options{LogTimestamp: true, Verbosity: verbosity})
}

// oneLine keeps the exit reason on a single line of stderr.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
