package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// Defaults of Config.
const (
	DefaultLongPoll              = 50 * time.Second
	DefaultListenerTokenLifetime = time.Hour
	DefaultJobLock               = 10 * time.Minute
	DefaultSessionIdleTimeout    = 3 * time.Minute
	DefaultLockGrace             = 5 * time.Minute
	DefaultCancelTimeout         = 5 * time.Minute
	DefaultSweepInterval         = 15 * time.Second
)

// TokenPath is the token endpoint; its absolute URL is every agent's
// authorizationUrl.
const TokenPath = "/_apis/oauth2/token"

// Config configures a Server. Only AdminToken is required.
type Config struct {
	// AdminToken is the pool-admin credential (Basic with any user, or Bearer).
	AdminToken string
	// PublicURL is the base URL agents are told to use (authorizationUrl,
	// the SystemVssConnection endpoint). Empty: derived from each request's
	// scheme and Host.
	PublicURL string
	// Store holds the state; nil means a fresh store.NewMemory().
	Store store.Store
	// Log receives the server's logs; it never gets a token or a key.
	Log logr.Logger
	// LongPoll is how long GET …/messages waits for a message before it
	// answers 202 with no body.
	LongPoll time.Duration
	// ListenerTokenLifetime is how long a listener token is valid.
	ListenerTokenLifetime time.Duration
	// JobLock is how far a renewal moves a job request's lockedUntil.
	JobLock time.Duration
	// SessionIdleTimeout is how long an unused session blocks a new one
	// for the same agent (a crashed agent's session does not lock it out).
	SessionIdleTimeout time.Duration
	// LockGrace is how long past its lockedUntil an unrenewed job request
	// is kept before it counts as abandoned (agents give up at the same
	// point).
	LockGrace time.Duration
	// CancelTimeout is how long an agent has to stop a job after it was
	// asked to (a cancel, a job timeout) before the job counts as abandoned;
	// it is also the timeout sent in the JobCancellation message.
	CancelTimeout time.Duration
	// SweepInterval is how often Run sweeps jobs for expired locks,
	// vanished agents and timeouts (see Sweep).
	SweepInterval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is agentry-server's HTTP API. It is an http.Handler; Run serves
// it on a listener.
type Server struct {
	cfg            Config
	store          store.Store
	log            logr.Logger
	adminTokenHash [32]byte
	mux            *http.ServeMux
	// queues is each pool's queue revision (the queue watch); jobs wakes
	// the followers of a job's log.
	queues *changeFeed
	jobs   *changeFeed
	// queueAnswers caches each pool's queue watch answer by revision.
	queueAnswers *queueAnswers
	polls        *idlePolls
	claims       *jobClaims
	assertions   *replayCache

	closeOnce sync.Once
	closing   chan struct{}

	// onLongPollWait, when set (by tests), is called each time a long-poll
	// of the agent starts waiting for a change.
	onLongPollWait atomic.Pointer[func(agentID int)]
}

// New checks cfg, fills in its defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.AdminToken == "" {
		return nil, errors.New("an admin token is required")
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("public URL %q: want http(s)://host[:port][/path]", cfg.PublicURL)
		}
		cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	}
	if cfg.Store == nil {
		cfg.Store = store.NewMemory()
	}
	if cfg.Log.GetSink() == nil {
		cfg.Log = logr.Discard()
	}
	for _, d := range []struct {
		field    *time.Duration
		fallback time.Duration
	}{
		{&cfg.LongPoll, DefaultLongPoll},
		{&cfg.ListenerTokenLifetime, DefaultListenerTokenLifetime},
		{&cfg.JobLock, DefaultJobLock},
		{&cfg.SessionIdleTimeout, DefaultSessionIdleTimeout},
		{&cfg.LockGrace, DefaultLockGrace},
		{&cfg.CancelTimeout, DefaultCancelTimeout},
		{&cfg.SweepInterval, DefaultSweepInterval},
	} {
		if *d.field <= 0 {
			*d.field = d.fallback
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:            cfg,
		store:          cfg.Store,
		log:            cfg.Log,
		adminTokenHash: sha256.Sum256([]byte(cfg.AdminToken)),
		mux:            http.NewServeMux(),
		// Revisions start at the boot time in microseconds, so they only
		// grow across restarts and a watcher's old "after" stays valid.
		queues:       newChangeFeed(time.Now().UnixMicro(), true),
		jobs:         newChangeFeed(0, false),
		queueAnswers: newQueueAnswers(),
		polls:        newIdlePolls(),
		claims:       newJobClaims(),
		assertions:   newReplayCache(),
		closing:      make(chan struct{}),
	}
	s.routes()
	return s, nil
}

func (s *Server) now() time.Time { return s.cfg.Now().UTC() }

