package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/uuid"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// Why a job stopped before its steps were done (the cause of its context).
var (
	errCanceledByServer = errors.New("the server canceled the job")
	errAgentStopping    = errors.New("the agent was asked to stop")
	errJobGone          = errors.New("the server no longer has the job request")
	errLockLost         = errors.New("the job-request lock could not be renewed in time")
	errJobTimeout       = errors.New("job time-out")
	errStepTimeout      = errors.New("step timed out")
	errCancelTimeout    = errors.New("the steps that run after a cancellation ran out of time")
	errStopTimeout      = errors.New("the agent ran out of time to report before it must exit")
)

// hardStop reports whether a stop leaves no room for the steps that run
// after a cancellation (always(), canceled()): the pod is going away, or the
// server no longer counts on this agent.
func hardStop(cause error) bool {
	return errors.Is(cause, errAgentStopping) || errors.Is(cause, errLockLost) || errors.Is(cause, errJobGone)
}

// stopResult is the job's result when it was stopped early, or "": soft
// ends on any stop, hard only on a hard one.
func stopResult(soft, hard context.Context) pipelines.TaskResult {
	switch cause := context.Cause(hard); {
	case errors.Is(cause, errLockLost), errors.Is(cause, errJobGone):
		return pipelines.ResultAbandoned
	}
	if soft.Err() != nil {
		return pipelines.ResultCanceled
	}
	return ""
}

// Variables that steer how the job runs.
const (
	// varJobTimeout is the job's time-out in minutes (decimals allowed); the
	// agent cancels the job when it runs longer. Azure DevOps enforces the
	// time-out on the server and does not send it; agentry-server sends it.
	varJobTimeout = "system.jobTimeout"
	// defaultCancelTimeout is how long always() and canceled() steps may run
	// after a cancellation that did not say (Azure's default
	// cancelTimeoutInMinutes).
	defaultCancelTimeout = 5 * time.Minute
)

// jobTimeout reads system.jobTimeout; zero means none.
func jobTimeout(vars map[string]pipelines.VariableValue) (time.Duration, error) {
	v, ok := lookupVar(vars, varJobTimeout)
	if !ok || strings.TrimSpace(v.Value) == "" {
		return 0, nil
	}
	m, err := strconv.ParseFloat(strings.TrimSpace(v.Value), 64)
	if err != nil || m < 0 || m > 1e6 {
		return 0, fmt.Errorf("%s is %q, not a number of minutes", varJobTimeout, v.Value)
	}
	return time.Duration(m * float64(time.Minute)), nil
}

// ParseTimeSpan reads a .NET TimeSpan as Azure sends it, "[d.]hh:mm:ss[.fffffff]".
func ParseTimeSpan(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	bad := fmt.Errorf("%q is not a time span", s)
	days := 0
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, bad
	}
	if d, h, ok := strings.Cut(parts[0], "."); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, bad
		}
		days, parts[0] = n, h
	}
	h, err1 := strconv.Atoi(parts[0])
	m, err2 := strconv.Atoi(parts[1])
	sec, err3 := strconv.ParseFloat(parts[2], 64)
	if err1 != nil || err2 != nil || err3 != nil || h < 0 || m < 0 || sec < 0 || days > 36500 {
		return 0, bad
	}
	return time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute +
		time.Duration(sec*float64(time.Second)), nil
}

// afterOn calls f once d has passed on clock, unless ctx ends first.
func afterOn(ctx context.Context, clock Clock, d time.Duration, f func()) {
	go func() {
		select {
		case <-ctx.Done():
		case <-clock.After(d):
			f()
		}
	}()
}

// withClockTimeout is context.WithTimeoutCause on the agent's clock.
func withClockTimeout(parent context.Context, clock Clock, d time.Duration, cause error) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	afterOn(ctx, clock, d, func() { cancel(cause) })
	return ctx, func() { cancel(nil) }
}

