// Command bench measures agentry-server under many idle agents: it starts
// the server as a child process (so its memory is its own), registers and
// connects -sessions agents that each hold a long-poll open, then queues
// jobs one at a time (queue→delivery latency on an otherwise idle server)
// and in a burst (latency under load and jobs/s through in-process agents
// that run the whole job protocol), and prints a table.
//
//	go run ./hack/bench [-sessions 10000] [-jobs 200] [-burst 1000] [-rows FILE]
//	    [-sqlite] [-watch] [-cpuprofile FILE]
//
// -rows also writes the figures as hack/benchrows lines, for hack/benchall.
// Everything is on loopback; it raises RLIMIT_NOFILE for both processes.
//
// Besides latency it reports the server's CPU time (user + system, from
// /proc/PID/stat) per agent set up and per job. -sqlite runs the server on
// the SQLite store in a fresh data folder, as `agentry-server serve --data`
// does (the default is the in-memory store); -watch adds what
// agentry-manager does to the server during a burst: it long-polls the
// pool's queue watch, and on each change looks the pool up by name and,
// when a job waits, reads the queue again (after=0); it deregisters each
// agent once its job is done.
// -cpuprofile writes a pprof CPU profile of the server during the burst.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/agentry-dev/agentry/hack/benchrows"
	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server"
	"github.com/agentry-dev/agentry/internal/server/store"
)

const (
	roleEnv  = "AGENTRY_BENCH_ROLE"
	tokenEnv = "AGENTRY_BENCH_TOKEN"
	// dataEnv, when set, is the server's data folder: it runs on the
	// SQLite store there.
	dataEnv = "AGENTRY_BENCH_DATA"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if os.Getenv(roleEnv) == "server" {
		err = serve(ctx)
	} else {
		err = run(ctx)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE as far as the hard limit
// allows and fails when that is below need: the server and the agents live
// in two processes, so each holds about one descriptor per session.
func raiseFileLimit(need uint64) error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return fmt.Errorf("raising the open-file limit: %w", err)
		}
	}
	if l.Cur < need {
		return fmt.Errorf("the open-file limit is %d, %d are needed; raise the hard limit (ulimit -Hn)", l.Cur, need)
	}
	return nil
}

// serve is the child: agentry-server on a loopback port it prints, until
// its stdin closes (the parent ended). Lines on stdin control a CPU
// profile: "cpuprofile FILE" starts one, "stop" writes it.
func serve(ctx context.Context) error {
	if err := raiseFileLimit(0); err != nil {
		return err
	}
	cfg := server.Config{AdminToken: os.Getenv(tokenEnv)}
	if dir := os.Getenv(dataEnv); dir != "" {
		// What `agentry-server serve --data DIR` opens.
		if err := server.InitDataDir(dir); err != nil {
			return err
		}
		db, err := store.NewSQLite(filepath.Join(dir, server.DatabaseFile))
		if err != nil {
			return err
		}
		defer db.Close()
		cfg.Store = db
	}
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer cancel()
		var profile *os.File
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmd, arg, _ := strings.Cut(sc.Text(), " ")
			switch {
			case cmd == "cpuprofile" && profile == nil:
				f, err := os.Create(arg)
				if err == nil {
					err = pprof.StartCPUProfile(f)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "bench server: cpu profile:", err)
					continue
				}
				profile = f
			case cmd == "stop" && profile != nil:
				pprof.StopCPUProfile()
				profile.Close()
				profile = nil
			}
		}
	}()
	return srv.Run(ctx, ln)
}

type options struct {
	sessions, jobs, burst, workers int
	rows, cpuprofile               string
	sqlite, watch                  bool
}

type agent struct {
	id        int
	name      string
	poolID    int
	listener  *pipelines.Client
	sessionID string
	wrapped   []byte
}

type delivery struct {
	name string
	at   time.Time
}

