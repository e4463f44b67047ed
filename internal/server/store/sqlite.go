package store

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// SQLite is a Store kept in one SQLite database file (pure Go, no cgo), in
// WAL mode with foreign keys on. Everything is in that file, logs included,
// so a copy of it (taken while the server is stopped, or with SQLite's
// online backup) is a complete backup.
//
// Every write runs on one connection, in a BEGIN IMMEDIATE transaction, so
// the compare-and-set methods cannot interleave, not even with another
// process that opens the same file. Commits are synchronous
// (synchronous=FULL): a call that returned has reached the disk.
//
// Writes are group-committed: one goroutine (writer) takes the writes that
// are waiting, up to maxBatch, and runs them one after another in a single
// transaction, each in its own savepoint, then commits once. A write that
// fails is rolled back to its savepoint alone; every caller is answered only
// after the COMMIT returned. So a write means what it would in its own
// transaction, and a burst of writes shares one fsync instead of paying one
// each.
//
// Reads use a small pool of read-only connections and, in WAL mode, never
// wait for a writer. Both sides prepare each SQL text once (stmtCache).
type SQLite struct {
	wdb, rdb *sql.DB
	w        *writer    // runs every write, on wdb's one connection
	r        *stmtCache // reads, on rdb's pool

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*SQLite)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// logChunk is the most bytes of log one log_chunks row holds.
const logChunk = 1 << 20

// NewSQLite opens (creating it if missing) the database at path and brings
// its schema up to date.
func NewSQLite(path string) (*SQLite, error) {
	if path == "" {
		return nil, errors.New("sqlite store: no path given")
	}
	dsn := func(extra ...string) string {
		q := url.Values{"_pragma": {"busy_timeout(10000)", "foreign_keys(1)", "journal_mode(WAL)", "synchronous(FULL)"}}
		for i := 0; i+1 < len(extra); i += 2 {
			q.Add(extra[i], extra[i+1])
		}
		return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	}
	ctx := context.Background()
	wdb, err := sql.Open("sqlite", dsn("_txlock", "immediate"))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	if err := migrate(ctx, wdb); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("migrating %s: %w", path, err)
	}
	rdb, err := sql.Open("sqlite", dsn("_pragma", "query_only(1)"))
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	// Keep every reader open (database/sql keeps two idle by default): a
	// connection closed and opened again prepares its statements anew.
	rdb.SetMaxOpenConns(4)
	rdb.SetMaxIdleConns(4)
	// The writer holds wdb's only connection from here on, so nothing else
	// can use it: migrations ran before, Backup goes through the writer.
	w, err := newWriter(ctx, wdb)
	if err != nil {
		rdb.Close()
		wdb.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return &SQLite{wdb: wdb, rdb: rdb, w: w, r: newStmtCache(rdb)}, nil
}

// Close closes the database, once the writes already under way are done;
// later calls fail.
func (s *SQLite) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = errors.Join(s.w.close(), s.r.close(), s.rdb.Close(), s.wdb.Close())
	})
	return s.closeErr
}

// Backup writes a consistent copy of the database to dst (a new file)
// without closing the store; writes wait while it runs.
func (s *SQLite) Backup(ctx context.Context, dst string) error {
	return s.w.alone(ctx, func(ctx context.Context, tx writeTx) error {
		_, err := tx.ExecContext(ctx, "VACUUM INTO ?", dst)
		return err
	})
}

// migrate applies the embedded migrations (migrations/NNNN_name.sql) that
// the database has not seen, each in its own transaction, and refuses a
// database written by a newer agentry-server.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`); err != nil {
		return err
	}
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	type migration struct {
		version int
		name    string
	}
	var todo []migration
	for _, f := range files {
		name := path.Base(f)
		v, _, ok := strings.Cut(name, "_")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n <= 0 {
			return fmt.Errorf("migration file %s: want NNNN_name.sql", name)
		}
		todo = append(todo, migration{n, name})
	}
	slices.SortFunc(todo, func(a, b migration) int { return a.version - b.version })
	var latest int
	if err := db.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&latest); err != nil {
		return err
	}
	if len(todo) > 0 && latest > todo[len(todo)-1].version {
		return fmt.Errorf("the database has schema version %d, this agentry-server knows up to %d: use a newer agentry-server", latest, todo[len(todo)-1].version)
	}
	for _, m := range todo {
		if m.version <= latest {
			continue
		}
		text, err := migrations.ReadFile("migrations/" + m.name)
		if err != nil {
			return err
		}
		err = inTx(ctx, db, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, string(text)); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
				m.version, m.name, time.Now().UnixNano())
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	return nil
}

// inTx runs fn in a transaction (BEGIN IMMEDIATE on the write connection)
// and commits it if fn returns nil. Only migrate uses it, before the writer
// takes the connection; the store's writes go through the writer.
func inTx(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// ---- value conversions ----

// unixNano stores a time; the zero time is 0.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// foldKey is the key of a case-insensitive name.
func foldKey(s string) string { return strings.ToLower(strings.ToUpper(s)) }

// nullBytes keeps a nil slice apart from an empty one.
func nullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func scanBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func jsonMap(m map[string]string) (any, error) {
	if m == nil {
		return nil, nil
	}
	b, err := json.Marshal(m)
	return string(b), err
}

func parseMap(s sql.NullString) (map[string]string, error) {
	if !s.Valid {
		return nil, nil
	}
	m := map[string]string{}
	return m, json.Unmarshal([]byte(s.String), &m)
}

func isConstraint(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
}

func rowsAffected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// ---- pools ----

// CreatePool implements Store.
func (s *SQLite) CreatePool(ctx context.Context, name string, now time.Time) (Pool, error) {
	p := Pool{Name: name, CreatedOn: now}
	// The constraint check is on the INSERT's error, inside the write: a
	// failed COMMIT can be another write's constraint (see writer).
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		err := tx.QueryRowContext(ctx, "INSERT INTO pools (name, name_key, created_on) VALUES (?, ?, ?) RETURNING id",
			name, foldKey(name), unixNano(now)).Scan(&p.ID)
		if isConstraint(err) {
			return fmt.Errorf("pool %q: %w", name, ErrExists)
		}
		return err
	})
	if err != nil {
		return Pool{}, err
	}
	return p, nil
}