// Budgets for reporting calls: the live view gives up quickly, records and
// logs retry a while, the final result retries for Config.RetryTimeout.
const (
	feedCallTimeout = 30 * time.Second
	recordBudget    = time.Minute
	logChunk        = 4 << 20
)

// logTime is the timestamp before each line of an uploaded log, as in
// Microsoft's agent.
const logTime = "2006-01-02T15:04:05.0000000Z07:00"

// workDirs are the folders of a job under the work folder.
type workDirs struct {
	work, temp, sources, diag string
}

func makeWorkDirs(work string) (workDirs, error) {
	d := workDirs{work: work, temp: filepath.Join(work, "_temp"), sources: filepath.Join(work, "s"), diag: filepath.Join(work, "_diag")}
	for _, p := range []string{d.temp, d.sources, d.diag} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return workDirs{}, err
		}
	}
	if err := os.Chmod(d.diag, 0o700); err != nil {
		return workDirs{}, err
	}
	return d, nil
}

// jobRunner runs one job and reports it with the job token.
type jobRunner struct {
	cfg      Config
	log      logr.Logger
	l        *listener
	job      *pipelines.AgentJobRequestMessage
	reporter *pipelines.Client // job token
	mask     *Masker
	vars     map[string]pipelines.VariableValue
	env      []string
	dirs     workDirs
	// reportCtx outlives cancellation of the job: a canceled job is still
	// reported. It ends StopTimeout after the agent is told to stop.
	reportCtx context.Context

	// soft ends on every stop; hard only on a hard one (see hardStop).
	softStop, hardStopFn context.CancelCauseFunc
	// cancelTimeout is the time after a cancellation that always() and
	// canceled() steps get, in nanoseconds (set from JobCancellation).
	cancelTimeout atomic.Int64

	feedWarned atomic.Bool
	// timeline holds record updates for sendTimeline.
	timeline *timelineUpdates
}

// stop stops the job for cause.
func (jr *jobRunner) stop(cause error) {
	jr.softStop(cause)
	if hardStop(cause) {
		jr.hardStopFn(cause)
	}
}

