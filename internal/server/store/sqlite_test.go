package store_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "modernc.org/sqlite"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"

	"github.com/agentry-dev/agentry/internal/server/store"
	"github.com/agentry-dev/agentry/internal/server/store/storetest"
)

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return store.OpenSQLite(t, filepath.Join(t.TempDir(), "agentry.db"))
	})
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// state is everything a store holds about one agent and its job, read back
// through the Store interface.
type state struct {
	Pools    []store.Pool
	Agents   []store.Agent
	Session  store.Session
	Token    store.ListenerToken
	Jobs     []store.Job
	Records  []pipelines.TimelineRecord
	Log      string
	Messages []store.Message
	Admin    []store.AdminToken
}

func readState(t *testing.T, s store.Store, poolID, agentID, waitingAgentID int, requestID int64) state {
	t.Helper()
	ctx := context.Background()
	var st state
	// First: delivering the message marks its job received.
	st.Messages = []store.Message{must[store.Message](t)(s.NextMessage(ctx, waitingAgentID, t0))}
	st.Pools = must[[]store.Pool](t)(s.ListPools(ctx))
	st.Agents = must[[]store.Agent](t)(s.ListAgents(ctx, poolID))
	st.Session = must[store.Session](t)(s.GetAgentSession(ctx, agentID))
	st.Token = must[store.ListenerToken](t)(s.GetListenerToken(ctx, "listener-hash"))
	st.Jobs = must[[]store.Job](t)(s.ListJobs(ctx, store.JobFilter{}))
	st.Records = must[[]pipelines.TimelineRecord](t)(s.ListTimelineRecords(ctx, requestID))
	st.Log = string(must[[]byte](t)(s.JobLog(ctx, requestID)))
	st.Admin = must[[]store.AdminToken](t)(s.ListAdminTokens(ctx))
	return st
}

// TestSQLiteReopen fills a store, closes it, opens the file again and reads
// back the same state: what a server restart must keep.
func TestSQLiteReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agentry.db")
	s, err := store.NewSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	p := must[store.Pool](t)(s.CreatePool(ctx, "default", t0))
	a := must[store.Agent](t)(s.CreateAgent(ctx, store.Agent{
		PoolID: p.ID, Name: "agent-1", ClientID: "c1", Enabled: true, MaxParallelism: 1, Version: "4.255.0",
		PublicKey:          agentcrypto.PublicKey{Exponent: []byte{1, 0, 1}, Modulus: []byte{0xAB, 0xCD}},
		SystemCapabilities: map[string]string{"Agent.OS": "Linux"}, UserCapabilities: map[string]string{},
		CreatedOn: t0,
	}))
	must[store.Session](t)(s.CreateSession(ctx, store.Session{ID: "s1", AgentID: a.ID, PoolID: p.ID, Key: []byte("0123456789abcdef0123456789abcdef"), LastSeen: t0, CreatedOn: t0}, t0))
	if err := s.PutListenerToken(ctx, store.ListenerToken{Hash: "listener-hash", AgentID: a.ID, ExpiresAt: t0.Add(time.Hour)}, t0); err != nil {
		t.Fatal(err)
	}
	spec := jobapi.JobSpec{Pool: "default", Name: "build", Steps: []jobapi.Step{{Task: jobapi.TaskBash, Script: "make"}},
		Demands: []string{"Agent.OS -equals Linux"}, Variables: map[string]pipelines.VariableValue{"x": {Value: "1"}}}
	j := must[store.Job](t)(s.CreateJob(ctx, store.Job{PoolID: p.ID, PoolName: "default", JobID: "j", PlanID: "p", TimelineID: "tl", Name: "build", Spec: spec, QueueTime: t0}))
	must[store.Job](t)(s.CreateJob(ctx, store.Job{PoolID: p.ID, PoolName: "default", JobID: "j2", Name: "queued", Spec: spec, QueueTime: t0}))
	must[store.Job](t)(s.AssignJob(ctx, store.Assignment{RequestID: j.RequestID, AgentID: a.ID, TokenHash: "job-hash",
		LockedUntil: t0.Add(10 * time.Minute), MessageType: pipelines.MessageTypeJobRequest, MessageBody: []byte(`{"a":1}`), Now: t0}))
	must[store.Job](t)(s.RenewJob(ctx, j.RequestID, a.ID, t0.Add(11*time.Minute), t0.Add(time.Minute)))
	state := pipelines.StateCompleted
	must[[]pipelines.TimelineRecord](t)(s.UpdateTimelineRecords(ctx, j.RequestID, []pipelines.TimelineRecord{{ID: "job", Name: "Job", State: &state, Issues: []pipelines.Issue{}}}, t0))
	if err := s.AppendFeed(ctx, j.RequestID, []string{"live"}); err != nil {
		t.Fatal(err)
	}
	l := must[pipelines.TaskLog](t)(s.CreateLog(ctx, j.RequestID, "logs/1", t0))
	must[pipelines.TaskLog](t)(s.AppendLog(ctx, j.RequestID, l.ID, []byte("line one\nline two\n"), t0))
	must[store.Job](t)(s.FinishJob(ctx, j.RequestID, pipelines.ResultSucceeded, t0.Add(2*time.Minute)))
	must[store.AdminToken](t)(s.CreateAdminToken(ctx, store.AdminToken{Name: "ci", Hash: "admin-hash", CreatedOn: t0, ExpiresAt: t0.Add(time.Hour)}))
	// A job message not yet acknowledged survives too.
	k := must[store.Job](t)(s.CreateJob(ctx, store.Job{PoolID: p.ID, PoolName: "default", JobID: "j3", Spec: spec, QueueTime: t0}))
	b := must[store.Agent](t)(s.CreateAgent(ctx, store.Agent{PoolID: p.ID, Name: "agent-2", ClientID: "c2"}))
	must[store.Job](t)(s.AssignJob(ctx, store.Assignment{RequestID: k.RequestID, AgentID: b.ID, TokenHash: "job-hash-2",
		LockedUntil: t0.Add(10 * time.Minute), MessageType: pipelines.MessageTypeJobRequest, MessageBody: []byte(`{"b":2}`), Now: t0}))

	before := readState(t, s, p.ID, a.ID, b.ID, j.RequestID)
	if before.Log != "line one\nline two\n" || len(before.Jobs) != 3 || before.Jobs[0].Result != pipelines.ResultSucceeded {
		t.Fatalf("state before the restart is not what was written: %+v", before)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := store.OpenSQLite(t, path)
	after := readState(t, s2, p.ID, a.ID, b.ID, j.RequestID)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("state after reopening (-before +after):\n%s", diff)
	}
	// Ids keep counting where they were.
	c := must[store.Agent](t)(s2.CreateAgent(ctx, store.Agent{PoolID: p.ID, Name: "agent-3", ClientID: "c3"}))
	if c.ID <= b.ID {
		t.Errorf("agent created after reopening got id %d, want more than %d", c.ID, b.ID)
	}
}