// GetPool implements Store.
func (s *SQLite) GetPool(ctx context.Context, id int) (Pool, error) {
	var p Pool
	var created int64
	err := s.r.QueryRowContext(ctx, "SELECT id, name, created_on FROM pools WHERE id = ?", id).Scan(&p.ID, &p.Name, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Pool{}, notFound("pool", id)
	}
	p.CreatedOn = fromUnixNano(created)
	return p, err
}

// ListPools implements Store.
func (s *SQLite) ListPools(ctx context.Context) ([]Pool, error) {
	return queryAll(ctx, s.r, func(row rowScanner) (Pool, error) {
		var p Pool
		var created int64
		err := row.Scan(&p.ID, &p.Name, &created)
		p.CreatedOn = fromUnixNano(created)
		return p, err
	}, "SELECT id, name, created_on FROM pools ORDER BY id")
}

// ---- agents ----

const agentColumns = `id, pool_id, name, version, os_description, enabled, max_parallelism, provisioning_state,
	client_id, authorization_url, key_exponent, key_modulus, system_capabilities, user_capabilities, created_on, request_id`

type rowScanner interface{ Scan(dest ...any) error }

// queryAll runs a query and scans every row; an empty result is an empty,
// non-nil slice.
func queryAll[T any](ctx context.Context, db *stmtCache, scan func(rowScanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func scanAgent(row rowScanner) (Agent, error) {
	var a Agent
	var exp, mod []byte
	var sys, usr sql.NullString
	var created int64
	err := row.Scan(&a.ID, &a.PoolID, &a.Name, &a.Version, &a.OSDescription, &a.Enabled, &a.MaxParallelism, &a.ProvisioningState,
		&a.ClientID, &a.AuthorizationURL, &exp, &mod, &sys, &usr, &created, &a.RequestID)
	if err != nil {
		return Agent{}, err
	}
	a.PublicKey.Exponent, a.PublicKey.Modulus = scanBytes(exp), scanBytes(mod)
	a.CreatedOn = fromUnixNano(created)
	if a.SystemCapabilities, err = parseMap(sys); err != nil {
		return Agent{}, fmt.Errorf("agent %d system capabilities: %w", a.ID, err)
	}
	if a.UserCapabilities, err = parseMap(usr); err != nil {
		return Agent{}, fmt.Errorf("agent %d user capabilities: %w", a.ID, err)
	}
	return a, nil
}

func getAgent(ctx context.Context, q queryRower, id int) (Agent, error) {
	a, err := scanAgent(q.QueryRowContext(ctx, "SELECT "+agentColumns+" FROM agents WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return Agent{}, notFound("agent", id)
	}
	return a, err
}

func clientIDKey(id string) any {
	if id == "" {
		return nil
	}
	return foldKey(id)
}

// CreateAgent implements Store.
func (s *SQLite) CreateAgent(ctx context.Context, a Agent) (Agent, error) {
	a = cloneAgent(a)
	a.RequestID = 0
	sys, err := jsonMap(a.SystemCapabilities)
	if err != nil {
		return Agent{}, err
	}
	usr, err := jsonMap(a.UserCapabilities)
	if err != nil {
		return Agent{}, err
	}
	err = s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		var one int
		if err := tx.QueryRowContext(ctx, "SELECT 1 FROM pools WHERE id = ?", a.PoolID).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return notFound("pool", a.PoolID)
		} else if err != nil {
			return err
		}
		err := tx.QueryRowContext(ctx, `INSERT INTO agents (pool_id, name, name_key, version, os_description, enabled,
			max_parallelism, provisioning_state, client_id, client_id_key, authorization_url, key_exponent, key_modulus,
			system_capabilities, user_capabilities, created_on) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			a.PoolID, a.Name, foldKey(a.Name), a.Version, a.OSDescription, a.Enabled, a.MaxParallelism, a.ProvisioningState,
			a.ClientID, clientIDKey(a.ClientID), a.AuthorizationURL, nullBytes(a.PublicKey.Exponent), nullBytes(a.PublicKey.Modulus),
			sys, usr, unixNano(a.CreatedOn)).Scan(&a.ID)
		if isConstraint(err) {
			return fmt.Errorf("agent %q (or its client id): %w", a.Name, ErrExists)
		}
		return err
	})
	if err != nil {
		return Agent{}, err
	}
	return cloneAgent(a), nil
}

// ReplaceAgent implements Store.
func (s *SQLite) ReplaceAgent(ctx context.Context, a Agent) (Agent, error) {
	sys, err := jsonMap(a.SystemCapabilities)
	if err != nil {
		return Agent{}, err
	}
	usr, err := jsonMap(a.UserCapabilities)
	if err != nil {
		return Agent{}, err
	}
	var out Agent
	err = s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		n, err := rowsAffected(tx.ExecContext(ctx, `UPDATE agents SET name = ?, name_key = ?, version = ?, os_description = ?,
			enabled = ?, max_parallelism = ?, provisioning_state = ?, key_exponent = ?, key_modulus = ?,
			system_capabilities = ?, user_capabilities = ? WHERE id = ?`,
			a.Name, foldKey(a.Name), a.Version, a.OSDescription, a.Enabled, a.MaxParallelism, a.ProvisioningState,
			nullBytes(a.PublicKey.Exponent), nullBytes(a.PublicKey.Modulus), sys, usr, a.ID))
		if isConstraint(err) {
			return fmt.Errorf("agent %q: %w", a.Name, ErrExists)
		} else if err != nil {
			return err
		}
		if n == 0 {
			return notFound("agent", a.ID)
		}
		out, err = getAgent(ctx, tx, a.ID)
		return err
	})
	return out, err
}

// SetSystemCapabilities implements Store.
func (s *SQLite) SetSystemCapabilities(ctx context.Context, agentID int, caps map[string]string) error {
	sys, err := jsonMap(caps)
	if err != nil {
		return err
	}
	return s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		n, err := rowsAffected(tx.ExecContext(ctx, "UPDATE agents SET system_capabilities = ? WHERE id = ?", sys, agentID))
		if err == nil && n == 0 {
			return notFound("agent", agentID)
		}
		return err
	})
}

// GetAgent implements Store.
func (s *SQLite) GetAgent(ctx context.Context, id int) (Agent, error) { return getAgent(ctx, s.r, id) }

// GetAgentByClientID implements Store.
func (s *SQLite) GetAgentByClientID(ctx context.Context, clientID string) (Agent, error) {
	a, err := scanAgent(s.r.QueryRowContext(ctx, "SELECT "+agentColumns+" FROM agents WHERE client_id_key = ?", clientIDKey(clientID)))
	if errors.Is(err, sql.ErrNoRows) {
		return Agent{}, notFound("agent with client id", clientID)
	}
	return a, err
}

// ListAgents implements Store.
func (s *SQLite) ListAgents(ctx context.Context, poolID int) ([]Agent, error) {
	return queryAll(ctx, s.r, scanAgent, "SELECT "+agentColumns+" FROM agents WHERE pool_id = ? ORDER BY id", poolID)
}

// CountAgents implements Store.
func (s *SQLite) CountAgents(ctx context.Context, poolID int) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, "SELECT count(*) FROM agents WHERE pool_id = ?", poolID).Scan(&n)
	return n, err
}

// DeleteAgent implements Store.
func (s *SQLite) DeleteAgent(ctx context.Context, id int, now time.Time) (AgentDeletion, error) {
	var d AgentDeletion
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		var requestID int64
		err := tx.QueryRowContext(ctx, "SELECT request_id FROM agents WHERE id = ?", id).Scan(&requestID)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("agent", id)
		} else if err != nil {
			return err
		}
		d.Held = requestID
		if requestID != 0 {
			j, err := getJob(ctx, tx, requestID)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return err
			case !j.Finished():
				if j, err = takeBack(ctx, tx, j, now); err != nil {
					return err
				}
				if j.Finished() {
					d.Abandoned = j.RequestID
				} else {
					d.Requeued = j.RequestID
				}
			}
		}
		// Tokens, sessions and messages go with the agent (ON DELETE CASCADE).
		_, err = tx.ExecContext(ctx, "DELETE FROM agents WHERE id = ?", id)
		return err
	})
	return d, err
}

// takeBack requeues a job its agent will not run, or abandons it when the
// agent had started it or it has had MaxJobAttempts attempts.
func takeBack(ctx context.Context, tx writeTx, j Job, now time.Time) (Job, error) {
	if _, err := tx.ExecContext(ctx, "DELETE FROM messages WHERE request_id = ?", j.RequestID); err != nil {
		return Job{}, err
	}
	if j.StartTime.IsZero() {
		// The agent never ran it: it may take a job again.
		if _, err := tx.ExecContext(ctx, "UPDATE agents SET request_id = 0 WHERE id = ? AND request_id = ?", j.AgentID, j.RequestID); err != nil {
			return Job{}, err
		}
	}
	var err error
	if !j.StartTime.IsZero() || j.Attempts >= MaxJobAttempts {
		_, err = tx.ExecContext(ctx, "UPDATE jobs SET finish_time = ?, result = ? WHERE request_id = ?",
			unixNano(now), string(pipelines.ResultAbandoned), j.RequestID)
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET assign_time = 0, receive_time = 0, locked_until = 0, agent_id = 0,
			agent_name = '', token_hash = NULL WHERE request_id = ?`, j.RequestID)
	}
	if err != nil {
		return Job{}, err
	}
	return getJob(ctx, tx, j.RequestID)
}

// ---- listener tokens ----

// PutListenerToken implements Store.
func (s *SQLite) PutListenerToken(ctx context.Context, t ListenerToken, now time.Time) error {
	return s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM listener_tokens WHERE agent_id = ? AND expires_at <= ?", t.AgentID, unixNano(now)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO listener_tokens (hash, agent_id, expires_at) VALUES (?, ?, ?)",
			t.Hash, t.AgentID, unixNano(t.ExpiresAt))
		if isConstraint(err) { // the foreign key: no such agent
			return notFound("agent", t.AgentID)
		}
		return err
	})
}