type bench struct {
	opt      options
	url      string
	key      *rsa.PrivateKey
	hc       *http.Client
	admin    *pipelines.Client
	jobs     jobapi.Client
	poolID   int
	written  atomic.Int64 // polls whose request was sent
	delivers chan delivery
	done     chan string // names of completed jobs
	errs     atomic.Int64
	lastErr  atomic.Value
	// cleaned counts agents that ran their job and closed their session
	// (and, with -watch, were deregistered): the server's work for a job
	// ends there.
	cleaned atomic.Int64
	// watchAnswers counts the queue watch's answers (-watch).
	watchAnswers atomic.Int64
}

func run(ctx context.Context) error {
	var o options
	flag.IntVar(&o.sessions, "sessions", 10000, "idle agents, each holding a long-poll")
	flag.IntVar(&o.jobs, "jobs", 200, "jobs queued one at a time for the idle-server latency")
	flag.IntVar(&o.burst, "burst", 1000, "jobs queued at once for latency under load and throughput")
	flag.IntVar(&o.workers, "workers", 16, "concurrent setup and queue calls")
	flag.StringVar(&o.rows, "rows", "", "also write the results to this file as tab-separated rows")
	flag.BoolVar(&o.sqlite, "sqlite", false, "run the server on the SQLite store in a temporary data folder (as serve --data), not in memory")
	flag.BoolVar(&o.watch, "watch", false, "also do what agentry-manager does: watch the queue, read it again before starting agents, deregister spent agents")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write the server's CPU profile during the burst to this file (pprof)")
	flag.Parse()
	if o.jobs+o.burst > o.sessions {
		return fmt.Errorf("-jobs + -burst (%d) must not exceed -sessions (%d): an agent takes one job", o.jobs+o.burst, o.sessions)
	}
	if err := raiseFileLimit(uint64(o.sessions) + 512); err != nil {
		return err
	}

	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	token := hex.EncodeToString(tok)
	child := exec.CommandContext(ctx, os.Args[0])
	child.Env = append(os.Environ(), roleEnv+"=server", tokenEnv+"="+token)
	storeDesc := "memory"
	if o.sqlite {
		dir, err := os.MkdirTemp("", "agentry-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		data := filepath.Join(dir, "data")
		child.Env = append(child.Env, dataEnv+"="+data)
		storeDesc = "sqlite (" + data + ")"
	}
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() {
		stdin.Close()
		_ = child.Wait()
	}()
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading the server's address: %w", err)
	}
	pid := child.Process.Pid
	fmt.Fprintf(os.Stderr, "bench: server pid %d, store %s\n", pid, storeDesc)

	b := &bench{opt: o, url: "http://" + strings.TrimSpace(addr),
		delivers: make(chan delivery, o.sessions), done: make(chan string, o.sessions)}
	b.hc = &http.Client{Timeout: 100 * time.Second, Transport: &http.Transport{
		MaxIdleConns: o.sessions + 1000, MaxIdleConnsPerHost: o.sessions + 1000, IdleConnTimeout: 5 * time.Minute,
		DisableCompression: true,
	}}
	b.admin = pipelines.NewClient(b.url, pipelines.PersonalAccessToken(token), b.hc)
	b.jobs = jobapi.Client{Client: b.admin}
	if b.key, err = agentcrypto.GenerateKey(); err != nil {
		return err
	}
	p, err := b.admin.AddPool(ctx, "bench")
	if err != nil {
		return err
	}
	b.poolID = p.ID

	start := time.Now()
	cpu0 := cpuTime(pid)
	agents, err := b.connectAll(ctx)
	if err != nil {
		return err
	}
	setup := time.Since(start)
	setupCPU := cpuTime(pid) - cpu0
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.runAgent(ctx, a)
		}()
	}
	// Every agent has sent its first poll; give the server a moment to park them.
	for b.written.Load() < int64(len(agents)) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	rssIdle := rss(pid)
	if o.watch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.watchQueue(ctx)
		}()
	}

	fmt.Fprintf(os.Stderr, "bench: %d jobs one at a time\n", o.jobs)
	cpu0 = cpuTime(pid)
	idleLat, err := b.sequential(ctx)
	if err != nil {
		return err
	}
	if err := b.waitCleaned(ctx, o.jobs); err != nil {
		return err
	}
	seqCPU := cpuTime(pid) - cpu0
	fmt.Fprintf(os.Stderr, "bench: a burst of %d jobs\n", o.burst)
	if o.cpuprofile != "" {
		path, err := filepath.Abs(o.cpuprofile)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdin, "cpuprofile %s\n", path)
	}
	cpu0 = cpuTime(pid)
	burstLat, elapsed, err := b.burstRun(ctx)
	if err != nil {
		return err
	}
	if err := b.waitCleaned(ctx, o.jobs+o.burst); err != nil {
		return err
	}
	burstCPU := cpuTime(pid) - cpu0
	if o.cpuprofile != "" {
		fmt.Fprintln(stdin, "stop")
	}
	rssEnd := rss(pid)
	cancel()
	wg.Wait()

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "agentry-server benchmark\t\n")
	fmt.Fprintf(tw, "store\t%s\t\n", storeName(o.sqlite))
	fmt.Fprintf(tw, "as agentry-manager too (-watch)\t%t\t\n", o.watch)
	fmt.Fprintf(tw, "idle long-poll sessions\t%d\t\n", len(agents))
	fmt.Fprintf(tw, "setup (register + token + session)\t%s\t\n", setup.Round(time.Millisecond))
	fmt.Fprintf(tw, "server RSS with all sessions parked\t%.1f MiB\t\n", rssIdle)
	fmt.Fprintf(tw, "server RSS after the burst\t%.1f MiB\t\n", rssEnd)
	fmt.Fprintf(tw, "queue→delivery, one at a time (n=%d)\tp50 %s  p99 %s  max %s\t\n", len(idleLat), pct(idleLat, 50), pct(idleLat, 99), pct(idleLat, 100))
	fmt.Fprintf(tw, "queue→delivery, burst (n=%d)\tp50 %s  p99 %s  max %s\t\n", len(burstLat), pct(burstLat, 50), pct(burstLat, 99), pct(burstLat, 100))
	fmt.Fprintf(tw, "burst: %d jobs run end to end in\t%s = %.0f jobs/s\t\n", o.burst, elapsed.Round(time.Millisecond), float64(o.burst)/elapsed.Seconds())
	fmt.Fprintf(tw, "server CPU per agent set up\t%s\t\n", perUnit(setupCPU, len(agents)))
	fmt.Fprintf(tw, "server CPU per job, one at a time\t%s\t\n", perUnit(seqCPU, o.jobs))
	fmt.Fprintf(tw, "server CPU per job, burst\t%s\t\n", perUnit(burstCPU, o.burst))
	if o.watch {
		fmt.Fprintf(tw, "queue watch answers\t%d\t\n", b.watchAnswers.Load())
	}
	fmt.Fprintf(tw, "agent-side errors\t%d\t\n", b.errs.Load())
	if err := tw.Flush(); err != nil {
		return err
	}
	if e, ok := b.lastErr.Load().(error); ok {
		fmt.Fprintln(os.Stderr, "last agent error:", e)
	}
	row := func(metric, measured string) benchrows.Row {
		return benchrows.Row{Component: "agentry-server", Metric: metric, Measured: measured}
	}
	return benchrows.WriteFile(o.rows, []benchrows.Row{
		row("idle long-poll sessions", strconv.Itoa(len(agents))),
		row("setup (register + token + session)", setup.Round(time.Millisecond).String()),
		row("server RSS with all sessions parked", fmt.Sprintf("%.1f MiB", rssIdle)),
		row(fmt.Sprintf("queue→delivery, one at a time (n=%d) p50", len(idleLat)), pct(idleLat, 50)),
		{Component: "agentry-server", Metric: fmt.Sprintf("queue→delivery with all sessions waiting, one at a time (n=%d) p99", len(idleLat)),
			Measured: pct(idleLat, 99), Target: "< " + deliveryTarget.String(),
			Verdict: benchrows.Judge(len(idleLat) > 0 && percentile(idleLat, 99) < deliveryTarget)},
		row(fmt.Sprintf("queue→delivery, burst (n=%d) p50", len(burstLat)), pct(burstLat, 50)),
		row(fmt.Sprintf("queue→delivery, burst (n=%d) p99", len(burstLat)), pct(burstLat, 99)),
		row(fmt.Sprintf("burst throughput (%d jobs end to end in %s)", o.burst, elapsed.Round(time.Millisecond)), fmt.Sprintf("%.0f jobs/s", float64(o.burst)/elapsed.Seconds())),
		row("server RSS after the burst", fmt.Sprintf("%.1f MiB", rssEnd)),
		row("server CPU per job, burst ("+benchMode(o)+")", perUnit(burstCPU, o.burst)),
		row("agent-side errors", strconv.Itoa(int(b.errs.Load()))),
	})
}

