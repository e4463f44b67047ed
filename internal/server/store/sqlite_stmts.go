package store

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// maxCachedStmts bounds a stmtCache. The store's SQL texts are constants,
// plus the few WHERE clauses ListJobs builds, so about a hundred at most;
// a text past the bound runs unprepared rather than growing the cache.
const maxCachedStmts = 256

// sqlConn is what a stmtCache prepares on and falls back to: the read pool
// (*sql.DB) or the writer's connection (*sql.Conn).
type sqlConn interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// stmtCache prepares each SQL text once and keeps the statement.
// modernc.org/sqlite has no statement cache of its own: without this, every
// call parses and plans its SQL again, which was a sixth of the server's CPU
// in a burst of agents.
type stmtCache struct {
	db sqlConn

	mu     sync.Mutex
	stmts  map[string]*sql.Stmt
	closed bool
}

func newStmtCache(db sqlConn) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}}
}

// stmt returns the prepared statement for query, preparing it on a miss. It
// returns nil and no error when the cache is full (or closed): the caller
// runs the query unprepared.
func (c *stmtCache) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	c.mu.Lock()
	st, ok := c.stmts[query]
	full := c.closed || len(c.stmts) >= maxCachedStmts
	c.mu.Unlock()
	if ok || full {
		return st, nil
	}
	// Prepare without the lock: on the read pool it may wait for a
	// connection, and a hit must not wait behind that.
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.stmts[query]; ok { // another goroutine prepared it meanwhile
		st.Close()
		return prev, nil
	}
	if c.closed || len(c.stmts) >= maxCachedStmts {
		st.Close()
		return nil, nil
	}
	c.stmts[query] = st
	return st, nil
}

// ExecContext runs query with its prepared statement.
func (c *stmtCache) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return c.db.ExecContext(ctx, query, args...)
	}
	return st.ExecContext(ctx, args...)
}

// QueryContext runs query with its prepared statement.
func (c *stmtCache) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return c.db.QueryContext(ctx, query, args...)
	}
	return st.QueryContext(ctx, args...)
}

// QueryRowContext runs query with its prepared statement.
func (c *stmtCache) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := c.stmt(ctx, query)
	if err != nil || st == nil {
		// A *sql.Row cannot be made to carry err: running the query
		// unprepared fails the same way and puts the error in the Row.
		return c.db.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// txStmt returns query's statement for use in tx, a transaction on the
// same database. Preparing on the read pool takes a connection, so get st with
// stmt before beginning tx: a transaction that waits for a second
// connection can wait for ever once every connection is in one.
func txStmt(ctx context.Context, tx *sql.Tx, st *sql.Stmt, query string) (*sql.Stmt, error) {
	if st == nil {
		return tx.PrepareContext(ctx, query)
	}
	return tx.StmtContext(ctx, st), nil
}

// close closes every statement; later calls run their queries unprepared
// (and fail, once the database is closed).
func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, st := range c.stmts {
		errs = append(errs, st.Close())
	}
	c.stmts, c.closed = nil, true
	return errors.Join(errs...)
}