// GetListenerToken implements Store.
func (s *SQLite) GetListenerToken(ctx context.Context, hash string) (ListenerToken, error) {
	t := ListenerToken{Hash: hash}
	var exp int64
	err := s.r.QueryRowContext(ctx, "SELECT agent_id, expires_at FROM listener_tokens WHERE hash = ?", hash).Scan(&t.AgentID, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return ListenerToken{}, notFound("listener token", "")
	}
	t.ExpiresAt = fromUnixNano(exp)
	return t, err
}

// DeleteListenerTokens implements Store.
func (s *SQLite) DeleteListenerTokens(ctx context.Context, agentID int) error {
	return s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		_, err := tx.ExecContext(ctx, "DELETE FROM listener_tokens WHERE agent_id = ?", agentID)
		return err
	})
}

// ---- sessions ----

const sessionColumns = "id, agent_id, pool_id, owner_name, key, use_fips_encryption, created_on, last_seen"

func scanSession(row rowScanner) (Session, error) {
	var ss Session
	var key []byte
	var created, seen int64
	if err := row.Scan(&ss.ID, &ss.AgentID, &ss.PoolID, &ss.OwnerName, &key, &ss.UseFipsEncryption, &created, &seen); err != nil {
		return Session{}, err
	}
	ss.Key = scanBytes(key)
	ss.CreatedOn, ss.LastSeen = fromUnixNano(created), fromUnixNano(seen)
	return ss, nil
}