// benchMode names the store and whether the manager's calls were added.
func benchMode(o options) string {
	if o.watch {
		return storeName(o.sqlite) + " store, -watch"
	}
	return storeName(o.sqlite) + " store"
}

func storeName(sqlite bool) string {
	if sqlite {
		return "sqlite"
	}
	return "memory"
}

// perUnit is cpu divided among n, in milliseconds.
func perUnit(cpu time.Duration, n int) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f ms", float64(cpu)/float64(n)/float64(time.Millisecond))
}

// parallel runs f for 0..n-1 on workers goroutines; the first error wins.
func parallel(n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || first.Load() != nil {
					return
				}
				if err := f(i); err != nil {
					first.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := first.Load().(error); ok {
		return err
	}
	return nil
}

// connectAll registers the agents (one key for all: key generation is not
// what is measured), trades an assertion for each one's listener token and
// opens its session.
func (b *bench) connectAll(ctx context.Context) ([]*agent, error) {
	pub := agentcrypto.PublicKeyOf(&b.key.PublicKey)
	agents := make([]*agent, b.opt.sessions)
	err := parallel(len(agents), b.opt.workers, func(i int) error {
		name := "agent-" + strconv.Itoa(i)
		reg, err := b.admin.AddAgent(ctx, b.poolID, pipelines.TaskAgent{
			Name: name, Version: "4.255.0", MaxParallelism: 1, ProvisioningState: "Provisioned",
			Authorization: &pipelines.TaskAgentAuthorization{PublicKey: &pub},
		})
		if err != nil {
			return err
		}
		assertion, err := agentcrypto.NewClientAssertion(b.key, reg.Authorization.ClientID, reg.Authorization.AuthorizationURL, time.Now())
		if err != nil {
			return err
		}
		anon := pipelines.NewClient(b.url, nil, b.hc)
		lt, err := anon.GetListenerToken(ctx, reg.Authorization.AuthorizationURL, assertion)
		if err != nil {
			return err
		}
		l := anon.WithAuth(pipelines.BearerToken(lt.AccessToken))
		s, err := l.CreateSession(ctx, b.poolID, pipelines.TaskAgentSession{OwnerName: "bench",
			Agent: pipelines.TaskAgentReference{ID: reg.ID, Name: name}})
		if err != nil {
			return err
		}
		agents[i] = &agent{id: reg.ID, name: name, poolID: b.poolID, listener: l, sessionID: s.SessionID, wrapped: s.EncryptionKey.Value}
		if (i+1)%1000 == 0 {
			fmt.Fprintf(os.Stderr, "connected %d agents\n", i+1)
		}
		return nil
	})
	return agents, err
}

func (b *bench) fail(err error) {
	b.errs.Add(1)
	b.lastErr.Store(err)
}

// runAgent long-polls until it gets a job, runs the job protocol, closes
// its session and returns, as an ephemeral agent does.
func (b *bench) runAgent(ctx context.Context, a *agent) {
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { b.written.Add(1) }}
	first := true
	for ctx.Err() == nil {
		pctx := ctx
		if first {
			pctx = httptrace.WithClientTrace(ctx, trace)
			first = false
		}
		m, err := a.listener.GetMessage(pctx, a.poolID, a.sessionID, 0)
		if err != nil {
			if ctx.Err() == nil {
				b.fail(err)
				time.Sleep(time.Second)
			}
			continue
		}
		if m == nil || m.MessageType != pipelines.MessageTypeJobRequest {
			continue
		}
		at := time.Now()
		if err := b.runJob(ctx, a, m, at); err != nil && ctx.Err() == nil {
			b.fail(err)
		}
		b.cleaned.Add(1)
		return
	}
}