// TestSQLiteSchema checks the database the store leaves on disk: WAL mode,
// the applied migration recorded once however often it is opened, and a
// database from a newer agentry-server refused rather than misread.
func TestSQLiteSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentry.db")
	for range 2 {
		s, err := store.NewSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
	var versions, latest int
	if err := db.QueryRow("SELECT count(*), max(version) FROM schema_migrations").Scan(&versions, &latest); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("migrations/*.sql")
	if versions != len(files) || versions == 0 {
		t.Errorf("schema_migrations has %d rows after opening twice, want one per migration file (%d)", versions, len(files))
	}
	if _, err := db.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future.sql', 0)", latest+1); err != nil {
		t.Fatal(err)
	}
	if s, err := store.NewSQLite(path); err == nil || !strings.Contains(err.Error(), "newer agentry-server") {
		if s != nil {
			s.Close()
		}
		t.Errorf("opening a database of a newer schema: got %v, want it refused", err)
	}
}

// TestSQLiteBackup takes an online backup while the store is open; the copy
// opens as a store with the same data.
func TestSQLiteBackup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := store.OpenSQLite(t, filepath.Join(dir, "agentry.db"))
	p := must[store.Pool](t)(s.CreatePool(ctx, "default", t0))
	must[store.Job](t)(s.CreateJob(ctx, store.Job{PoolID: p.ID, PoolName: "default", JobID: "j", QueueTime: t0}))
	backup := filepath.Join(dir, "backup.db")
	if err := s.Backup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	b := store.OpenSQLite(t, backup)
	jobs := must[[]store.Job](t)(b.ListJobs(ctx, store.JobFilter{}))
	if len(jobs) != 1 || jobs[0].JobID != "j" {
		t.Errorf("backup holds jobs %+v, want the one job", jobs)
	}
}

// TestSQLiteMigrationFillsDemands opens a database written before jobs had
// a demands column: the migration copies each job's demands out of its
// spec, so brief lists of old jobs match agents as the full ones do.
func TestSQLiteMigrationFillsDemands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentry.db")
	initial, err := os.ReadFile("migrations/0001_initial.sql")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		string(initial),
		"CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
		"INSERT INTO schema_migrations VALUES (1, '0001_initial.sql', 0)",
		"INSERT INTO pools (name, name_key, created_on) VALUES ('default', 'default', 0)",
		`INSERT INTO jobs (pool_id, pool_name, job_id, plan_id, timeline_id, name, spec, queue_time) VALUES
			(1, 'default', 'a', 'p', 't', 'with', '{"pool":"default","demands":["docker","Agent.OS -equals Linux"],"steps":[{"script":"x"}]}', 1),
			(1, 'default', 'b', 'p', 't', 'without', '{"pool":"default","steps":[{"script":"x"}]}', 1)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("writing a schema 1 database: %v", err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s := store.OpenSQLite(t, path)
	jobs := must[[]store.Job](t)(s.ListJobs(context.Background(), store.JobFilter{PoolID: 1, Queued: true, Brief: true}))
	var got [][]string
	for _, j := range jobs {
		got = append(got, j.Spec.Demands)
	}
	if diff := cmp.Diff([][]string{{"docker", "Agent.OS -equals Linux"}, nil}, got); diff != "" {
		t.Errorf("demands of the migrated jobs (-want +got):\n%s", diff)
	}
}