// CreateSession implements Store.
func (s *SQLite) CreateSession(ctx context.Context, ss Session, staleBefore time.Time) (Session, error) {
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		var one int
		if err := tx.QueryRowContext(ctx, "SELECT 1 FROM agents WHERE id = ?", ss.AgentID).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return notFound("agent", ss.AgentID)
		} else if err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, "SELECT 1 FROM sessions WHERE id = ?", ss.ID).Scan(&one); err == nil {
			return fmt.Errorf("session %s: %w", ss.ID, ErrExists)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		err := tx.QueryRowContext(ctx, "SELECT 1 FROM sessions WHERE agent_id = ? AND last_seen >= ? LIMIT 1",
			ss.AgentID, unixNano(staleBefore)).Scan(&one)
		if err == nil {
			return fmt.Errorf("agent %d has a live session: %w", ss.AgentID, ErrConflict)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM sessions WHERE agent_id = ?", ss.AgentID); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "INSERT INTO sessions ("+sessionColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
			ss.ID, ss.AgentID, ss.PoolID, ss.OwnerName, nullBytes(ss.Key), ss.UseFipsEncryption, unixNano(ss.CreatedOn), unixNano(ss.LastSeen))
		return err
	})
	if err != nil {
		return Session{}, err
	}
	return cloneSession(ss), nil
}

// GetSession implements Store.
func (s *SQLite) GetSession(ctx context.Context, id string) (Session, error) {
	ss, err := scanSession(s.r.QueryRowContext(ctx, "SELECT "+sessionColumns+" FROM sessions WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, notFound("session", id)
	}
	return ss, err
}

// GetAgentSession implements Store.
func (s *SQLite) GetAgentSession(ctx context.Context, agentID int) (Session, error) {
	ss, err := scanSession(s.r.QueryRowContext(ctx, "SELECT "+sessionColumns+" FROM sessions WHERE agent_id = ? LIMIT 1", agentID))
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, notFound("session of agent", agentID)
	}
	return ss, err
}

// TouchSession implements Store.
func (s *SQLite) TouchSession(ctx context.Context, id string, now time.Time) error {
	return s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		n, err := rowsAffected(tx.ExecContext(ctx, "UPDATE sessions SET last_seen = max(last_seen, ?) WHERE id = ?", unixNano(now), id))
		if err == nil && n == 0 {
			return notFound("session", id)
		}
		return err
	})
}

// DeleteSession implements Store.
func (s *SQLite) DeleteSession(ctx context.Context, id string) error {
	return s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		n, err := rowsAffected(tx.ExecContext(ctx, "DELETE FROM sessions WHERE id = ?", id))
		if err == nil && n == 0 {
			return notFound("session", id)
		}
		return err
	})
}

// ---- jobs ----

// The columns a Job is scanned from; a brief job (JobFilter.Brief) reads
// its demands where a full one reads its spec.
const (
	jobColumnsHead  = "request_id, pool_id, pool_name, job_id, plan_id, timeline_id, name, "
	jobColumnsTail  = `, queue_time, assign_time, receive_time, start_time, finish_time, locked_until, result, agent_id, agent_name, coalesce(token_hash, ''), attempts, cancel_time`
	jobColumns      = jobColumnsHead + "spec" + jobColumnsTail
	briefJobColumns = jobColumnsHead + "demands" + jobColumnsTail
)

func scanJob(row rowScanner) (Job, error) { return scanJobColumns(row, false) }

func scanBriefJob(row rowScanner) (Job, error) { return scanJobColumns(row, true) }

func scanJobColumns(row rowScanner, brief bool) (Job, error) {
	var j Job
	var spec sql.NullString // the demands of a brief job
	var queue, assign, receive, start, finish, locked, cancel int64
	err := row.Scan(&j.RequestID, &j.PoolID, &j.PoolName, &j.JobID, &j.PlanID, &j.TimelineID, &j.Name, &spec,
		&queue, &assign, &receive, &start, &finish, &locked, &j.Result, &j.AgentID, &j.AgentName, &j.TokenHash, &j.Attempts, &cancel)
	if err != nil {
		return Job{}, err
	}
	switch {
	case !brief:
		err = json.Unmarshal([]byte(spec.String), &j.Spec)
	case spec.Valid:
		err = json.Unmarshal([]byte(spec.String), &j.Spec.Demands)
	}
	if err != nil {
		return Job{}, fmt.Errorf("job request %d spec: %w", j.RequestID, err)
	}
	j.QueueTime, j.AssignTime, j.ReceiveTime = fromUnixNano(queue), fromUnixNano(assign), fromUnixNano(receive)
	j.StartTime, j.FinishTime, j.LockedUntil = fromUnixNano(start), fromUnixNano(finish), fromUnixNano(locked)
	j.CancelTime = fromUnixNano(cancel)
	return j, nil
}

// demandsColumn is the demands column of a job: its demands as a JSON
// array, NULL when it has none.
func demandsColumn(demands []string) (any, error) {
	if len(demands) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(demands)
	return string(b), err
}

type queryRower interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

func getJob(ctx context.Context, q queryRower, requestID int64) (Job, error) {
	j, err := scanJob(q.QueryRowContext(ctx, "SELECT "+jobColumns+" FROM jobs WHERE request_id = ?", requestID))
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, notFound("job request", requestID)
	}
	return j, err
}