func (b *bench) runJob(ctx context.Context, a *agent, m *pipelines.TaskAgentMessage, at time.Time) error {
	key, err := agentcrypto.UnwrapKey(b.key, a.wrapped, false)
	if err != nil {
		return err
	}
	ct, err := base64.StdEncoding.DecodeString(m.Body)
	if err != nil {
		return err
	}
	body, err := agentcrypto.Decrypt(key, m.IV, ct)
	if err != nil {
		return err
	}
	var job pipelines.AgentJobRequestMessage
	if err := json.Unmarshal(body, &job); err != nil {
		return err
	}
	b.delivers <- delivery{name: job.JobDisplayName, at: at}
	if err := a.listener.DeleteMessage(ctx, a.poolID, a.sessionID, m.MessageID); err != nil {
		return err
	}
	if _, err := a.listener.RenewJobRequest(ctx, a.poolID, job.RequestID); err != nil {
		return err
	}
	u, tok, ok := job.JobToken()
	if !ok {
		return errors.New("no job token")
	}
	jc := pipelines.NewClient(u, pipelines.BearerToken(tok), b.hc)
	now := time.Now().UTC()
	inProgress, completed, ok2 := pipelines.StateInProgress, pipelines.StateCompleted, pipelines.ResultSucceeded
	rec := pipelines.TimelineRecord{ID: job.JobID, Type: "Job", Name: job.JobDisplayName, StartTime: &now, State: &inProgress}
	if err := jc.UpdateTimelineRecords(ctx, job.Plan, job.Timeline.ID, []pipelines.TimelineRecord{rec}); err != nil {
		return err
	}
	if err := jc.AppendFeed(ctx, job.Plan, job.Timeline.ID, job.JobID, pipelines.TimelineRecordFeedLines{Count: 1, Value: []string{"hello from " + a.name}}); err != nil {
		return err
	}
	l, err := jc.CreateLog(ctx, job.Plan, "logs/job.log")
	if err != nil {
		return err
	}
	if err := jc.UploadLog(ctx, job.Plan, l.ID, strings.NewReader("hello from "+a.name+"\n")); err != nil {
		return err
	}
	rec.State, rec.Result = &completed, &ok2
	if err := jc.UpdateTimelineRecords(ctx, job.Plan, job.Timeline.ID, []pipelines.TimelineRecord{rec}); err != nil {
		return err
	}
	if err := jc.RaisePlanEvent(ctx, job.Plan, pipelines.JobEvent{Name: pipelines.JobCompletedEvent, JobID: job.JobID, RequestID: job.RequestID, Result: ok2}); err != nil {
		return err
	}
	b.done <- job.JobDisplayName
	if err := a.listener.DeleteSession(ctx, a.poolID, a.sessionID); err != nil {
		return err
	}
	if b.opt.watch {
		// agentry-manager deregisters an ephemeral agent that ran its job.
		return b.admin.DeleteAgent(ctx, a.poolID, a.id)
	}
	return nil
}

