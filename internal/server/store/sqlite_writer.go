package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// errClosed is what a write gets once the store is closed.
var errClosed = errors.New("sqlite store: closed")

// maxBatch is the most writes one transaction takes. It bounds how long the
// last write of a batch waits for the first ones; a few dozen small writes
// run in less time than the fsync they share.
const maxBatch = 64

// writeTx is what a write runs its statements on: the writer's connection,
// inside the batch's transaction and the write's own savepoint.
type writeTx struct{ *stmtCache }

// writeFunc is one write. Its ctx cannot be cancelled (see writer).
type writeFunc func(ctx context.Context, tx writeTx) error

type writeReq struct {
	ctx context.Context
	fn  writeFunc
	// alone runs fn by itself between batches, outside any transaction,
	// with the caller's ctx: VACUUM INTO cannot run in a transaction.
	alone bool
	done  chan error // buffered: the writer never waits for a caller
}

// writer runs every write of a store, one after another in the order they
// arrived, on the one write connection it holds: group commit. It takes all
// the writes waiting when it is free (up to maxBatch), runs them in one
// BEGIN IMMEDIATE transaction, each in its own savepoint, and commits once.
// A write whose function fails is rolled back to its savepoint and its
// caller gets the error; the others are answered after the COMMIT returned,
// with its error if it failed (then none of the batch is kept). So a write
// behaves as if it had its own transaction, and many writes share one fsync.
//
// The functions run with a context that cannot be cancelled: SQLite's
// interrupt, which modernc.org/sqlite uses for a cancelled context, can roll
// back the whole transaction and with it the other writes of the batch. A
// write whose caller's context is done before its turn is skipped.
type writer struct {
	conn  *sql.Conn
	stmts *stmtCache

	mu      sync.Mutex
	queue   []*writeReq
	closed  bool
	wake    chan struct{} // buffered 1: the queue has grown or closed is set
	stopped chan struct{} // closed when run returns

	// Seen by tests: commits counts COMMITs; onQueued, if set before the
	// first write, is called each time a write joins the queue.
	commits  atomic.Int64
	onQueued func()
}