// CreateJob implements Store.
func (s *SQLite) CreateJob(ctx context.Context, j Job) (Job, error) {
	spec, err := json.Marshal(j.Spec)
	if err != nil {
		return Job{}, err
	}
	demands, err := demandsColumn(j.Spec.Demands)
	if err != nil {
		return Job{}, err
	}
	var out Job
	err = s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		var one int
		if err := tx.QueryRowContext(ctx, "SELECT 1 FROM pools WHERE id = ?", j.PoolID).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return notFound("pool", j.PoolID)
		} else if err != nil {
			return err
		}
		var token any
		if j.TokenHash != "" {
			token = j.TokenHash
		}
		var id int64
		err := tx.QueryRowContext(ctx, `INSERT INTO jobs (pool_id, pool_name, job_id, plan_id, timeline_id, name, spec, demands, queue_time,
			assign_time, receive_time, start_time, finish_time, locked_until, result, agent_id, agent_name, token_hash,
			attempts, cancel_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING request_id`,
			j.PoolID, j.PoolName, j.JobID, j.PlanID, j.TimelineID, j.Name, string(spec), demands, unixNano(j.QueueTime),
			unixNano(j.AssignTime), unixNano(j.ReceiveTime), unixNano(j.StartTime), unixNano(j.FinishTime), unixNano(j.LockedUntil),
			string(j.Result), j.AgentID, j.AgentName, token, j.Attempts, unixNano(j.CancelTime)).Scan(&id)
		if err != nil {
			return err
		}
		out, err = getJob(ctx, tx, id)
		return err
	})
	return out, err
}

// GetJob implements Store.
func (s *SQLite) GetJob(ctx context.Context, requestID int64) (Job, error) {
	return getJob(ctx, s.r, requestID)
}

// GetJobByTokenHash implements Store.
func (s *SQLite) GetJobByTokenHash(ctx context.Context, hash string) (Job, error) {
	if hash == "" {
		return Job{}, notFound("job token", "")
	}
	j, err := scanJob(s.r.QueryRowContext(ctx, "SELECT "+jobColumns+" FROM jobs WHERE token_hash = ? ORDER BY request_id LIMIT 1", hash))
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, notFound("job token", "")
	}
	return j, err
}

// ListJobs implements Store.
func (s *SQLite) ListJobs(ctx context.Context, f JobFilter) ([]Job, error) {
	cols, scan := jobColumns, scanJob
	if f.Brief {
		cols, scan = briefJobColumns, scanBriefJob
	}
	where := "1 = 1"
	var args []any
	if f.PoolID != 0 {
		where += " AND pool_id = ?"
		args = append(args, f.PoolID)
	}
	if f.Queued {
		where += " AND assign_time = 0 AND finish_time = 0"
	}
	whereArgs := slices.Clone(args)
	q := "SELECT " + cols + " FROM jobs WHERE " + where
	switch {
	case f.Unfinished && f.OrHeld:
		// Two selects, not "finish_time = 0 OR request_id IN (…)": with the
		// OR, SQLite walks every job the pool ever had. This way the
		// unfinished ones come from jobs_unfinished and the held ones, at
		// most one per agent, through the agents.
		held := "SELECT request_id FROM agents WHERE request_id != 0"
		heldArgs := slices.Clone(args)
		if f.PoolID != 0 {
			held += " AND pool_id = ?"
			heldArgs = append(heldArgs, f.PoolID)
		}
		q += " AND finish_time = 0 UNION ALL SELECT " + cols + " FROM jobs WHERE " + where +
			" AND finish_time != 0 AND request_id IN (" + held + ")"
		args = append(args, heldArgs...)
	case f.Unfinished:
		q += " AND finish_time = 0"
	}
	if f.Unfinished && f.Finished > 0 {
		// UNION, not UNION ALL: a held job may be among the latest
		// finished. The latest come from jobs_pool, walked backwards.
		q += " UNION SELECT * FROM (SELECT " + cols + " FROM jobs WHERE " + where +
			" AND finish_time != 0 ORDER BY request_id DESC LIMIT ?)"
		args = append(append(args, whereArgs...), f.Finished)
	}
	return queryAll(ctx, s.r, scan, q+" ORDER BY request_id", args...)
}

// AssignJob implements Store.
func (s *SQLite) AssignJob(ctx context.Context, a Assignment) (Job, error) {
	var out Job
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		j, err := getJob(ctx, tx, a.RequestID)
		if err != nil {
			return err
		}
		ag, err := getAgent(ctx, tx, a.AgentID)
		if err != nil {
			return err
		}
		switch {
		case !j.AssignTime.IsZero() || j.Finished():
			return fmt.Errorf("job request %d is no longer queued: %w", j.RequestID, ErrConflict)
		case ag.RequestID != 0:
			return fmt.Errorf("agent %d already took job request %d: %w", ag.ID, ag.RequestID, ErrConflict)
		case ag.PoolID != j.PoolID:
			return fmt.Errorf("agent %d is not in pool %d: %w", ag.ID, j.PoolID, ErrConflict)
		}
		var token any
		if a.TokenHash != "" {
			token = a.TokenHash
		}
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET assign_time = ?, locked_until = ?, agent_id = ?, agent_name = ?, token_hash = ?,
			attempts = attempts + 1 WHERE request_id = ?`, unixNano(a.Now), unixNano(a.LockedUntil), ag.ID, ag.Name, token, j.RequestID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE agents SET request_id = ? WHERE id = ?", j.RequestID, ag.ID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO messages (agent_id, type, body, request_id) VALUES (?, ?, ?, ?)",
			ag.ID, a.MessageType, append([]byte{}, a.MessageBody...), j.RequestID); err != nil {
			return err
		}
		out, err = getJob(ctx, tx, j.RequestID)
		return err
	})
	return out, err
}

// RenewJob implements Store.
func (s *SQLite) RenewJob(ctx context.Context, requestID int64, agentID int, lockedUntil, now time.Time) (Job, error) {
	var out Job
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		j, err := getJob(ctx, tx, requestID)
		if errors.Is(err, ErrNotFound) || (err == nil && (j.AgentID != agentID || agentID == 0)) {
			return notFound("job request", requestID)
		} else if err != nil {
			return err
		}
		if j.Finished() {
			out = j
			return nil
		}
		n := unixNano(now)
		// The agent cannot renew a job it never received.
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET start_time = CASE start_time WHEN 0 THEN ? ELSE start_time END,
			receive_time = CASE receive_time WHEN 0 THEN ? ELSE receive_time END, locked_until = ? WHERE request_id = ?`,
			n, n, unixNano(lockedUntil), requestID); err != nil {
			return err
		}
		out, err = getJob(ctx, tx, requestID)
		return err
	})
	return out, err
}