// waitCleaned waits until n agents have finished with the server.
func (b *bench) waitCleaned(ctx context.Context, n int) error {
	deadline := time.Now().Add(time.Minute)
	for b.cleaned.Load() < int64(n) {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d agents closed their session within a minute of their job", b.cleaned.Load(), n)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// watchQueue long-polls the pool's queue watch as agentry-manager does. On
// each new revision it makes the calls of the manager's pool reconcile: it
// looks the pool up by name and, when a job still waits for an agent, reads
// the queue again (after=0), as the manager does before it starts agents.
func (b *bench) watchQueue(ctx context.Context) {
	var after int64
	for ctx.Err() == nil {
		st, err := b.jobs.WatchQueue(ctx, b.poolID, after, 30*time.Second)
		if err != nil {
			if ctx.Err() == nil {
				b.fail(fmt.Errorf("queue watch: %w", err))
				time.Sleep(time.Second)
			}
			continue
		}
		b.watchAnswers.Add(1)
		if st.Revision != after {
			if _, err := b.admin.GetPoolByName(ctx, "bench"); err != nil && ctx.Err() == nil {
				b.fail(fmt.Errorf("pool lookup: %w", err))
			}
			if slices.ContainsFunc(st.JobRequests, func(r pipelines.TaskAgentJobRequest) bool {
				return r.ReservedAgent == nil && r.Result == nil
			}) {
				if _, err := b.jobs.WatchQueue(ctx, b.poolID, 0, 0); err != nil && ctx.Err() == nil {
					b.fail(fmt.Errorf("queue read: %w", err))
				}
			}
		}
		after = st.Revision
	}
}

// sequential queues jobs one at a time, each after the previous one was
// delivered, and returns the queue→delivery latencies.
func (b *bench) sequential(ctx context.Context) ([]time.Duration, error) {
	var lat []time.Duration
	for i := range b.opt.jobs {
		name := "seq-" + strconv.Itoa(i)
		t0 := time.Now()
		if _, err := b.jobs.QueueJob(ctx, jobapi.JobSpec{Pool: "bench", Name: name, Steps: []jobapi.Step{{Script: "true"}}}); err != nil {
			return nil, err
		}
		select {
		case d := <-b.delivers:
			if d.name != name {
				return nil, fmt.Errorf("delivered %s while waiting for %s", d.name, name)
			}
			lat = append(lat, d.at.Sub(t0))
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("job %s not delivered in 30 s", name)
		}
		select {
		case <-b.done:
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("job %s not completed in 30 s", name)
		}
	}
	return lat, nil
}

// burstRun queues -burst jobs at once and waits until all are completed.
func (b *bench) burstRun(ctx context.Context) ([]time.Duration, time.Duration, error) {
	var mu sync.Mutex
	queued := map[string]time.Time{}
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		errc <- parallel(b.opt.burst, b.opt.workers, func(i int) error {
			name := "burst-" + strconv.Itoa(i)
			mu.Lock()
			queued[name] = time.Now()
			mu.Unlock()
			_, err := b.jobs.QueueJob(ctx, jobapi.JobSpec{Pool: "bench", Name: name, Steps: []jobapi.Step{{Script: "true"}}})
			return err
		})
	}()
	var lat []time.Duration
	completed := 0
	timeout := time.After(5 * time.Minute)
	for completed < b.opt.burst {
		select {
		case d := <-b.delivers:
			mu.Lock()
			lat = append(lat, d.at.Sub(queued[d.name]))
			mu.Unlock()
		case <-b.done:
			completed++
		case err := <-errc:
			if err != nil {
				return nil, 0, err
			}
		case <-timeout:
			return nil, 0, fmt.Errorf("only %d of %d burst jobs completed in 5 minutes", completed, b.opt.burst)
		}
	}
	elapsed := time.Since(start)
	for len(lat) < b.opt.burst {
		d := <-b.delivers
		mu.Lock()
		lat = append(lat, d.at.Sub(queued[d.name]))
		mu.Unlock()
	}
	return lat, elapsed, nil
}

func pct(d []time.Duration, p int) string {
	if len(d) == 0 {
		return "-"
	}
	return percentile(d, p).Round(10 * time.Microsecond).String()
}

// percentile is the p-th percentile (nearest rank) of a non-empty sample.
func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

// deliveryTarget is issue 3's: with 10,000 sessions waiting, a newly queued
// job reaches its agent with p99 under 50 ms.
const deliveryTarget = 50 * time.Millisecond

// cpuTime is the CPU time (user + system, all threads) the process has
// used, from /proc/PID/stat; 0 if it cannot be read.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields 14 and 15, utime and stime, count after the command name,
	// which is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b)[i+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	// Clock ticks: USER_HZ is 100 on every Linux the bench runs on.
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// rss is the process's resident set in MiB, from /proc.
func rss(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