// publicURL is the base URL agents are told to use.
func (s *Server) publicURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if host == "" {
		host = "localhost"
	}
	return scheme + "://" + host
}

const (
	dt        = "/_apis/distributedtask"
	pool      = dt + "/pools/{poolId}"
	plan      = "/{scope}" + dt + "/hubs/{hub}/plans/{planId}"
	jobsRoute = jobapi.JobsPath
	// queueRoute is jobapi.QueuePath as a pattern.
	queueRoute = "/_apis/agentry/pools/{poolId}/queue"
)

func (s *Server) routes() {
	m := s.mux
	// Pool administration and the job API: admin token.
	m.Handle("GET "+dt+"/pools", s.admin(s.listPools))
	m.Handle("POST "+dt+"/pools", s.admin(s.createPool))
	m.Handle("GET "+pool, s.admin(s.getPool))
	m.Handle("GET "+pool+"/agents", s.admin(s.listAgents))
	m.Handle("POST "+pool+"/agents", s.admin(s.addAgent))
	m.Handle("GET "+pool+"/agents/{agentId}", s.admin(s.getAgent))
	m.Handle("PUT "+pool+"/agents/{agentId}", s.admin(s.replaceAgent))
	m.Handle("DELETE "+pool+"/agents/{agentId}", s.admin(s.deleteAgent))
	m.Handle("GET "+pool+"/jobrequests", s.admin(s.listJobRequests))
	m.Handle("POST "+jobsRoute, s.admin(s.queueJob))
	m.Handle("GET "+jobsRoute, s.admin(s.listJobs))
	m.Handle("GET "+jobsRoute+"/{id}", s.admin(s.getJob))
	m.Handle("GET "+jobsRoute+"/{id}/log", s.admin(s.getJobLog))
	m.Handle("POST "+jobsRoute+"/{id}/cancel", s.admin(s.cancelJob))
	m.Handle("GET "+queueRoute, s.admin(s.watchQueue))
	m.Handle("PATCH "+pool+"/agents/{agentId}", s.admin(s.updateAgent))
	m.Handle("POST "+tokensRoute, s.admin(s.createAdminToken))
	m.Handle("GET "+tokensRoute, s.admin(s.listAdminTokens))
	m.Handle("DELETE "+tokensRoute+"/{ref}", s.admin(s.revokeAdminToken))

	// Route discovery: no credential, nothing secret in the answers.
	m.Handle("OPTIONS /_apis", s.handle(s.listLocations))
	m.Handle("OPTIONS /_apis/", s.handle(s.listLocations))
	m.Handle("GET /_apis/ResourceAreas", s.handle(s.listResourceAreas))
	m.Handle("GET /_apis/ResourceAreas/{areaId}", s.handle(s.getResourceArea))
	m.Handle("GET /_apis/connectionData", s.handle(s.connectionData))

	// The token endpoint: a client assertion in the body.
	m.Handle("POST "+TokenPath, s.handle(s.issueListenerToken))

	// The listener: listener token.
	m.Handle("POST "+pool+"/sessions", s.listener(s.createSession))
	m.Handle("DELETE "+pool+"/sessions/{sessionId}", s.listener(s.deleteSession))
	m.Handle("GET "+pool+"/messages", s.listener(s.getMessage))
	m.Handle("DELETE "+pool+"/messages/{messageId}", s.listener(s.deleteMessage))
	m.Handle("PATCH "+pool+"/jobrequests/{requestId}", s.listener(s.updateJobRequest))

	// Reporting: job token.
	m.Handle("PATCH "+plan+"/timelines/{timelineId}/records", s.planRoute(s.updateTimelineRecords))
	m.Handle("POST "+plan+"/timelines/{timelineId}/records/{recordId}/feed", s.planRoute(s.appendFeed))
	m.Handle("POST "+plan+"/logs", s.planRoute(s.createLog))
	m.Handle("POST "+plan+"/logs/{logId}", s.planRoute(s.appendLog))
	m.Handle("POST "+plan+"/events", s.planRoute(s.raisePlanEvent))

	m.Handle("/", s.handle(func(_ http.ResponseWriter, r *http.Request) error {
		return errorf(http.StatusNotFound, typeKeyNotFound, "no route for %s %s", r.Method, r.URL.Path)
	}))
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	if v, ok := apiVersion(r); !ok {
		writeError(rec, errorf(http.StatusBadRequest, typeKeyInvalidAPIVersion,
			"api-version %q is not a version such as 7.1 or 7.1-preview.1", truncate(v, 32)))
	} else {
		s.mux.ServeHTTP(rec, r)
	}
	// The path names objects, never credentials; the query is left out.
	s.log.V(1).Info("Served a request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
		"duration", time.Since(start).Round(time.Microsecond).String())
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Run serves the API on ln until ctx is done, then answers the waiting
// long-polls, lets in-flight calls finish (up to 10 s) and returns.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logr.ToSlogHandler(s.log), slog.LevelError),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	sweepCtx, stopSweeping := context.WithCancel(ctx)
	sweeping := make(chan struct{})
	go func() {
		defer close(sweeping)
		s.sweepEvery(sweepCtx, s.cfg.SweepInterval)
	}()
	defer func() {
		stopSweeping()
		<-sweeping
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.Close()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := hs.Shutdown(shutdownCtx)
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = serveErr
	}
	return err
}