// FinishJob implements Store.
func (s *SQLite) FinishJob(ctx context.Context, requestID int64, result pipelines.TaskResult, now time.Time) (Job, error) {
	var out Job
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		j, err := getJob(ctx, tx, requestID)
		if err != nil {
			return err
		}
		if j.Finished() {
			out = j
			return fmt.Errorf("job request %d already finished: %w", requestID, ErrConflict)
		}
		if err := finishJob(ctx, tx, requestID, result, now); err != nil {
			return err
		}
		out, err = getJob(ctx, tx, requestID)
		return err
	})
	return out, err
}

// finishJob records a job's result. A finished job leaves nothing for its
// agent to pick up, so its undelivered messages go with it.
func finishJob(ctx context.Context, tx writeTx, requestID int64, result pipelines.TaskResult, now time.Time) error {
	if _, err := tx.ExecContext(ctx, "UPDATE jobs SET finish_time = ?, result = ? WHERE request_id = ?",
		unixNano(now), string(result), requestID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, "DELETE FROM messages WHERE request_id = ?", requestID)
	return err
}

// CancelJob implements Store.
func (s *SQLite) CancelJob(ctx context.Context, requestID int64, cancel Message, now time.Time) (Job, error) {
	var out Job
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		j, err := getJob(ctx, tx, requestID)
		if err != nil {
			return err
		}
		out = j
		switch {
		case j.Finished():
			return fmt.Errorf("job request %d already finished: %w", requestID, ErrConflict)
		case j.StartTime.IsZero():
			if err := finishJob(ctx, tx, requestID, pipelines.ResultCanceled, now); err != nil {
				return err
			}
		case j.CancelTime.IsZero():
			if _, err := tx.ExecContext(ctx, "UPDATE jobs SET cancel_time = ? WHERE request_id = ?", unixNano(now), requestID); err != nil {
				return err
			}
			// The agent is gone if its row is: then there is no one to tell.
			if _, err := tx.ExecContext(ctx, `INSERT INTO messages (agent_id, type, body, request_id)
				SELECT id, ?, ?, ? FROM agents WHERE id = ?`, cancel.Type, append([]byte{}, cancel.Body...), requestID, j.AgentID); err != nil {
				return err
			}
		default:
			return nil
		}
		out, err = getJob(ctx, tx, requestID)
		return err
	})
	return out, err
}

// RequeueJob implements Store.
func (s *SQLite) RequeueJob(ctx context.Context, requestID int64, agentID int, now time.Time) (Job, error) {
	var out Job
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		j, err := getJob(ctx, tx, requestID)
		if err != nil {
			return err
		}
		out = j
		if j.Finished() || j.AgentID != agentID || agentID == 0 || !j.StartTime.IsZero() {
			return fmt.Errorf("job request %d is not an unstarted job of agent %d: %w", requestID, agentID, ErrConflict)
		}
		out, err = takeBack(ctx, tx, j, now)
		return err
	})
	return out, err
}

// ---- messages ----

// NextMessage implements Store.
func (s *SQLite) NextMessage(ctx context.Context, agentID int, now time.Time) (Message, error) {
	// Most polls find nothing: answer those from a read connection, without
	// taking the write lock.
	var one int
	err := s.r.QueryRowContext(ctx, "SELECT 1 FROM messages WHERE agent_id = ? LIMIT 1", agentID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return Message{}, notFound("message for agent", agentID)
	} else if err != nil {
		return Message{}, err
	}
	var m Message
	err = s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		var body []byte
		err := tx.QueryRowContext(ctx, "SELECT id, agent_id, type, body, request_id FROM messages WHERE agent_id = ? ORDER BY id LIMIT 1",
			agentID).Scan(&m.ID, &m.AgentID, &m.Type, &body, &m.RequestID)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("message for agent", agentID)
		} else if err != nil {
			return err
		}
		m.Body = scanBytes(body)
		if m.RequestID != 0 {
			_, err = tx.ExecContext(ctx, "UPDATE jobs SET receive_time = ? WHERE request_id = ? AND receive_time = 0", unixNano(now), m.RequestID)
		}
		return err
	})
	if err != nil {
		return Message{}, err
	}
	return m, nil
}

// DeleteMessage implements Store.
func (s *SQLite) DeleteMessage(ctx context.Context, agentID int, messageID int64) error {
	return s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		_, err := tx.ExecContext(ctx, "DELETE FROM messages WHERE id = ? AND agent_id = ?", messageID, agentID)
		return err
	})
}

// ---- reporting ----

// storedRecord is a timeline record as stored: JSON with a flag that keeps
// an empty issue list apart from none (the wire form omits both).
type storedRecord struct {
	pipelines.TimelineRecord
	EmptyIssues bool `json:"agentryEmptyIssues,omitempty"`
}

func encodeRecord(r pipelines.TimelineRecord) (string, error) {
	b, err := json.Marshal(storedRecord{TimelineRecord: r, EmptyIssues: r.Issues != nil && len(r.Issues) == 0})
	return string(b), err
}

func decodeRecord(s string) (pipelines.TimelineRecord, error) {
	var r storedRecord
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return pipelines.TimelineRecord{}, err
	}
	if r.EmptyIssues && r.Issues == nil {
		r.Issues = []pipelines.Issue{}
	}
	return r.TimelineRecord, nil
}

// jobExists checks a job for the reporting methods.
func jobExists(ctx context.Context, q queryRower, requestID int64) error {
	var one int
	err := q.QueryRowContext(ctx, "SELECT 1 FROM jobs WHERE request_id = ?", requestID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return notFound("job request", requestID)
	}
	return err
}