// runJob renews the job's lock, runs its steps and reports its result. It
// returns an error only when the job could not start (the first renewal
// failed) or its result could not be reported.
func runJob(ctx context.Context, cfg Config, l *listener, job *pipelines.AgentJobRequestMessage, dirs workDirs) (pipelines.TaskResult, error) {
	log := cfg.Log.WithValues("jobId", job.JobID, "requestId", job.RequestID)
	tokenURL, token, _ := job.JobToken()
	reportCtx, endReports := context.WithCancelCause(context.WithoutCancel(ctx))
	defer endReports(nil)
	jr := &jobRunner{cfg: cfg, log: log, l: l, job: job, dirs: dirs, reportCtx: reportCtx, timeline: newTimelineUpdates()}
	jr.cancelTimeout.Store(int64(defaultCancelTimeout))
	jr.reporter = pipelines.NewClient(tokenURL, pipelines.BearerToken(token), cfg.HTTPClient)
	jr.reporter.UserAgent = l.client.UserAgent
	jr.vars = jobVariables(job, l.files.Settings, cfg.Version, dirs)
	var bad []int
	jr.mask, bad = NewMasker(append(secretValues(jr.vars), token), job.Mask, jr.vars)
	if len(bad) > 0 {
		log.Info("Ignoring mask hints that are not usable patterns", "hintIndexes", bad)
	}
	jr.env = StepEnv(os.Environ(), jr.vars, token)

	log.Info("Renewing the job-request lock before the first step")
	lock, err := l.renew(ctx, cfg.RetryTimeout, job.RequestID)
	if err != nil {
		return "", err
	}

	soft, softStop := context.WithCancelCause(context.WithoutCancel(ctx))
	defer softStop(nil)
	hard, hardStopFn := context.WithCancelCause(context.WithoutCancel(ctx))
	defer hardStopFn(nil)
	jr.softStop, jr.hardStopFn = softStop, hardStopFn
	// Told to stop (SIGTERM), the agent cancels the job at once and leaves
	// StopTimeout for reporting it, so it exits before the pod is killed.
	defer context.AfterFunc(ctx, func() {
		jr.stop(errAgentStopping)
		afterOn(reportCtx, cfg.Clock, cfg.StopTimeout, func() { endReports(errStopTimeout) })
	})()

	watchCtx, stopWatching := context.WithCancel(context.WithoutCancel(ctx))
	var watchers sync.WaitGroup
	watchers.Go(func() { jr.keepLock(watchCtx, lockedUntil(lock, cfg.Clock.Now()), jr.stop) })
	watchers.Go(func() { jr.watchForCancel(watchCtx) })
	defer func() {
		stopWatching()
		watchers.Wait()
	}()
	if d, err := jobTimeout(jr.vars); err != nil {
		log.Info("Ignoring the job time-out", "reason", err.Error())
	} else if d > 0 {
		afterOn(watchCtx, cfg.Clock, d, func() {
			jr.stop(fmt.Errorf("%w: the job ran longer than its maximum time of %s", errJobTimeout, d))
		})
	}

	timelineDone, timelineSent := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(timelineSent)
		jr.sendTimeline(timelineDone)
	}()
	result := jr.run(soft, hard)
	// The records are complete on the server before the result is.
	close(timelineDone)
	<-timelineSent
	if cause := context.Cause(soft); cause != nil {
		log.Info("The job stopped early", "reason", cause.Error())
	}
	log.Info("Reporting the job result", "result", result)
	err = jr.complete(result)
	if err != nil && result == pipelines.ResultAbandoned {
		// The server gave the job up already; there is nothing to hand back.
		log.Error(err, "Could not report the abandoned job")
		return result, nil
	}
	return result, err
}

// jobVariables are the job's variables plus the ones the agent defines
// about itself and its folders (which win).
func jobVariables(job *pipelines.AgentJobRequestMessage, s pipelines.AgentSettings, version string, d workDirs) map[string]pipelines.VariableValue {
	vars := maps.Clone(job.Variables)
	if vars == nil {
		vars = map[string]pipelines.VariableValue{}
	}
	set := func(name, value string) {
		for n := range vars {
			if strings.EqualFold(n, name) {
				delete(vars, n)
			}
		}
		vars[name] = pipelines.VariableValue{Value: value, IsReadOnly: true}
	}
	collection, _, _ := job.JobToken()
	for name, value := range map[string]string{
		"agent.name":                         s.AgentName,
		"agent.id":                           strconv.Itoa(s.AgentID),
		"agent.os":                           osName(),
		"agent.osArchitecture":               osArchitecture(),
		"agent.version":                      version,
		"agent.workFolder":                   d.work,
		"agent.buildDirectory":               d.work,
		"agent.tempDirectory":                d.temp,
		"agent.jobName":                      job.JobDisplayName,
		"build.sourcesDirectory":             d.sources,
		"system.defaultWorkingDirectory":     d.sources,
		"system.jobId":                       job.JobID,
		"system.jobDisplayName":              job.JobDisplayName,
		"system.planId":                      job.Plan.PlanID,
		"system.timelineId":                  job.Timeline.ID,
		"system.teamFoundationCollectionUri": collection,
		"TF_BUILD":                           "True",
	} {
		set(name, value)
	}
	return vars
}

func lockedUntil(req *pipelines.TaskAgentJobRequest, now time.Time) time.Time {
	if req != nil && req.LockedUntil != nil {
		return *req.LockedUntil
	}
	return now.Add(10 * time.Minute)
}

