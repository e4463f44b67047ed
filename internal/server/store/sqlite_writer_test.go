package store

// Tests of the SQLite store's group commit. They are inside the package to
// hold the writer: a write that blocks lets the writes made meanwhile pile
// up, and they go into the next batch together, whatever the scheduler does.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func openSQLite(t *testing.T, path string) *SQLite {
	t.Helper()
	s, err := NewSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	return s
}

// holdWriter makes the writer run a write that blocks until release is
// called. From then on queued receives once per write that joins the queue.
func holdWriter(t *testing.T, s *SQLite) (queued <-chan struct{}, release func()) {
	t.Helper()
	started, unblock := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- s.w.do(context.Background(), func(context.Context, writeTx) error {
			close(started)
			<-unblock
			return nil
		})
	}()
	<-started
	// No write is being submitted now, so setting the hook races with none.
	q := make(chan struct{}, 1024)
	s.w.onQueued = func() { q <- struct{}{} }
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(unblock)
			if err := <-errc; err != nil {
				t.Errorf("the write holding the writer: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return q, release
}

// queueWrite starts call in a goroutine and returns once its write is in
// the writer's queue; the result arrives on the returned channel.
func queueWrite(queued <-chan struct{}, call func() error) <-chan error {
	res := make(chan error, 1)
	go func() { res <- call() }()
	<-queued
	return res
}

func poolNames(t *testing.T, s *SQLite) []string {
	t.Helper()
	pools, err := s.ListPools(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pools {
		names = append(names, p.Name)
	}
	return names
}

// TestSQLiteGroupCommit: writes that arrive together share one COMMIT, each
// gets its own result, and all of them are on disk once they returned.
func TestSQLiteGroupCommit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agentry.db")
	s, err := NewSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.CreatePool(ctx, "default", epoch)
	if err != nil {
		t.Fatal(err)
	}

	const writers = 50
	queued, release := holdWriter(t, s)
	before := s.w.commits.Load()
	var mu sync.Mutex
	ids := map[int]string{} // agent id → name, as CreateAgent returned them
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			name := fmt.Sprintf("agent-%d", i)
			a, err := s.CreateAgent(ctx, Agent{PoolID: p.ID, Name: name, ClientID: name, CreatedOn: epoch})
			if err != nil {
				t.Errorf("CreateAgent %s: %v", name, err)
				return
			}
			mu.Lock()
			ids[a.ID] = a.Name
			mu.Unlock()
		})
	}
	for range writers {
		<-queued
	}
	release()
	wg.Wait()
	// The holding write's batch, then the queued writes maxBatch at a time.
	want := int64(1 + (writers+maxBatch-1)/maxBatch)
	if got := s.w.commits.Load() - before; got != want || got >= writers {
		t.Errorf("%d writes queued behind one: %d COMMITs, want %d", writers, got, want)
	}
	if len(ids) != writers {
		t.Errorf("CreateAgent returned %d distinct ids for %d agents", len(ids), writers)
	}

	// Unheld, too, every concurrent write must land.
	for i := range writers {
		wg.Go(func() {
			if _, err := s.CreateJob(ctx, Job{PoolID: p.ID, PoolName: p.Name, JobID: fmt.Sprint(i), QueueTime: epoch}); err != nil {
				t.Errorf("CreateJob %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openSQLite(t, path)
	agents, err := s.ListAgents(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]string{}
	for _, a := range agents {
		got[a.ID] = a.Name
	}
	if len(got) != writers || !maps.Equal(got, ids) {
		t.Errorf("after reopening, agents %v; want the %d created: %v", got, writers, ids)
	}
	jobs, err := s.ListJobs(ctx, JobFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != writers {
		t.Errorf("after reopening, %d jobs, want %d", len(jobs), writers)
	}
}

// TestSQLiteBatchFailedWrite: in one batch, a write that fails leaves none
// of its changes and the others are committed; a write sees those queued
// before it.
func TestSQLiteBatchFailedWrite(t *testing.T) {
	ctx := context.Background()
	s := openSQLite(t, filepath.Join(t.TempDir(), "agentry.db"))
	queued, release := holdWriter(t, s)
	before := s.w.commits.Load()
	errBoom := errors.New("boom")

	a := queueWrite(queued, func() error { _, err := s.CreatePool(ctx, "a", epoch); return err })
	boom := queueWrite(queued, func() error {
		return s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
			for _, name := range []string{"b", "c"} {
				if _, err := tx.ExecContext(ctx, "INSERT INTO pools (name, name_key, created_on) VALUES (?, ?, 0)", name, name); err != nil {
					return err
				}
			}
			return errBoom
		})
	})
	again := queueWrite(queued, func() error { _, err := s.CreatePool(ctx, "A", epoch); return err })
	d := queueWrite(queued, func() error { _, err := s.CreatePool(ctx, "d", epoch); return err })
	release()

	if err := <-a; err != nil {
		t.Errorf("CreatePool a: %v", err)
	}
	if err := <-boom; !errors.Is(err, errBoom) {
		t.Errorf("the failing write returned %v, want %v", err, errBoom)
	}
	if err := <-again; !errors.Is(err, ErrExists) {
		t.Errorf("CreatePool A after a in the same batch: %v, want %v", err, ErrExists)
	}
	if err := <-d; err != nil {
		t.Errorf("CreatePool d: %v", err)
	}
	if got := s.w.commits.Load() - before; got != 2 {
		t.Errorf("%d COMMITs, want 2: the holding write's and one for the four queued", got)
	}
	if got, want := poolNames(t, s), []string{"a", "d"}; !slices.Equal(got, want) {
		t.Errorf("pools %v, want %v", got, want)
	}
}

// TestSQLiteBatchFailedCommit: when the COMMIT fails, every write of the
// batch gets an error and none of them is kept.
func TestSQLiteBatchFailedCommit(t *testing.T) {
	ctx := context.Background()
	s := openSQLite(t, filepath.Join(t.TempDir(), "agentry.db"))
	queued, release := holdWriter(t, s)
	a := queueWrite(queued, func() error { _, err := s.CreatePool(ctx, "a", epoch); return err })
	// A deferred foreign key is checked at COMMIT, which then fails.
	dangling := queueWrite(queued, func() error {
		return s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
			if _, err := tx.ExecContext(ctx, "PRAGMA defer_foreign_keys = ON"); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO listener_tokens (hash, agent_id, expires_at) VALUES ('h', 999, 0)")
			return err
		})
	})
	release()
	for name, c := range map[string]<-chan error{"CreatePool": a, "the dangling write": dangling} {
		if err := <-c; err == nil || !strings.Contains(err.Error(), "FOREIGN KEY") {
			t.Errorf("%s in a batch whose COMMIT failed: %v, want the COMMIT's error", name, err)
		}
	}
	if got := poolNames(t, s); len(got) != 0 {
		t.Errorf("pools %v after the failed COMMIT, want none", got)
	}
	// The writer goes on.
	if _, err := s.CreatePool(ctx, "b", epoch); err != nil {
		t.Fatal(err)
	}
	if got, want := poolNames(t, s), []string{"b"}; !slices.Equal(got, want) {
		t.Errorf("pools %v, want %v", got, want)
	}
}

// TestSQLiteBatchLostTransaction: a write after which the transaction is
// gone (SQLite rolls it back itself on some errors; here the write does)
// fails with the writes before it in the batch; the writes after it run in
// a new transaction.
func TestSQLiteBatchLostTransaction(t *testing.T) {
	ctx := context.Background()
	s := openSQLite(t, filepath.Join(t.TempDir(), "agentry.db"))
	queued, release := holdWriter(t, s)
	a := queueWrite(queued, func() error { _, err := s.CreatePool(ctx, "a", epoch); return err })
	lose := queueWrite(queued, func() error {
		return s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
			_, err := tx.ExecContext(ctx, "ROLLBACK")
			return err
		})
	})
	c := queueWrite(queued, func() error { _, err := s.CreatePool(ctx, "c", epoch); return err })
	release()
	if err := <-a; err == nil {
		t.Error("CreatePool a, rolled back with its batch, returned no error")
	}
	if err := <-lose; err == nil {
		t.Error("the write that ended the transaction returned no error")
	}
	if err := <-c; err != nil {
		t.Errorf("CreatePool c, after the lost transaction: %v", err)
	}
	if got, want := poolNames(t, s), []string{"c"}; !slices.Equal(got, want) {
		t.Errorf("pools %v, want %v", got, want)
	}
}