// UpdateTimelineRecords implements Store.
func (s *SQLite) UpdateTimelineRecords(ctx context.Context, requestID int64, records []pipelines.TimelineRecord, now time.Time) ([]pipelines.TimelineRecord, error) {
	var out []pipelines.TimelineRecord
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		if err := jobExists(ctx, tx, requestID); err != nil {
			return err
		}
		var count, nextOrd int
		if err := tx.QueryRowContext(ctx, "SELECT count(*), coalesce(max(ord), 0) + 1 FROM timeline_records WHERE request_id = ?",
			requestID).Scan(&count, &nextOrd); err != nil {
			return err
		}
		type update struct {
			old pipelines.TimelineRecord
			has bool
		}
		// Read every record the update touches first, to check the limit
		// before writing anything.
		stored := map[string]update{}
		added := 0
		for _, rec := range records {
			key := strings.ToLower(rec.ID)
			if _, seen := stored[key]; seen {
				continue
			}
			var text string
			err := tx.QueryRowContext(ctx, "SELECT record FROM timeline_records WHERE request_id = ? AND record_key = ?", requestID, key).Scan(&text)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				stored[key] = update{}
				added++
			case err != nil:
				return err
			default:
				old, err := decodeRecord(text)
				if err != nil {
					return fmt.Errorf("timeline record %s of job request %d: %w", key, requestID, err)
				}
				stored[key] = update{old: old, has: true}
			}
		}
		if count+added > MaxTimelineRecords {
			return fmt.Errorf("more than %d timeline records: %w", MaxTimelineRecords, ErrTooLarge)
		}
		out = make([]pipelines.TimelineRecord, 0, len(records))
		for _, rec := range records {
			key := strings.ToLower(rec.ID)
			u := stored[key]
			merged := MergeTimelineRecord(u.old, rec, now)
			text, err := encodeRecord(merged)
			if err != nil {
				return err
			}
			if u.has {
				_, err = tx.ExecContext(ctx, "UPDATE timeline_records SET record = ? WHERE request_id = ? AND record_key = ?", text, requestID, key)
			} else {
				_, err = tx.ExecContext(ctx, "INSERT INTO timeline_records (request_id, record_key, ord, record) VALUES (?, ?, ?, ?)",
					requestID, key, nextOrd, text)
				nextOrd++
			}
			if err != nil {
				return err
			}
			stored[key] = update{old: merged, has: true}
			out = append(out, CloneTimelineRecord(merged))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListTimelineRecords implements Store.
func (s *SQLite) ListTimelineRecords(ctx context.Context, requestID int64) ([]pipelines.TimelineRecord, error) {
	if err := jobExists(ctx, s.r, requestID); err != nil {
		return nil, err
	}
	return queryAll(ctx, s.r, func(row rowScanner) (pipelines.TimelineRecord, error) {
		var text string
		if err := row.Scan(&text); err != nil {
			return pipelines.TimelineRecord{}, err
		}
		r, err := decodeRecord(text)
		if err != nil {
			return r, fmt.Errorf("timeline record of job request %d: %w", requestID, err)
		}
		return r, nil
	}, "SELECT record FROM timeline_records WHERE request_id = ? ORDER BY ord", requestID)
}

// AppendFeed implements Store.
func (s *SQLite) AppendFeed(ctx context.Context, requestID int64, lines []string) error {
	return s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		var n, size int
		err := tx.QueryRowContext(ctx, "SELECT feed_lines, feed_bytes FROM jobs WHERE request_id = ?", requestID).Scan(&n, &size)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("job request", requestID)
		} else if err != nil {
			return err
		}
		start := n
		for _, l := range lines {
			if n >= MaxFeedLines || size+len(l) > MaxLogBytesPerJob {
				break
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO feed_lines (request_id, seq, line) VALUES (?, ?, ?)", requestID, n, l); err != nil {
				return err
			}
			n++
			size += len(l)
		}
		if n == start {
			return nil
		}
		_, err = tx.ExecContext(ctx, "UPDATE jobs SET feed_lines = ?, feed_bytes = ? WHERE request_id = ?", n, size, requestID)
		return err
	})
}

// CreateLog implements Store.
func (s *SQLite) CreateLog(ctx context.Context, requestID int64, path string, now time.Time) (pipelines.TaskLog, error) {
	var id int
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		var n int
		err := tx.QueryRowContext(ctx, "SELECT log_count FROM jobs WHERE request_id = ?", requestID).Scan(&n)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("job request", requestID)
		} else if err != nil {
			return err
		}
		if n >= MaxLogsPerJob {
			return fmt.Errorf("more than %d logs: %w", MaxLogsPerJob, ErrTooLarge)
		}
		id = n + 1
		if _, err := tx.ExecContext(ctx, "INSERT INTO logs (request_id, log_id, path, created_on, last_changed_on) VALUES (?, ?, ?, ?, ?)",
			requestID, id, path, unixNano(now), unixNano(now)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "UPDATE jobs SET log_count = ? WHERE request_id = ?", id, requestID)
		return err
	})
	if err != nil {
		return pipelines.TaskLog{}, err
	}
	t := now.UTC()
	t2 := t
	return pipelines.TaskLog{ID: id, Path: path, CreatedOn: &t, LastChangedOn: &t2}, nil
}