// keepLock renews the job-request lock every RenewInterval. When renewals
// keep failing until 5 minutes past the lock's end, or the server no longer
// has the request, the job is stopped.
func (jr *jobRunner) keepLock(ctx context.Context, until time.Time, stop context.CancelCauseFunc) {
	clock := jr.cfg.Clock
	wait := jr.cfg.RenewInterval
	for failures := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-clock.After(wait):
		}
		req, err := jr.l.renew(ctx, 0, jr.job.RequestID)
		switch {
		case err == nil:
			failures, wait = 0, jr.cfg.RenewInterval
			until = lockedUntil(req, clock.Now())
		case ctx.Err() != nil:
			return
		case pipelines.StatusCode(err) == http.StatusNotFound, errors.Is(err, ErrDeregistered),
			pipelines.IsTypeKey(err, pipelines.TypeKeyJobRequestNotFound), pipelines.IsTypeKey(err, pipelines.TypeKeyJobNotFound):
			jr.log.Error(err, "Stopping the job: the server no longer has its request")
			stop(errJobGone)
			return
		case clock.Now().After(until.Add(5 * time.Minute)):
			jr.log.Error(err, "Stopping the job: the lock expired and could not be renewed")
			stop(errLockLost)
			return
		default:
			jr.log.Error(err, "Could not renew the job-request lock; retrying")
			wait = Backoff(failures, rand.Float64())
			failures++
		}
	}
}

// watchForCancel keeps polling the queue while the job runs and stops the
// job when a cancellation for it arrives.
func (jr *jobRunner) watchForCancel(ctx context.Context) {
	for ctx.Err() == nil {
		msg, err := jr.l.nextMessage(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			jr.log.Error(err, "Stopped listening for a cancellation")
			return
		case msg == nil:
			continue
		}
		switch {
		case strings.EqualFold(msg.MessageType, pipelines.MessageTypeJobCancellation):
			jr.l.ack(ctx, msg)
			c, err := decodeCancel(msg, jr.l.currentSessionKey())
			if err != nil {
				// It can only be meant for the one job this agent runs.
				jr.log.Error(err, "Cancellation message is unreadable; canceling anyway")
			}
			if err != nil || c.JobID == "" || strings.EqualFold(c.JobID, jr.job.JobID) {
				if c != nil && c.Timeout != "" {
					if d, err := ParseTimeSpan(c.Timeout); err == nil {
						jr.cancelTimeout.Store(int64(d))
					}
				}
				jr.log.Info("Canceling the job: the server asked to")
				jr.stop(errCanceledByServer)
			}
		case strings.EqualFold(msg.MessageType, pipelines.MessageTypeJobRequest):
			// Not acknowledged, so the server can give it to another agent.
			jr.log.Info("Leaving a second job request alone: this agent runs one job", "messageId", msg.MessageID)
			select {
			case <-ctx.Done():
			case <-jr.cfg.Clock.After(30 * time.Second):
			}
		default:
			jr.l.ack(ctx, msg)
			jr.log.Info("Ignoring a message", "messageType", msg.MessageType)
		}
	}
}

