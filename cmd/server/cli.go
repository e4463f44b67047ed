package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/spf13/cobra"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server"
)

// Environment variables the commands read.
const (
	envAdminToken = "AGENTRY_ADMIN_TOKEN"
	envServerURL  = "AGENTRY_SERVER_URL"
)

const defaultServerURL = "http://127.0.0.1:8080"

// cli holds what the commands read and write, so tests can run them in
// process.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// onListen, when set, is told the address serve listens on.
	onListen func(net.Addr)
}

func (c *cli) command() *cobra.Command {
	root := &cobra.Command{
		Use:   "agentry-server",
		Short: "Run or use agentry's job service",
		Long: "agentry-server is a job service that speaks the agent-facing side of the Azure Pipelines\n" +
			"protocol. `serve` runs it; `pool` and `job` are clients of a running server.\n\n" +
			"Environment:\n" +
			"  " + envAdminToken + "  the pool-admin token (serve: the token to accept; clients: the token to send)\n" +
			"  " + envServerURL + "   the server the client commands call (default " + defaultServerURL + ")",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.AddCommand(c.serveCommand(), c.poolCommand(), c.jobCommand())
	return root
}

// ---- serve ----

type serveOptions struct {
	listen, data, publicURL, logFormat string
	longPoll                           time.Duration
	verbosity                          int
}

func (c *cli) serveCommand() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the server",
		Long: "Run agentry-server until interrupted. The admin token is read from " + envAdminToken + ".\n\n" +
			"State is kept in memory for now: it is lost when the server stops. --data is created\n" +
			"and marked already; the durable store will keep its database there.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.serve(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on, host:port (use :8080 for every interface)")
	f.StringVar(&o.data, "data", "agentry-data", "data folder; created if missing")
	f.StringVar(&o.publicURL, "public-url", "", "base URL agents are told to use (token endpoint, job connection); default: the scheme and Host of each request")
	f.DurationVar(&o.longPoll, "long-poll", server.DefaultLongPoll, "how long an agent's message poll waits before answering with no message")
	f.IntVarP(&o.verbosity, "verbosity", "v", 0, "log verbosity; 1 logs every request")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	return cmd
}

// logger logs to stderr, one line per entry. Handlers log concurrently and
// funcr does not serialise its output, so the writes are.
func (c *cli) logger(format string, verbosity int) (logr.Logger, error) {
	var mu sync.Mutex
	writeLine := func(line string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(c.stderr, line)
	}
	opts := funcr.Options{LogTimestamp: true, Verbosity: verbosity}
	switch format {
	case "text":
		return funcr.New(func(prefix, args string) {
			if prefix != "" {
				args = prefix + " " + args
			}
			writeLine(args)
		}, opts), nil
	case "json":
		return funcr.NewJSON(writeLine, opts), nil
	}
	return logr.Logger{}, fmt.Errorf("--log-format %q: want text or json", format)
}

func (c *cli) serve(ctx context.Context, o serveOptions) error {
	log, err := c.logger(o.logFormat, o.verbosity)
	if err != nil {
		return err
	}
	token := c.getenv(envAdminToken)
	if token == "" {
		return fmt.Errorf("%s is not set: the server needs an admin token", envAdminToken)
	}
	if err := server.InitDataDir(o.data); err != nil {
		return err
	}
	srv, err := server.New(server.Config{AdminToken: token, PublicURL: o.publicURL, Log: log, LongPoll: o.longPoll})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	log.Info("Serving agentry-server", "address", ln.Addr().String(), "data", o.data, "publicURL", o.publicURL)
	if c.onListen != nil {
		c.onListen(ln.Addr())
	}
	err = srv.Run(ctx, ln)
	log.Info("Stopped agentry-server")
	return err
}

// ---- client commands ----

// clientFlags are the flags every client command has.
type clientFlags struct{ server string }

func (c *cli) addClientFlags(cmd *cobra.Command, f *clientFlags) {
	def := c.getenv(envServerURL)
	if def == "" {
		def = defaultServerURL
	}
	cmd.PersistentFlags().StringVar(&f.server, "server", def, "server URL; defaults to $"+envServerURL+", else "+defaultServerURL+". The admin token is read from $"+envAdminToken)
}

func (c *cli) client(f *clientFlags) (jobapi.Client, error) {
	token := c.getenv(envAdminToken)
	if token == "" {
		return jobapi.Client{}, fmt.Errorf("%s is not set: the client needs the admin token", envAdminToken)
	}
	hc := &http.Client{Timeout: time.Minute}
	return jobapi.Client{Client: pipelines.NewClient(f.server, pipelines.PersonalAccessToken(token), hc)}, nil
}