// AppendLog implements Store.
func (s *SQLite) AppendLog(ctx context.Context, requestID int64, logID int, data []byte, now time.Time) (pipelines.TaskLog, error) {
	var l pipelines.TaskLog
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		var jobBytes int
		err := tx.QueryRowContext(ctx, "SELECT log_bytes FROM jobs WHERE request_id = ?", requestID).Scan(&jobBytes)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("job request", requestID)
		} else if err != nil {
			return err
		}
		var created int64
		err = tx.QueryRowContext(ctx, "SELECT path, line_count, created_on FROM logs WHERE request_id = ? AND log_id = ?",
			requestID, logID).Scan(&l.Path, &l.LineCount, &created)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("log", logID)
		} else if err != nil {
			return err
		}
		if jobBytes+len(data) > MaxLogBytesPerJob {
			return fmt.Errorf("job logs larger than %d bytes: %w", MaxLogBytesPerJob, ErrTooLarge)
		}
		for rest := data; len(rest) > 0; {
			chunk := rest[:min(len(rest), logChunk)]
			rest = rest[len(chunk):]
			if _, err := tx.ExecContext(ctx, "INSERT INTO log_chunks (request_id, log_id, data) VALUES (?, ?, ?)", requestID, logID, chunk); err != nil {
				return err
			}
		}
		l.ID = logID
		l.LineCount += int64(bytes.Count(data, []byte{'\n'}))
		t, c := now.UTC(), fromUnixNano(created)
		l.CreatedOn, l.LastChangedOn = &c, &t
		if _, err := tx.ExecContext(ctx, "UPDATE logs SET line_count = ?, bytes = bytes + ?, last_changed_on = ? WHERE request_id = ? AND log_id = ?",
			l.LineCount, len(data), unixNano(now), requestID, logID); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "UPDATE jobs SET log_bytes = log_bytes + ? WHERE request_id = ?", len(data), requestID)
		return err
	})
	if err != nil {
		return pipelines.TaskLog{}, err
	}
	return l, nil
}

// JobLog implements Store. It reads in one transaction so the log and the
// job's state agree.
func (s *SQLite) JobLog(ctx context.Context, requestID int64) ([]byte, error) {
	const (
		jobQuery = "SELECT finish_time, log_bytes, feed_lines FROM jobs WHERE request_id = ?"
		logQuery = `SELECT l.log_id, c.data FROM logs l JOIN log_chunks c USING (request_id, log_id)
			WHERE l.request_id = ? ORDER BY l.log_id, c.id`
		feedQuery = "SELECT line FROM feed_lines WHERE request_id = ? ORDER BY seq"
	)
	// Prepared before the transaction takes its connection (see txStmt).
	var stmts [3]*sql.Stmt
	for i, q := range []string{jobQuery, logQuery, feedQuery} {
		var err error
		if stmts[i], err = s.r.stmt(ctx, q); err != nil {
			return nil, err
		}
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	st, err := txStmt(ctx, tx, stmts[0], jobQuery)
	if err != nil {
		return nil, err
	}
	var finish, uploaded, feedLines int64
	err = st.QueryRowContext(ctx, requestID).Scan(&finish, &uploaded, &feedLines)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("job request", requestID)
	} else if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	// While the job runs, its step logs exist but are still empty or partial:
	// the live feed is the better view until the job finishes.
	if uploaded > 0 && (finish != 0 || feedLines == 0) {
		st, err := txStmt(ctx, tx, stmts[1], logQuery)
		if err != nil {
			return nil, err
		}
		rows, err := st.QueryContext(ctx, requestID)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		last := 0
		for rows.Next() {
			var id int
			var data []byte
			if err := rows.Scan(&id, &data); err != nil {
				return nil, err
			}
			if id != last {
				endLine(&buf)
				last = id
			}
			buf.Write(data)
		}
		endLine(&buf)
		return buf.Bytes(), rows.Err()
	}
	st, err = txStmt(ctx, tx, stmts[2], feedQuery)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, requestID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			return nil, err
		}
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	return buf.Bytes(), rows.Err()
}

// endLine ends the text in buf with a newline unless it is empty or does.
func endLine(buf *bytes.Buffer) {
	if b := buf.Bytes(); len(b) > 0 && b[len(b)-1] != '\n' {
		buf.WriteByte('\n')
	}
}

// ---- admin tokens ----

const adminTokenColumns = "id, name, hash, created_on, expires_at, revoked_at"

func scanAdminToken(row rowScanner) (AdminToken, error) {
	var t AdminToken
	var created, expires, revoked int64
	if err := row.Scan(&t.ID, &t.Name, &t.Hash, &created, &expires, &revoked); err != nil {
		return AdminToken{}, err
	}
	t.CreatedOn, t.ExpiresAt, t.RevokedAt = fromUnixNano(created), fromUnixNano(expires), fromUnixNano(revoked)
	return t, nil
}

// CreateAdminToken implements Store.
func (s *SQLite) CreateAdminToken(ctx context.Context, t AdminToken) (AdminToken, error) {
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO admin_tokens (name, name_key, hash, created_on, expires_at, revoked_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING id`, t.Name, foldKey(t.Name), t.Hash, unixNano(t.CreatedOn),
			unixNano(t.ExpiresAt), unixNano(t.RevokedAt)).Scan(&t.ID)
		if isConstraint(err) {
			return fmt.Errorf("admin token %q: %w", t.Name, ErrExists)
		}
		return err
	})
	if err != nil {
		return AdminToken{}, err
	}
	return t, nil
}

// GetAdminTokenByHash implements Store.
func (s *SQLite) GetAdminTokenByHash(ctx context.Context, hash string) (AdminToken, error) {
	t, err := scanAdminToken(s.r.QueryRowContext(ctx, "SELECT "+adminTokenColumns+" FROM admin_tokens WHERE hash = ?", hash))
	if errors.Is(err, sql.ErrNoRows) || hash == "" {
		return AdminToken{}, notFound("admin token", "")
	}
	return t, err
}

// ListAdminTokens implements Store.
func (s *SQLite) ListAdminTokens(ctx context.Context) ([]AdminToken, error) {
	return queryAll(ctx, s.r, scanAdminToken, "SELECT "+adminTokenColumns+" FROM admin_tokens ORDER BY id")
}

// RevokeAdminToken implements Store.
func (s *SQLite) RevokeAdminToken(ctx context.Context, id int64, now time.Time) (AdminToken, error) {
	var t AdminToken
	err := s.w.do(ctx, func(ctx context.Context, tx writeTx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE admin_tokens SET revoked_at = ? WHERE id = ? AND revoked_at = 0", unixNano(now), id); err != nil {
			return err
		}
		var err error
		t, err = scanAdminToken(tx.QueryRowContext(ctx, "SELECT "+adminTokenColumns+" FROM admin_tokens WHERE id = ?", id))
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("admin token", id)
		}
		return err
	})
	return t, err
}