// run runs the steps in order and returns the job's result. soft ends when
// the job is stopped: the running step is stopped, and afterwards only
// always() and canceled() steps run, within the cancel time-out; hard ends
// when not even those may run.
func (jr *jobRunner) run(soft, hard context.Context) pipelines.TaskResult {
	job := jr.job
	start := jr.now()
	name := job.JobDisplayName
	if name == "" {
		name = job.JobName
	}
	jobRec := pipelines.TimelineRecord{
		ID: job.JobID, Type: "Job", Name: name, RefName: job.JobName, WorkerName: jr.l.files.Settings.AgentName,
		State: ptr(pipelines.StateInProgress), StartTime: &start, Order: ptr(1),
	}
	records := make([]pipelines.TimelineRecord, len(job.Steps))
	for i, s := range job.Steps {
		id := s.ID
		if id == "" {
			id = uuid.NewString()
		}
		records[i] = pipelines.TimelineRecord{
			ID: id, ParentID: &job.JobID, Type: "Task", Name: jr.mask.Mask(stepName(s)), RefName: s.Name,
			Order: ptr(i + 1), State: ptr(pipelines.StatePending),
		}
	}
	jr.updateRecords(append([]pipelines.TimelineRecord{jobRec}, records...)...)

	failed := false
	var results []pipelines.TaskResult
	var afterCancel context.Context // where steps run once the job was canceled
	for i, s := range job.Steps {
		rec := &records[i]
		canceled := soft.Err() != nil
		run, condErr := ShouldRun(s.Condition, failed, canceled)
		stepCtx := soft
		if canceled {
			if afterCancel == nil {
				var cancel context.CancelFunc
				afterCancel, cancel = withClockTimeout(hard, jr.cfg.Clock, time.Duration(jr.cancelTimeout.Load()), errCancelTimeout)
				defer cancel()
			}
			stepCtx = afterCancel
		}
		var res pipelines.TaskResult
		switch {
		case stepCtx.Err() != nil, s.Enabled != nil && !*s.Enabled:
			res = jr.skip(rec)
		case condErr != nil:
			res = jr.runStep(stepCtx, s, rec, func(context.Context, pipelines.JobStep, *stepOutput) (pipelines.TaskResult, string) {
				return pipelines.ResultFailed, condErr.Error()
			})
		case !run:
			res = jr.skip(rec)
		default:
			res = jr.runStep(stepCtx, s, rec, jr.execute)
		}
		results = append(results, res)
		if res == pipelines.ResultFailed || res == pipelines.ResultCanceled {
			failed = true
		}
	}

	stop := stopResult(soft, hard)
	result := JobResult(results, stop)
	finish := jr.now()
	jobRec.State, jobRec.FinishTime, jobRec.Result = ptr(pipelines.StateCompleted), &finish, &result
	if stop != "" {
		why := context.Cause(soft)
		if result == pipelines.ResultAbandoned {
			why = context.Cause(hard)
		}
		jobRec.Issues = []pipelines.Issue{{Type: "error", Message: jr.mask.Mask(why.Error())}}
		jobRec.ErrorCount = ptr(1)
	}
	jr.updateRecords(jobRec)
	return result
}

func stepName(s pipelines.JobStep) string {
	switch {
	case s.DisplayName != "":
		return s.DisplayName
	case s.Name != "":
		return s.Name
	}
	return TaskLabel(s.Reference)
}

func (jr *jobRunner) skip(rec *pipelines.TimelineRecord) pipelines.TaskResult {
	res := pipelines.ResultSkipped
	rec.State, rec.Result = ptr(pipelines.StateCompleted), &res
	jr.updateRecords(*rec)
	return res
}

// stepBody does a step's work, writing to out; it returns the step's result
// and, when it did not succeed, a one-line reason.
type stepBody func(ctx context.Context, s pipelines.JobStep, out *stepOutput) (pipelines.TaskResult, string)

