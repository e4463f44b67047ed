package controllers

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

const (
	// queueWatchWait is how long one long poll of the queue watch waits.
	queueWatchWait = 30 * time.Second
	// queueWatchRetryMax caps the wait between failed watch calls.
	queueWatchRetryMax = 30 * time.Second
	// queueWatchEvery is the least time between the starts of two watch
	// calls. A change that ends a waiting long poll is seen at once; in a
	// burst, whose queue changes every few milliseconds, the changes of up
	// to this long come in one answer, rather than one full answer (read,
	// sent and decoded) and one pool reconcile per change.
	queueWatchEvery = 20 * time.Millisecond
)

// queueWatchers runs one goroutine per AgentPool that long-polls its
// server's queue watch and wakes the pool's reconciler the moment the queue
// changes. It is a manager Runnable: the goroutines end with the manager.
type queueWatchers struct {
	events chan event.GenericEvent
	// jobs, when not nil, is told each new queue before the pool is woken.
	jobs *agentJobs

	mu      sync.Mutex
	ctx     context.Context // nil until Start
	started chan struct{}   // closed once Start has set ctx
	watches map[types.NamespacedName]*queueWatch
	wg      sync.WaitGroup
}

// queueWatch is one pool's watch.
type queueWatch struct {
	config string // what the watch was started with; a change restarts it
	cancel context.CancelFunc

	mu sync.Mutex
	// state is the last queue the watch returned, nil before the first.
	state *jobapi.QueueState
	// healthy is true while the last watch call succeeded.
	healthy bool
	// unsupported is true when the server has no watch (404).
	unsupported bool
}

func newQueueWatchers() *queueWatchers {
	return &queueWatchers{
		events:  make(chan event.GenericEvent, 1024),
		watches: map[types.NamespacedName]*queueWatch{},
		started: make(chan struct{}),
	}
}

// Start implements manager.Runnable.
func (w *queueWatchers) Start(ctx context.Context) error {
	w.mu.Lock()
	w.ctx = ctx
	w.mu.Unlock()
	close(w.started)
	<-ctx.Done()
	w.mu.Lock()
	for k, qw := range w.watches {
		qw.cancel()
		delete(w.watches, k)
	}
	w.mu.Unlock()
	w.wg.Wait()
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: only the
// leader reconciles, so only it needs to watch.
func (w *queueWatchers) NeedLeaderElection() bool { return true }

// Queue returns the pool's queue as the watch last saw it, and whether that
// is current: the watch runs and its last call succeeded. It starts (or
// restarts, when the server, token or pool id changed) the pool's watch.
// When it returns false, the caller reads the queue itself; unsupported
// tells it the server has no watch, so polling is the way.
func (w *queueWatchers) Queue(pool *agentryv1.AgentPool, server Server, token string, poolID int) (requests []pipelines.TaskAgentJobRequest, current, unsupported bool) {
	key := types.NamespacedName{Namespace: pool.Namespace, Name: pool.Name}
	config := fmt.Sprintf("%x", sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%d", pool.Spec.Server.URL, pool.Spec.Server.AuthType, token, poolID)))

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil || w.ctx.Err() != nil {
		return nil, false, false
	}
	qw := w.watches[key]
	if qw != nil && qw.config != config {
		qw.cancel()
		qw = nil
	}
	if qw == nil {
		ctx, cancel := context.WithCancel(w.ctx)
		qw = &queueWatch{config: config, cancel: cancel}
		w.watches[key] = qw
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.run(log.IntoContext(ctx, log.FromContext(w.ctx).WithValues("agentPool", key)), key, qw, server, poolID)
		}()
	}
	qw.mu.Lock()
	defer qw.mu.Unlock()
	if qw.healthy && qw.state != nil {
		return qw.state.JobRequests, true, false
	}
	return nil, false, qw.unsupported
}

// Stop ends the pool's watch, if any.
func (w *queueWatchers) Stop(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if qw := w.watches[key]; qw != nil {
		qw.cancel()
		delete(w.watches, key)
	}
}

// run long-polls until ctx ends or the server turns out to have no watch.
func (w *queueWatchers) run(ctx context.Context, key types.NamespacedName, qw *queueWatch, server Server, poolID int) {
	logger := log.FromContext(ctx)
	var after int64
	retry := time.Second
	var last time.Time
	for ctx.Err() == nil {
		if wait := queueWatchEvery - time.Since(last); wait > 0 && sleep(ctx, wait) != nil {
			return
		}
		last = time.Now()
		state, err := server.WatchQueue(ctx, poolID, after, queueWatchWait)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			qw.mu.Lock()
			qw.healthy = false
			qw.unsupported = pipelines.StatusCode(err) == http.StatusNotFound && !pipelines.IsTypeKey(err, pipelines.TypeKeyPoolNotFound)
			qw.mu.Unlock()
			w.notify(key) // the reconciler falls back to reading the queue
			if qw.unsupported {
				logger.Info("The server has no queue watch; the pool's queue is polled")
				// The watch stays registered (so it is not restarted on
				// every reconcile) but no longer runs.
				return
			}
			logger.Info("Watching the queue failed; retrying", "error", err.Error(), "retryIn", retry)
			if sleep(ctx, retry) != nil {
				return
			}
			retry = min(2*retry, queueWatchRetryMax)
			continue
		}
		retry = time.Second
		qw.mu.Lock()
		changed := !qw.healthy || qw.state == nil || state.Revision != qw.state.Revision
		qw.state, qw.healthy = state, true
		qw.mu.Unlock()
		after = state.Revision
		if changed {
			if w.jobs != nil {
				w.jobs.observe(ctx, key, state.JobRequests)
			}
			w.notify(key)
		}
	}
}

func (w *queueWatchers) notify(key types.NamespacedName) { wakePool(w.events, key) }

// wakePool asks for a reconcile of the pool on ch without waiting: when ch
// is full, the pool is already due for a reconcile, which reads the newest
// state.
func wakePool(ch chan<- event.GenericEvent, pool types.NamespacedName) {
	ev := event.GenericEvent{Object: &agentryv1.AgentPool{}}
	ev.Object.SetNamespace(pool.Namespace)
	ev.Object.SetName(pool.Name)
	select {
	case ch <- ev:
	default:
	}
}