func (c *cli) poolCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{Use: "pool", Short: "Manage agent pools", Args: cobra.NoArgs}
	c.addClientFlags(cmd, &f)
	cmd.AddCommand(&cobra.Command{
		Use:   "create NAME",
		Short: "Create an agent pool; prints its id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client(&f)
			if err != nil {
				return err
			}
			p, err := cl.AddPool(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, p.ID)
			return nil
		},
	}, &cobra.Command{
		Use:   "list",
		Short: "List agent pools",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(&f)
			if err != nil {
				return err
			}
			var l pipelines.List[pipelines.TaskAgentPool]
			if _, err := cl.Do(cmd.Context(), http.MethodGet, "/_apis/distributedtask/pools", nil, nil, &l); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tAGENTS")
			for _, p := range l.Value {
				fmt.Fprintf(tw, "%d\t%s\t%d\n", p.ID, p.Name, p.Size)
			}
			return tw.Flush()
		},
	})
	return cmd
}

type queueOptions struct {
	pool, name string
	scripts    []string
	demands    []string
	bash       bool
}

func (c *cli) jobCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{Use: "job", Short: "Queue jobs and read their results and logs", Args: cobra.NoArgs}
	c.addClientFlags(cmd, &f)

	var q queueOptions
	queue := &cobra.Command{
		Use:   "queue --pool NAME --script TEXT [--script TEXT]...",
		Short: "Queue a job of inline script steps; prints only its id",
		Example: "  agentry-server job queue --pool default --script 'echo hello'\n" +
			"  agentry-server job queue --pool default --bash --script 'set -e; make' --script 'make test'",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(&f)
			if err != nil {
				return err
			}
			spec := jobapi.JobSpec{Pool: q.pool, Name: q.name, Demands: q.demands}
			task := jobapi.TaskCmdLine
			if q.bash {
				task = jobapi.TaskBash
			}
			for _, s := range q.scripts {
				spec.Steps = append(spec.Steps, jobapi.Step{Task: task, Script: s})
			}
			j, err := cl.QueueJob(cmd.Context(), spec)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, j.ID)
			return nil
		},
	}
	qf := queue.Flags()
	qf.StringVar(&q.pool, "pool", "", "pool to queue the job in (required)")
	qf.StringArrayVar(&q.scripts, "script", nil, "an inline script step; repeat for more steps, run in order (required)")
	qf.BoolVar(&q.bash, "bash", false, "run the steps with Bash@3 instead of CmdLine@2")
	qf.StringVar(&q.name, "name", "", "the job's display name")
	qf.StringArrayVar(&q.demands, "demand", nil, "a capability the agent must have: NAME or 'NAME -equals VALUE'; repeatable")
	_ = queue.MarkFlagRequired("pool")
	_ = queue.MarkFlagRequired("script")

	var output string
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a job",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := jobID(args[0])
			if err != nil {
				return err
			}
			cl, err := c.client(&f)
			if err != nil {
				return err
			}
			j, err := cl.GetJob(cmd.Context(), id)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(c.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(j)
			case "text", "":
				return printJob(c.stdout, j)
			}
			return fmt.Errorf("-o %q: want text or json", output)
		},
	}
	get.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")

	logs := &cobra.Command{
		Use:   "logs ID",
		Short: "Print a job's log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := jobID(args[0])
			if err != nil {
				return err
			}
			cl, err := c.client(&f)
			if err != nil {
				return err
			}
			log, err := cl.JobLog(cmd.Context(), id)
			if err != nil {
				return err
			}
			_, err = io.WriteString(c.stdout, log)
			return err
		},
	}

	var listPool, listState string
	list := &cobra.Command{
		Use:   "list",
		Short: "List jobs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(&f)
			if err != nil {
				return err
			}
			jobs, err := cl.ListJobs(cmd.Context(), listPool, listState)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tPOOL\tNAME\tSTATE\tRESULT\tAGENT")
			for _, j := range jobs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Pool, j.Name, j.State, dash(string(j.Result)), dash(j.AgentName))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&listPool, "pool", "", "only jobs of this pool")
	list.Flags().StringVar(&listState, "state", "", "only jobs in this state: queued, assigned, running or completed")

	cmd.AddCommand(queue, get, logs, list)
	return cmd
}

func jobID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("job id %q is not a positive integer", s)
	}
	return id, nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printJob(w io.Writer, j *jobapi.Job) error {
	when := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Local().Format(time.RFC3339)
	}
	agent := "-"
	if j.AgentID != 0 {
		agent = fmt.Sprintf("%s (%d)", j.AgentName, j.AgentID)
	}
	demands := "-"
	if len(j.Demands) > 0 {
		demands = strings.Join(j.Demands, ", ")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"ID", strconv.FormatInt(j.ID, 10)},
		{"Job ID", j.JobID},
		{"Name", j.Name},
		{"Pool", fmt.Sprintf("%s (%d)", j.Pool, j.PoolID)},
		{"State", j.State},
		{"Result", dash(string(j.Result))},
		{"Agent", agent},
		{"Demands", demands},
		{"Queued", when(j.QueueTime)},
		{"Assigned", when(j.AssignTime)},
		{"Started", when(j.StartTime)},
		{"Finished", when(j.FinishTime)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}
