package server

import (
	"context"
	"sync"
)

// queueAnswers keeps, per pool, the queue watch's latest answer, encoded,
// with the revision it is for. A change wakes every watcher of the pool at
// once, and a scaler reads the queue again (after=0) right after: all of
// them share one read of the store and one encoding per revision, where
// each made its own.
//
// An answer for revision R is read after R was observed. Each write bumps
// the revision after it is committed, so the answer holds every change up
// to R, and maybe later ones (those bump past R, and wake the watchers
// again). Whoever observes R later gets what reading the store itself would
// have promised: nothing up to R missing. (A renewal moves a job's
// lockedUntil without a new revision, as before; an answer shows the
// lockedUntil of its revision's read until the queue changes again.)
type queueAnswers struct {
	mu    sync.Mutex
	pools map[int]*queueAnswer
}

// queueAnswer is one pool's answer for a revision, or the read of it under
// way: ready is closed once body or err is set.
type queueAnswer struct {
	rev   int64
	ready chan struct{}
	body  []byte
	err   error
}

func newQueueAnswers() *queueAnswers { return &queueAnswers{pools: map[int]*queueAnswer{}} }

// get returns the pool's answer for rev: the cached one, or the one another
// caller is reading, or else what read returns, which is then cached
// (unless an answer for a newer revision was cached meanwhile). read runs
// with a context of its own, so that the caller going away does not fail
// the others waiting for the same answer.
func (c *queueAnswers) get(ctx context.Context, poolID int, rev int64, read func(context.Context) ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	a := c.pools[poolID]
	if a != nil && a.rev == rev {
		c.mu.Unlock()
		select {
		case <-a.ready:
			return a.body, a.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	a = &queueAnswer{rev: rev, ready: make(chan struct{})}
	if cur := c.pools[poolID]; cur == nil || cur.rev < rev {
		c.pools[poolID] = a
	}
	c.mu.Unlock()

	a.body, a.err = read(context.WithoutCancel(ctx))
	if a.err != nil {
		// Not cached: the next caller reads again.
		c.mu.Lock()
		if c.pools[poolID] == a {
			delete(c.pools, poolID)
		}
		c.mu.Unlock()
	}
	close(a.ready)
	return a.body, a.err
}