// Close makes every waiting long-poll answer at once with no message, so a
// shutdown does not wait for them. It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
}

// ---- handler plumbing ----

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle turns a handler's error into its answer.
func (s *Server) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				s.log.Error(err, "Failed to serve a request", "method", r.Method, "path", r.URL.Path)
				ae = errorf(http.StatusInternalServerError, "VssServiceException", "internal server error")
			}
			writeError(w, ae)
		}
	})
}

func (s *Server) admin(h handlerFunc) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if !s.checkAdmin(r) {
			return unauthorized(pipelines.TypeKeyUnauthorized, "this call needs the admin token (HTTP Basic with an empty user, or Bearer)")
		}
		return h(w, r)
	})
}

// listener authenticates the agent and checks it is in the pool of the path.
func (s *Server) listener(h func(w http.ResponseWriter, r *http.Request, a store.Agent) error) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		a, err := s.listenerAgent(r.Context(), r)
		if err != nil {
			return err
		}
		poolID, err := parseID("poolId", r.PathValue("poolId"), 32)
		if err != nil {
			return err
		}
		if int(poolID) != a.PoolID {
			return errorf(http.StatusNotFound, pipelines.TypeKeyAgentNotFound, "agent %d is not in pool %d", a.ID, poolID)
		}
		return h(w, r, a)
	})
}

// planRoute authenticates a job token and checks it is for the plan and
// project of the path.
func (s *Server) planRoute(h func(w http.ResponseWriter, r *http.Request, j store.Job) error) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		j, err := s.tokenJob(r.Context(), r)
		if err != nil {
			return err
		}
		if !strings.EqualFold(r.PathValue("scope"), ProjectID) || !strings.EqualFold(r.PathValue("planId"), j.PlanID) {
			return errorf(http.StatusForbidden, pipelines.TypeKeyAccessDenied, "this job token is not valid for plan %s", truncate(r.PathValue("planId"), 64))
		}
		return h(w, r, j)
	})
}

// ---- change notification ----

// changeFeed keeps a revision per key and wakes whoever waits on a key when
// it changes. Pools keep their revision for the queue watch (keep); jobs only
// wake log followers, so their entries go away once nobody waits.
type changeFeed struct {
	mu   sync.Mutex
	base int64
	keep bool
	keys map[int64]*feedEntry
}

type feedEntry struct {
	rev int64
	ch  chan struct{}
}

// newChangeFeed starts every key at revision base.
func newChangeFeed(base int64, keep bool) *changeFeed {
	return &changeFeed{base: base, keep: keep, keys: map[int64]*feedEntry{}}
}

// watch returns the key's revision and a channel closed at its next change.
// A caller takes the channel before it reads the state, so no change is missed.
func (f *changeFeed) watch(key int64) (int64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.keys[key]
	if !ok {
		e = &feedEntry{rev: f.base, ch: make(chan struct{})}
		f.keys[key] = e
	}
	return e.rev, e.ch
}

// bump moves the key to its next revision and wakes its watchers.
func (f *changeFeed) bump(key int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bumpLocked(key)
}

// bumpAll moves every key that has a revision to its next one, as bump does.
func (f *changeFeed) bumpAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.keys {
		f.bumpLocked(k)
	}
}

func (f *changeFeed) bumpLocked(key int64) {
	e, ok := f.keys[key]
	switch {
	case !ok && !f.keep:
		return
	case !ok:
		e = &feedEntry{rev: f.base}
		f.keys[key] = e
	default:
		close(e.ch)
	}
	e.rev++
	e.ch = make(chan struct{})
	if !f.keep {
		delete(f.keys, key)
	}
}

// replayCache remembers the ids of client assertions already used, until
// they expire, so a captured assertion cannot be traded twice.
type replayCache struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func newReplayCache() *replayCache { return &replayCache{seen: map[string]time.Time{}} }

// use records key and reports whether it was new.
func (c *replayCache) use(key string, expires, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, exp := range c.seen {
		if exp.Before(now.Add(-5 * time.Minute)) {
			delete(c.seen, k)
		}
	}
	if _, ok := c.seen[key]; ok {
		return false
	}
	c.seen[key] = expires
	return true
}