// newWriter takes db's connection for the writer (db must allow only one)
// and starts it.
func newWriter(ctx context.Context, db *sql.DB) (*writer, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	w := &writer{conn: conn, stmts: newStmtCache(conn), wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go w.run()
	return w, nil
}

// do runs fn as one write and returns once it is committed, or with the
// error that kept it from being. A caller whose ctx ends while fn runs or
// commits returns ctx's error at once; its write may or may not be kept.
func (w *writer) do(ctx context.Context, fn writeFunc) error {
	return w.submit(ctx, &writeReq{ctx: ctx, fn: fn})
}

// alone runs fn on the write connection between batches, outside any
// transaction, with ctx.
func (w *writer) alone(ctx context.Context, fn writeFunc) error {
	return w.submit(ctx, &writeReq{ctx: ctx, fn: fn, alone: true})
}

func (w *writer) submit(ctx context.Context, r *writeReq) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.done = make(chan error, 1)
	onQueued := w.onQueued // read before the writer can run r
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return errClosed
	}
	w.queue = append(w.queue, r)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	if onQueued != nil {
		onQueued()
	}
	select {
	case err := <-r.done:
		var p *writePanic
		if errors.As(err, &p) {
			panic(fmt.Sprintf("%v\n\nin the sqlite store's writer:\n%s", p.value, p.stack))
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close answers the writes already queued, stops the writer and gives the
// connection back; writes after it get errClosed.
func (w *writer) close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.stopped
	return errors.Join(w.stmts.close(), w.conn.Close())
}

func (w *writer) run() {
	defer close(w.stopped)
	for {
		batch, ok := w.next()
		if !ok {
			return
		}
		if batch[0].alone {
			w.runAlone(batch[0])
			continue
		}
		for len(batch) > 0 {
			batch = batch[w.runBatch(batch):]
		}
	}
}

// next waits for writes and takes those at the head of the queue that go
// into one transaction, or the one write that runs alone. It returns false
// once the writer is closed and the queue is empty.
func (w *writer) next() ([]*writeReq, bool) {
	for {
		w.mu.Lock()
		if n := len(w.queue); n > 0 {
			take := 1
			for !w.queue[0].alone && take < min(n, maxBatch) && !w.queue[take].alone {
				take++
			}
			batch := make([]*writeReq, take)
			copy(batch, w.queue)
			rest := copy(w.queue, w.queue[take:])
			clear(w.queue[rest:])
			w.queue = w.queue[:rest]
			w.mu.Unlock()
			return batch, true
		}
		closed := w.closed
		w.mu.Unlock()
		if closed {
			return nil, false
		}
		<-w.wake
	}
}

// runBatch runs the writes of batch in one transaction and answers them. It
// returns how many it answered: all of them, unless a write left the
// transaction rolled back (SQLite does that on some errors, such as a full
// disk); the writes after that one go into a new transaction.
func (w *writer) runBatch(batch []*writeReq) int {
	bg := context.Background()
	if _, err := w.stmts.ExecContext(bg, "BEGIN IMMEDIATE"); err != nil {
		for _, r := range batch {
			r.done <- err
		}
		return len(batch)
	}
	var ran []*writeReq // succeeded, waiting for the COMMIT
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- err
			continue
		}
		err, lost := w.runOne(r)
		if lost != nil {
			// Whatever state the connection is in, end the transaction:
			// the writes that ran before this one went with it.
			_, _ = w.stmts.ExecContext(bg, "ROLLBACK")
			r.done <- err
			for _, prev := range ran {
				prev.done <- fmt.Errorf("the transaction was rolled back by another write's failure: %w", lost)
			}
			return i + 1
		}
		if err != nil {
			r.done <- err
			continue
		}
		ran = append(ran, r)
	}
	_, err := w.stmts.ExecContext(bg, "COMMIT")
	if err != nil {
		err = fmt.Errorf("committing a batch of %d writes: %w", len(ran), err)
		// A failed COMMIT can leave the transaction open (SQLITE_BUSY, a
		// deferred constraint): roll it back so that none of it is kept,
		// as its callers are told.
		_, _ = w.stmts.ExecContext(bg, "ROLLBACK")
	}
	w.commits.Add(1)
	for _, r := range ran {
		r.done <- err
	}
	return len(batch)
}

// runOne runs r's function in a savepoint, which it releases, or rolls
// back if the function fails. err is the write's error; lost, when set,
// says the transaction is gone (or in a state the writer cannot know) and
// must be rolled back.
func (w *writer) runOne(r *writeReq) (err, lost error) {
	bg := context.Background()
	if _, err := w.stmts.ExecContext(bg, "SAVEPOINT write"); err != nil {
		return err, err
	}
	err = call(context.WithoutCancel(r.ctx), r.fn, writeTx{w.stmts})
	if err == nil {
		if _, err := w.stmts.ExecContext(bg, "RELEASE write"); err != nil {
			return err, err
		}
		return nil, nil
	}
	if _, rerr := w.stmts.ExecContext(bg, "ROLLBACK TO write"); rerr != nil {
		return err, rerr
	}
	if _, rerr := w.stmts.ExecContext(bg, "RELEASE write"); rerr != nil {
		return err, rerr
	}
	return err, nil
}

func (w *writer) runAlone(r *writeReq) {
	if err := r.ctx.Err(); err != nil {
		r.done <- err
		return
	}
	r.done <- call(r.ctx, r.fn, writeTx{w.stmts})
}

// writePanic carries a write function's panic to its caller, where it is
// raised again: a bug in one write must not stop the writer.
type writePanic struct {
	value any
	stack []byte
}

func (p *writePanic) Error() string { return fmt.Sprintf("panic in a write: %v", p.value) }

func call(ctx context.Context, fn writeFunc, tx writeTx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &writePanic{value: v, stack: debug.Stack()}
		}
	}()
	return fn(ctx, tx)
}