// TestSQLiteWriteCancelled: a caller that gives up before its write ran gets
// its context's error and the write does not happen; one that gives up
// while its write runs leaves, and the write goes on unharmed, as do the
// others of its batch.
func TestSQLiteWriteCancelled(t *testing.T) {
	ctx := context.Background()
	t.Run("BeforeItsTurn", func(t *testing.T) {
		s := openSQLite(t, filepath.Join(t.TempDir(), "agentry.db"))
		queued, release := holdWriter(t, s)
		cctx, cancel := context.WithCancel(ctx)
		x := queueWrite(queued, func() error { _, err := s.CreatePool(cctx, "x", epoch); return err })
		y := queueWrite(queued, func() error { _, err := s.CreatePool(ctx, "y", epoch); return err })
		cancel()
		if err := <-x; !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled CreatePool returned %v, want %v", err, context.Canceled)
		}
		release()
		if err := <-y; err != nil {
			t.Errorf("CreatePool y: %v", err)
		}
		if got, want := poolNames(t, s), []string{"y"}; !slices.Equal(got, want) {
			t.Errorf("pools %v, want %v", got, want)
		}
	})
	t.Run("WhileItRuns", func(t *testing.T) {
		s := openSQLite(t, filepath.Join(t.TempDir(), "agentry.db"))
		queued, release := holdWriter(t, s)
		cctx, cancel := context.WithCancel(ctx)
		running, proceed := make(chan struct{}), make(chan struct{})
		x := queueWrite(queued, func() error {
			return s.w.do(cctx, func(ctx context.Context, tx writeTx) error {
				close(running)
				<-proceed
				_, err := tx.ExecContext(ctx, "INSERT INTO pools (name, name_key, created_on) VALUES ('x', 'x', 0)")
				return err
			})
		})
		y := queueWrite(queued, func() error { _, err := s.CreatePool(ctx, "y", epoch); return err })
		release()
		<-running
		cancel()
		if err := <-x; !errors.Is(err, context.Canceled) {
			t.Errorf("caller cancelled while its write ran: %v, want %v", err, context.Canceled)
		}
		close(proceed)
		if err := <-y; err != nil {
			t.Errorf("CreatePool y, in the batch of the cancelled write: %v", err)
		}
		// The cancelled caller's write ran to its end with a context that
		// stayed alive: a cancelled one would interrupt SQLite mid-batch.
		if got, want := poolNames(t, s), []string{"x", "y"}; !slices.Equal(got, want) {
			t.Errorf("pools %v, want %v", got, want)
		}
	})
}

