package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	"github.com/agentry-dev/agentry/internal/server/store"
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
			"protocol. `serve` runs it; `pool`, `job` and `token` are clients of a running server.\n\n" +
			"Environment:\n" +
			"  " + envAdminToken + "  the pool-admin token (serve: the token to accept; clients: the token to send)\n" +
			"  " + envServerURL + "   the server the client commands call (default " + defaultServerURL + ")",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.AddCommand(c.serveCommand(), c.poolCommand(), c.jobCommand(), c.tokenCommand())
	return root
}

// ---- serve ----

type serveOptions struct {
	listen, data, publicURL, logFormat string
	store, adminTokenFile              string
	tlsCert, tlsKey                    string
	longPoll                           time.Duration
	verbosity                          int
}

// Stores serve can use.
const (
	storeSQLite = "sqlite"
	storeMemory = "memory"
)

func (c *cli) serveCommand() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the server",
		Long: "Run agentry-server until interrupted.\n\n" +
			"The bootstrap admin token is read from --admin-token-file or else from " + envAdminToken + ";\n" +
			"make named, revocable tokens for people and programs with `agentry-server token create`.\n\n" +
			"State (pools, agents, jobs, timelines, logs, admin tokens) is kept in an SQLite database,\n" +
			"" + server.DatabaseFile + " in --data, and survives restarts. --store memory keeps it in memory\n" +
			"instead (lost when the server stops), for tests and experiments.\n\n" +
			"With --tls-cert and --tls-key the server speaks HTTPS only.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.serve(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on, host:port (use :8080 for every interface)")
	f.StringVar(&o.data, "data", "agentry-data", "data folder, holding the database; created if missing")
	f.StringVar(&o.store, "store", storeSQLite, "where state is kept: sqlite (in --data, durable) or memory (lost on exit)")
	f.StringVar(&o.adminTokenFile, "admin-token-file", "", "file holding the bootstrap admin token (instead of $"+envAdminToken+")")
	f.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate (chain) to serve HTTPS with; needs --tls-key")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
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
	token, err := c.adminToken(o.adminTokenFile)
	if err != nil {
		return fmt.Errorf("the server needs a bootstrap admin token: %w", err)
	}
	var tlsConfig *tls.Config
	if o.tlsCert != "" || o.tlsKey != "" {
		if o.tlsCert == "" || o.tlsKey == "" {
			return errors.New("--tls-cert and --tls-key go together")
		}
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return fmt.Errorf("loading the TLS certificate: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if err := server.InitDataDir(o.data); err != nil {
		return err
	}
	var st store.Store
	switch o.store {
	case storeSQLite:
		db, err := store.NewSQLite(filepath.Join(o.data, server.DatabaseFile))
		if err != nil {
			return err
		}
		defer db.Close()
		st = db
	case storeMemory:
		st = store.NewMemory()
	default:
		return fmt.Errorf("--store %q: want %s or %s", o.store, storeSQLite, storeMemory)
	}
	srv, err := server.New(server.Config{AdminToken: token, PublicURL: o.publicURL, Log: log, LongPoll: o.longPoll, Store: st})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	log.Info("Serving agentry-server", "address", ln.Addr().String(), "tls", tlsConfig != nil, "data", o.data,
		"store", o.store, "publicURL", o.publicURL)
	if c.onListen != nil {
		c.onListen(ln.Addr())
	}
	err = srv.Run(ctx, ln)
	log.Info("Stopped agentry-server")
	return err
}

// adminToken reads the admin token from file or, when file is empty, from
// the environment.
func (c *cli) adminToken(file string) (string, error) {
	if file == "" {
		if tok := c.getenv(envAdminToken); tok != "" {
			return tok, nil
		}
		return "", fmt.Errorf("%s is not set and no --admin-token-file was given", envAdminToken)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("reading the admin token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin token file %s is empty", file)
	}
	return tok, nil
}

// ---- client commands ----

// clientFlags are the flags every client command has.
type clientFlags struct{ server, adminTokenFile, caFile string }

func (c *cli) addClientFlags(cmd *cobra.Command, f *clientFlags) {
	def := c.getenv(envServerURL)
	if def == "" {
		def = defaultServerURL
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.server, "server", def, "server URL; defaults to $"+envServerURL+", else "+defaultServerURL+". The admin token is read from $"+envAdminToken)
	pf.StringVar(&f.adminTokenFile, "admin-token-file", "", "file holding the admin token (instead of $"+envAdminToken+")")
	pf.StringVar(&f.caFile, "ca-file", "", "PEM CA certificate(s) to trust for an https server, besides the system's")
}