// runStep wraps a step's work in its timeline record, live feed and log.
func (jr *jobRunner) runStep(ctx context.Context, s pipelines.JobStep, rec *pipelines.TimelineRecord, body stepBody) pipelines.TaskResult {
	start := jr.now()
	rec.State, rec.StartTime = ptr(pipelines.StateInProgress), &start
	out := newStepOutput(jr.mask, jr.cfg.Clock, jr.dirs.diag)
	defer out.close()
	var taskLog *pipelines.TaskLog
	err := jr.report("creating a log", recordBudget, func(ctx context.Context) error {
		var err error
		taskLog, err = jr.reporter.CreateLog(ctx, jr.job.Plan, "logs/"+rec.ID)
		return err
	})
	if err == nil {
		rec.Log = &pipelines.TaskLogReference{ID: taskLog.ID}
	}
	jr.updateRecords(*rec)

	feedDone, feedStopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(feedStopped)
		jr.streamFeed(rec.ID, out.feed, feedDone)
	}()
	logDone, logStopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(logStopped)
		if rec.Log != nil {
			jr.streamLog(rec.Log.ID, out, logDone)
		}
	}()
	out.line("##[section]Starting: " + rec.Name)
	res, issue := body(ctx, s, out)
	if issue != "" {
		out.line("##[error]" + issue)
	}
	if res == pipelines.ResultFailed && s.ContinueOnError {
		res = pipelines.ResultSucceededWithIssues
	}
	out.line("##[section]Finishing: " + rec.Name)
	// One after the other: at the same time, the last feed call and the
	// last log upload would need a connection to the server besides the
	// ones the long poll and the agent's other calls hold.
	close(feedDone)
	<-feedStopped
	close(logDone)
	<-logStopped

	finish := jr.now()
	rec.State, rec.FinishTime, rec.Result = ptr(pipelines.StateCompleted), &finish, &res
	if issue != "" {
		rec.Issues = []pipelines.Issue{{Type: "error", Message: jr.mask.Mask(issue)}}
		rec.ErrorCount = ptr(1)
	}
	jr.updateRecords(*rec)
	return res
}

// execute runs a script step.
func (jr *jobRunner) execute(ctx context.Context, s pipelines.JobStep, out *stepOutput) (pipelines.TaskResult, string) {
	expand := func(in string) string { return ExpandMacros(in, jr.vars) }
	task, err := resolveTask(s.Reference, s.Inputs, expand, jr.dirs.sources)
	if err != nil {
		return pipelines.ResultFailed, err.Error()
	}
	dir := jr.dirs.sources
	if wd := strings.TrimSpace(ExpandMacros(input(s.Inputs, "workingDirectory"), jr.vars)); wd != "" {
		if !filepath.IsAbs(wd) {
			wd = filepath.Join(jr.dirs.sources, wd)
		}
		dir = wd
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return pipelines.ResultFailed, fmt.Sprintf("The working directory %s does not exist.", dir)
	}
	script, err := writeScript(jr.dirs.temp, task.script)
	if err != nil {
		return pipelines.ResultFailed, fmt.Sprintf("Could not write the script: %v", err)
	}
	defer os.Remove(script)

	stepCtx := ctx
	if s.TimeoutInMinutes > 0 {
		var cancel context.CancelFunc
		stepCtx, cancel = withClockTimeout(ctx, jr.cfg.Clock, time.Duration(s.TimeoutInMinutes)*time.Minute, errStepTimeout)
		defer cancel()
	}
	argv := append(task.argv[:len(task.argv):len(task.argv)], script)
	out.line("========================== Starting Command Output ===========================")
	out.line(strings.Join(argv, " "))
	var wroteStderr atomic.Bool
	proc := process{argv: argv, dir: dir, env: jr.env, grace: jr.cfg.CancelGrace, clock: jr.cfg.Clock, stdout: out.line}
	failOnStderr := isTrue(input(s.Inputs, "failOnStderr"))
	if failOnStderr {
		// Only then must stderr be told apart, at the cost of its lines'
		// order against stdout's; otherwise one pipe keeps them in order.
		proc.stderr = func(line string) { wroteStderr.Store(true); out.line(line) }
	}
	code, err := proc.run(stepCtx)
	switch {
	case err != nil:
		return pipelines.ResultFailed, fmt.Sprintf("Could not start %s: %v", task.name, err)
	case ctx.Err() != nil:
		return pipelines.ResultCanceled, "The step was canceled: " + context.Cause(ctx).Error() + "."
	case stepCtx.Err() != nil:
		return pipelines.ResultFailed, fmt.Sprintf("The step timed out after %d minutes.", s.TimeoutInMinutes)
	case code == -1:
		return pipelines.ResultFailed, task.name + " was killed by a signal."
	case code != 0:
		return pipelines.ResultFailed, fmt.Sprintf("%s exited with code '%d'.", task.name, code)
	case failOnStderr && wroteStderr.Load():
		return pipelines.ResultFailed, task.name + " wrote one or more lines to the standard error stream."
	}
	return pipelines.ResultSucceeded, ""
}