// TestSQLiteClose: the writes queued when Close is called are still made and
// kept; a write after Close fails and the writer has stopped.
func TestSQLiteClose(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agentry.db")
	s, err := NewSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	queued, release := holdWriter(t, s)
	z := queueWrite(queued, func() error { _, err := s.CreatePool(ctx, "z", epoch); return err })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	release()
	if err := <-z; err != nil {
		t.Errorf("CreatePool queued before Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.w.stopped:
	default:
		t.Error("the writer goroutine is still running after Close")
	}
	if _, err := s.CreatePool(ctx, "late", epoch); !errors.Is(err, errClosed) {
		t.Errorf("CreatePool after Close: %v, want %v", err, errClosed)
	}
	if err := s.Close(); err != nil {
		t.Errorf("closing again: %v", err)
	}
	if got, want := poolNames(t, openSQLite(t, path)), []string{"z"}; !slices.Equal(got, want) {
		t.Errorf("pools after reopening %v, want %v", got, want)
	}
}

// TestSQLiteWritePanic: a write function's panic reaches its caller, and the
// writer goes on.
func TestSQLiteWritePanic(t *testing.T) {
	ctx := context.Background()
	s := openSQLite(t, filepath.Join(t.TempDir(), "agentry.db"))
	func() {
		defer func() {
			if v := recover(); v == nil || !strings.Contains(fmt.Sprint(v), "bad write") {
				t.Errorf("recovered %v, want the write's panic", v)
			}
		}()
		s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO pools (name, name_key, created_on) VALUES ('p', 'p', 0)"); err != nil {
				return err
			}
			panic("bad write")
		})
	}()
	if _, err := s.CreatePool(ctx, "q", epoch); err != nil {
		t.Fatal(err)
	}
	if got, want := poolNames(t, s), []string{"q"}; !slices.Equal(got, want) {
		t.Errorf("pools %v, want %v (not the panicking write's)", got, want)
	}
}