func (c *cli) client(f *clientFlags) (jobapi.Client, error) {
	token, err := c.adminToken(f.adminTokenFile)
	if err != nil {
		return jobapi.Client{}, fmt.Errorf("the client needs an admin token: %w", err)
	}
	hc := &http.Client{Timeout: time.Minute}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return jobapi.Client{}, fmt.Errorf("reading --ca-file: %w", err)
		}
		roots, err := x509.SystemCertPool()
		if err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return jobapi.Client{}, fmt.Errorf("--ca-file %s holds no PEM certificate", f.caFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		hc.Transport = tr
	}
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
	pool, name    string
	scripts       []string
	demands       []string
	vars, secrets []string
	timeout       int
	bash          bool
}

// variables reads --var and --secret NAME=VALUE pairs.
func (q *queueOptions) variables() (map[string]pipelines.VariableValue, error) {
	vars := map[string]pipelines.VariableValue{}
	for _, set := range []struct {
		flag   string
		pairs  []string
		secret bool
	}{{"--var", q.vars, false}, {"--secret", q.secrets, true}} {
		for _, kv := range set.pairs {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				// Never echo the pair: it may be a secret.
				return nil, fmt.Errorf("%s: want NAME=VALUE", set.flag)
			}
			vars[k] = pipelines.VariableValue{Value: v, IsSecret: set.secret}
		}
	}
	if len(vars) == 0 {
		return nil, nil
	}
	return vars, nil
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
			vars, err := q.variables()
			if err != nil {
				return err
			}
			spec := jobapi.JobSpec{Pool: q.pool, Name: q.name, Demands: q.demands, Variables: vars, TimeoutInMinutes: q.timeout}
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
	qf.StringArrayVar(&q.demands, "demand", nil, "a capability the agent must have: NAME, 'NAME -equals VALUE' or 'NAME -gtVersion VERSION'; repeatable")
	qf.StringArrayVar(&q.vars, "var", nil, "a job variable, NAME=VALUE; repeatable")
	qf.StringArrayVar(&q.secrets, "secret", nil, "a secret job variable, NAME=VALUE, masked in logs and never shown; repeatable")
	qf.IntVar(&q.timeout, "timeout", 0, "the job's time-out in minutes (0: none); the server cancels a job that runs longer")
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

	var followLog bool
	logs := &cobra.Command{
		Use:   "logs [-f] ID",
		Short: "Print a job's log; with -f, follow it until the job ends",
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
			if followLog {
				// A followed log lasts as long as the job: no overall timeout.
				cl.Client = cl.WithAuth(cl.Auth)
				cl.HTTP = &http.Client{}
				return cl.FollowJobLog(cmd.Context(), id, c.stdout)
			}
			log, err := cl.JobLog(cmd.Context(), id)
			if err != nil {
				return err
			}
			_, err = io.WriteString(c.stdout, log)
			return err
		},
	}

	logs.Flags().BoolVarP(&followLog, "follow", "f", false, "stream the log as it grows until the job ends")

	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a job; prints its state",
		Long: "Cancel a job. A job not yet started ends canceled at once; a running one is asked to stop\n" +
			"and is shown as canceling until its agent reports (or abandoned if it does not in time).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := jobID(args[0])
			if err != nil {
				return err
			}
			cl, err := c.client(&f)
			if err != nil {
				return err
			}
			j, err := cl.CancelJob(cmd.Context(), id)
			if err != nil {
				return err
			}
			state := j.State
			if j.Result != "" {
				state += " (" + string(j.Result) + ")"
			}
			fmt.Fprintln(c.stdout, state)
			return nil
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
	list.Flags().StringVar(&listState, "state", "", "only jobs in this state: queued, assigned, running, canceling or completed")

	cmd.AddCommand(queue, get, logs, list, cancel)
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
	timeout := "-"
	if j.TimeoutInMinutes > 0 {
		timeout = fmt.Sprintf("%d min", j.TimeoutInMinutes)
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
		{"Timeout", timeout},
		{"Attempts", strconv.Itoa(j.Attempts)},
		{"Queued", when(j.QueueTime)},
		{"Assigned", when(j.AssignTime)},
		{"Started", when(j.StartTime)},
		{"Finished", when(j.FinishTime)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}