// input reads a task input; names are matched ignoring case.
func input(inputs map[string]string, name string) string {
	if v, ok := inputs[name]; ok {
		return v
	}
	for k, v := range inputs {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

func isTrue(s string) bool { return strings.EqualFold(strings.TrimSpace(s), "true") }

func writeScript(dir, script string) (string, error) {
	f, err := os.CreateTemp(dir, "*.sh")
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(script, "\n") {
		script += "\n"
	}
	_, err = f.WriteString(script)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// complete reports the job's result: a JobCompleted event for plans of
// version 8 and later, a job-request PATCH before that.
func (jr *jobRunner) complete(result pipelines.TaskResult) error {
	budget := jr.cfg.RetryTimeout
	if result == pipelines.ResultAbandoned {
		// The server stopped answering long ago, or no longer has the job.
		budget = min(budget, 30*time.Second)
	}
	if jr.job.Plan.Version >= pipelines.JobCompletedPlanVersion {
		ev := pipelines.JobEvent{Name: pipelines.JobCompletedEvent, JobID: jr.job.JobID, RequestID: jr.job.RequestID, Result: result}
		err := retryTransient(jr.reportCtx, jr.cfg.Clock, budget, func(ctx context.Context) error {
			return jr.reporter.RaisePlanEvent(ctx, jr.job.Plan, ev)
		})
		if err != nil {
			return fmt.Errorf("reporting the job result: %w", err)
		}
		return nil
	}
	return jr.l.finish(jr.reportCtx, jr.job.RequestID, result)
}

// report calls the server with the job token, retrying transient failures
// within budget. Failures are logged and returned; they do not fail the job.
func (jr *jobRunner) report(doing string, budget time.Duration, fn func(context.Context) error) error {
	err := retryTransient(jr.reportCtx, jr.cfg.Clock, budget, fn)
	if err != nil {
		jr.log.Error(err, "Could not report to the server", "doing", doing)
	}
	return err
}

// updateRecords queues record updates for sendTimeline. Each is the
// record's whole state so far (see timelineUpdates).
func (jr *jobRunner) updateRecords(recs ...pipelines.TimelineRecord) {
	jr.timeline.add(recs...)
}

// sendTimeline sends queued record updates: a FeedInterval after the first
// one of a batch, so that those of a short step go in one call, and what is
// left once done closes.
func (jr *jobRunner) sendTimeline(done <-chan struct{}) {
	send := func() {
		recs := jr.timeline.take()
		if len(recs) == 0 {
			return
		}
		_ = jr.report("updating the timeline", recordBudget, func(ctx context.Context) error {
			return jr.reporter.UpdateTimelineRecords(ctx, jr.job.Plan, jr.job.Timeline.ID, recs)
		})
	}
	for {
		select {
		case <-done:
			send()
			return
		case <-jr.timeline.added:
		}
		select {
		case <-done:
		case <-jr.cfg.Clock.After(jr.cfg.FeedInterval):
		}
		send()
	}
}

// streamLog uploads a step's log from its spool file in chunks of logChunk
// bytes (each POST appends; none is too large for a server to take): every
// whole chunk as soon as the step has written it, the rest once done closes.
// A long step's log so reaches the server while it runs, and the agent never
// holds more than the bufio buffer of it in memory.
func (jr *jobRunner) streamLog(logID int, out *stepOutput, done <-chan struct{}) {
	var sent int64
	for {
		final := false
		select {
		case <-done:
			final = true
		case <-out.grown:
		}
		content, size, err := out.content()
		if err != nil {
			jr.log.Error(err, "Could not read back a step's log")
			return
		}
		end := size
		if !final {
			end = sent + (size-sent)/logChunk*logChunk
		}
		for sent < end {
			n := min(logChunk, end-sent)
			chunk := io.NewSectionReader(content, sent, n)
			err := jr.report("uploading a log", recordBudget, func(ctx context.Context) error {
				if _, err := chunk.Seek(0, io.SeekStart); err != nil {
					return permanent(err)
				}
				return jr.reporter.UploadLog(ctx, jr.job.Plan, logID, chunk)
			})
			if err != nil {
				return
			}
			sent += n
		}
		if final {
			return
		}
	}
}

// streamFeed sends a step's new console lines every FeedInterval, and the
// rest when done closes. The live view is best effort: a failed batch is
// dropped (the uploaded log has every line).
func (jr *jobRunner) streamFeed(stepID string, buf *feedBuffer, done <-chan struct{}) {
	send := func() {
		first, lines := buf.take()
		for _, batch := range FeedBatches(stepID, first, lines) {
			ctx, cancel := context.WithTimeout(jr.reportCtx, feedCallTimeout)
			err := jr.reporter.AppendFeed(ctx, jr.job.Plan, jr.job.Timeline.ID, jr.job.JobID, batch)
			cancel()
			if err != nil {
				if !jr.feedWarned.Swap(true) {
					jr.log.Error(err, "Could not send live console lines; the uploaded log will have them")
				}
				return
			}
		}
	}
	for {
		select {
		case <-done:
			send()
			return
		case <-jr.cfg.Clock.After(jr.cfg.FeedInterval):
			send()
		}
	}
}

func (jr *jobRunner) now() time.Time { return jr.cfg.Clock.Now().UTC() }

func ptr[T any](v T) *T { return &v }

// stepOutput takes a step's console lines: each is masked, then kept for
// the live feed and appended to the step's full log in a private file.
type stepOutput struct {
	mask  *Masker
	clock Clock
	feed  *feedBuffer

	// grown is signaled each time another logChunk bytes were written.
	grown chan struct{}

	mu       sync.Mutex
	file     *os.File
	w        *bufio.Writer
	err      error
	buf      []byte // one log line being formatted
	written  int64
	signaled int64
}

func newStepOutput(mask *Masker, clock Clock, dir string) *stepOutput {
	o := &stepOutput{mask: mask, clock: clock, feed: newFeedBuffer(), grown: make(chan struct{}, 1)}
	o.file, o.err = os.CreateTemp(dir, "step-*.log")
	if o.err == nil {
		o.w = bufio.NewWriter(o.file)
	}
	return o
}

// line takes one or more lines of output. Bytes that are not UTF-8 become
// U+FFFD (one per invalid run), as the server, the feed's JSON and
// Microsoft's agent all treat output as UTF-8 text.
func (o *stepOutput) line(s string) {
	if !strings.Contains(s, "\n") {
		o.one(s)
		return
	}
	for _, l := range strings.Split(s, "\n") {
		o.one(l)
	}
}

func (o *stepOutput) one(l string) {
	l = o.mask.Mask(strings.ToValidUTF8(l, "\uFFFD"))
	o.feed.add(l)
	now := o.clock.Now().UTC()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return
	}
	o.buf = append(append(append(now.AppendFormat(o.buf[:0], logTime), ' '), l...), '\n')
	_, o.err = o.w.Write(o.buf)
	o.written += int64(len(o.buf))
	if o.written-o.signaled >= logChunk {
		o.signaled = o.written
		select {
		case o.grown <- struct{}{}:
		default:
		}
	}
}

// content returns the log written so far.
func (o *stepOutput) content() (io.ReaderAt, int64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = o.w.Flush()
	}
	if o.err != nil {
		return nil, 0, o.err
	}
	fi, err := o.file.Stat()
	if err != nil {
		return nil, 0, err
	}
	return o.file, fi.Size(), nil
}

func (o *stepOutput) close() {
	if o.file != nil {
		o.file.Close()
		os.Remove(o.file.Name())
	}
}
