package store

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

// Memory is a Store that keeps everything in process memory: state is lost
// when the server stops. One mutex guards it all, which makes every method
// trivially atomic. Values are copied in and out.
type Memory struct {
	mu sync.Mutex

	nextPool    int
	nextAgent   int
	nextJob     int64
	nextMessage int64

	nextAdminToken int64
	adminTokens    []AdminToken // by ID

	pools     map[int]Pool
	agents    map[int]Agent
	tokens    map[string]ListenerToken
	sessions  map[string]Session
	jobs      map[int64]Job
	messages  map[int64]Message
	reporting map[int64]*jobReport
}

// jobReport is what the agent reported about one job.
type jobReport struct {
	records   map[string]pipelines.TimelineRecord
	order     []string // record ids in the order first seen
	feed      []string
	logs      []memLog
	logBytes  int
	feedBytes int
}

type memLog struct {
	info pipelines.TaskLog
	data []byte
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{
		pools:     map[int]Pool{},
		agents:    map[int]Agent{},
		tokens:    map[string]ListenerToken{},
		sessions:  map[string]Session{},
		jobs:      map[int64]Job{},
		messages:  map[int64]Message{},
		reporting: map[int64]*jobReport{},
	}
}

var _ Store = (*Memory)(nil)

func notFound(what string, id any) error { return fmt.Errorf("%s %v: %w", what, id, ErrNotFound) }

// ---- pools ----

// CreatePool implements Store.
func (m *Memory) CreatePool(_ context.Context, name string, now time.Time) (Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.pools {
		if strings.EqualFold(p.Name, name) {
			return Pool{}, fmt.Errorf("pool %q: %w", name, ErrExists)
		}
	}
	m.nextPool++
	p := Pool{ID: m.nextPool, Name: name, CreatedOn: now}
	m.pools[p.ID] = p
	return p, nil
}

// GetPool implements Store.
func (m *Memory) GetPool(_ context.Context, id int) (Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pools[id]
	if !ok {
		return Pool{}, notFound("pool", id)
	}
	return p, nil
}

// ListPools implements Store.
func (m *Memory) ListPools(_ context.Context) ([]Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Collect(maps.Values(m.pools))
	slices.SortFunc(out, func(a, b Pool) int { return a.ID - b.ID })
	return out, nil
}

// ---- agents ----

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return nil
	}
	return maps.Clone(m)
}

func cloneAgent(a Agent) Agent {
	a.PublicKey.Exponent = bytes.Clone(a.PublicKey.Exponent)
	a.PublicKey.Modulus = bytes.Clone(a.PublicKey.Modulus)
	a.SystemCapabilities = cloneMap(a.SystemCapabilities)
	a.UserCapabilities = cloneMap(a.UserCapabilities)
	return a
}

// CreateAgent implements Store.
func (m *Memory) CreateAgent(_ context.Context, a Agent) (Agent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.pools[a.PoolID]; !ok {
		return Agent{}, notFound("pool", a.PoolID)
	}
	for _, o := range m.agents {
		if o.PoolID == a.PoolID && strings.EqualFold(o.Name, a.Name) {
			return Agent{}, fmt.Errorf("agent %q: %w", a.Name, ErrExists)
		}
		if a.ClientID != "" && o.ClientID == a.ClientID {
			return Agent{}, fmt.Errorf("agent client id: %w", ErrExists)
		}
	}
	m.nextAgent++
	a = cloneAgent(a)
	a.ID = m.nextAgent
	a.RequestID = 0
	m.agents[a.ID] = a
	return cloneAgent(a), nil
}

// ReplaceAgent implements Store.
func (m *Memory) ReplaceAgent(_ context.Context, a Agent) (Agent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.agents[a.ID]
	if !ok {
		return Agent{}, notFound("agent", a.ID)
	}
	for _, o := range m.agents {
		if o.ID != a.ID && o.PoolID == old.PoolID && strings.EqualFold(o.Name, a.Name) {
			return Agent{}, fmt.Errorf("agent %q: %w", a.Name, ErrExists)
		}
	}
	a = cloneAgent(a)
	a.PoolID, a.ClientID, a.AuthorizationURL = old.PoolID, old.ClientID, old.AuthorizationURL
	a.CreatedOn, a.RequestID = old.CreatedOn, old.RequestID
	m.agents[a.ID] = a
	return cloneAgent(a), nil
}

// SetSystemCapabilities implements Store.
func (m *Memory) SetSystemCapabilities(_ context.Context, agentID int, caps map[string]string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.agents[agentID]
	if !ok {
		return notFound("agent", agentID)
	}
	a.SystemCapabilities = cloneMap(caps)
	m.agents[agentID] = a
	return nil
}

// GetAgent implements Store.
func (m *Memory) GetAgent(_ context.Context, id int) (Agent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.agents[id]
	if !ok {
		return Agent{}, notFound("agent", id)
	}
	return cloneAgent(a), nil
}

// GetAgentByClientID implements Store.
func (m *Memory) GetAgentByClientID(_ context.Context, clientID string) (Agent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range m.agents {
		if a.ClientID != "" && strings.EqualFold(a.ClientID, clientID) {
			return cloneAgent(a), nil
		}
	}
	return Agent{}, notFound("agent with client id", clientID)
}

// ListAgents implements Store.
func (m *Memory) ListAgents(_ context.Context, poolID int) ([]Agent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []Agent{}
	for _, a := range m.agents {
		if a.PoolID == poolID {
			out = append(out, cloneAgent(a))
		}
	}
	slices.SortFunc(out, func(a, b Agent) int { return a.ID - b.ID })
	return out, nil
}

// CountAgents implements Store.
func (m *Memory) CountAgents(_ context.Context, poolID int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, a := range m.agents {
		if a.PoolID == poolID {
			n++
		}
	}
	return n, nil
}

// DeleteAgent implements Store.
func (m *Memory) DeleteAgent(_ context.Context, id int, now time.Time) (AgentDeletion, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.agents[id]
	if !ok {
		return AgentDeletion{}, notFound("agent", id)
	}
	d := AgentDeletion{Held: a.RequestID}
	if j, ok := m.jobs[a.RequestID]; ok && !j.Finished() {
		if j = m.takeBack(j, now); j.Finished() {
			d.Abandoned = j.RequestID
		} else {
			d.Requeued = j.RequestID
		}
	}
	delete(m.agents, id)
	maps.DeleteFunc(m.tokens, func(_ string, t ListenerToken) bool { return t.AgentID == id })
	maps.DeleteFunc(m.sessions, func(_ string, s Session) bool { return s.AgentID == id })
	maps.DeleteFunc(m.messages, func(_ int64, msg Message) bool { return msg.AgentID == id })
	return d, nil
}

// takeBack requeues a job its agent will not run, or abandons it when the
// agent had started it or it has had MaxJobAttempts attempts. m.mu is held.
func (m *Memory) takeBack(j Job, now time.Time) Job {
	maps.DeleteFunc(m.messages, func(_ int64, msg Message) bool { return msg.RequestID == j.RequestID })
	if j.StartTime.IsZero() {
		// The agent never ran it: it may take a job again.
		if a, ok := m.agents[j.AgentID]; ok && a.RequestID == j.RequestID {
			a.RequestID = 0
			m.agents[a.ID] = a
		}
	}
	if !j.StartTime.IsZero() || j.Attempts >= MaxJobAttempts {
		j.FinishTime, j.Result = now, pipelines.ResultAbandoned
	} else {
		j.AssignTime, j.ReceiveTime, j.LockedUntil = time.Time{}, time.Time{}, time.Time{}
		j.AgentID, j.AgentName, j.TokenHash = 0, "", ""
	}
	m.jobs[j.RequestID] = j
	return j
}

// ---- listener tokens ----

// PutListenerToken implements Store.
func (m *Memory) PutListenerToken(_ context.Context, t ListenerToken, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.agents[t.AgentID]; !ok {
		return notFound("agent", t.AgentID)
	}
	maps.DeleteFunc(m.tokens, func(_ string, o ListenerToken) bool {
		return o.AgentID == t.AgentID && !o.ExpiresAt.After(now)
	})
	m.tokens[t.Hash] = t
	return nil
}

// GetListenerToken implements Store.
func (m *Memory) GetListenerToken(_ context.Context, hash string) (ListenerToken, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[hash]
	if !ok {
		return ListenerToken{}, notFound("listener token", "")
	}
	return t, nil
}

// DeleteListenerTokens implements Store.
func (m *Memory) DeleteListenerTokens(_ context.Context, agentID int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	maps.DeleteFunc(m.tokens, func(_ string, t ListenerToken) bool { return t.AgentID == agentID })
	return nil
}

// ---- sessions ----

func cloneSession(s Session) Session {
	s.Key = bytes.Clone(s.Key)
	return s
}

// CreateSession implements Store.
func (m *Memory) CreateSession(_ context.Context, s Session, staleBefore time.Time) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.agents[s.AgentID]; !ok {
		return Session{}, notFound("agent", s.AgentID)
	}
	if _, ok := m.sessions[s.ID]; ok {
		return Session{}, fmt.Errorf("session %s: %w", s.ID, ErrExists)
	}
	for _, o := range m.sessions {
		if o.AgentID == s.AgentID && !o.LastSeen.Before(staleBefore) {
			return Session{}, fmt.Errorf("agent %d has a live session: %w", s.AgentID, ErrConflict)
		}
	}
	maps.DeleteFunc(m.sessions, func(_ string, o Session) bool { return o.AgentID == s.AgentID })
	s = cloneSession(s)
	m.sessions[s.ID] = s
	return cloneSession(s), nil
}

// GetSession implements Store.
func (m *Memory) GetSession(_ context.Context, id string) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return Session{}, notFound("session", id)
	}
	return cloneSession(s), nil
}

// GetAgentSession implements Store.
func (m *Memory) GetAgentSession(_ context.Context, agentID int) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sessions {
		if s.AgentID == agentID {
			return cloneSession(s), nil
		}
	}
	return Session{}, notFound("session of agent", agentID)
}

// TouchSession implements Store.
func (m *Memory) TouchSession(_ context.Context, id string, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return notFound("session", id)
	}
	if now.After(s.LastSeen) {
		s.LastSeen = now
	}
	m.sessions[id] = s
	return nil
}

// DeleteSession implements Store.
func (m *Memory) DeleteSession(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.sessions[id]; !ok {
		return notFound("session", id)
	}
	delete(m.sessions, id)
	return nil
}

// ---- jobs ----

func cloneJob(j Job) Job {
	j.Spec = cloneSpec(j.Spec)
	return j
}

func cloneSpec(s jobapi.JobSpec) jobapi.JobSpec {
	s.Steps = slices.Clone(s.Steps)
	s.Demands = slices.Clone(s.Demands)
	s.Variables = cloneMap(s.Variables)
	return s
}

// CreateJob implements Store.
func (m *Memory) CreateJob(_ context.Context, j Job) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.pools[j.PoolID]; !ok {
		return Job{}, notFound("pool", j.PoolID)
	}
	m.nextJob++
	j = cloneJob(j)
	j.RequestID = m.nextJob
	m.jobs[j.RequestID] = j
	return cloneJob(j), nil
}

// GetJob implements Store.
func (m *Memory) GetJob(_ context.Context, requestID int64) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[requestID]
	if !ok {
		return Job{}, notFound("job request", requestID)
	}
	return cloneJob(j), nil
}

// GetJobByTokenHash implements Store.
func (m *Memory) GetJobByTokenHash(_ context.Context, hash string) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if hash == "" {
		return Job{}, notFound("job token", "")
	}
	for _, j := range m.jobs {
		if j.TokenHash == hash {
			return cloneJob(j), nil
		}
	}
	return Job{}, notFound("job token", "")
}

// ListJobs implements Store.
func (m *Memory) ListJobs(_ context.Context, f JobFilter) ([]Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	held := map[int64]bool{}
	if f.OrHeld {
		for _, a := range m.agents {
			if a.RequestID != 0 {
				held[a.RequestID] = true
			}
		}
	}
	out := []Job{}
	var finished []Job // the unselected finished ones, for f.Finished
	for _, j := range m.jobs {
		queued := j.AssignTime.IsZero() && !j.Finished()
		if f.PoolID != 0 && j.PoolID != f.PoolID || f.Queued && !queued {
			continue
		}
		if f.Unfinished && j.Finished() && !held[j.RequestID] {
			finished = append(finished, j)
			continue
		}
		out = append(out, j)
	}
	if f.Unfinished && f.Finished > 0 {
		// The latest finished: held ones already in out count among them.
		for _, j := range out {
			if j.Finished() {
				finished = append(finished, j)
			}
		}
		slices.SortFunc(finished, func(a, b Job) int { return int(b.RequestID - a.RequestID) })
		for _, j := range finished[:min(f.Finished, len(finished))] {
			if !held[j.RequestID] {
				out = append(out, j)
			}
		}
	}
	for i, j := range out {
		out[i] = cloneJob(j)
		if f.Brief {
			out[i].Spec = jobapi.JobSpec{Demands: out[i].Spec.Demands}
		}
	}
	slices.SortFunc(out, func(a, b Job) int { return int(a.RequestID - b.RequestID) })
	return out, nil
}

// AssignJob implements Store.
func (m *Memory) AssignJob(_ context.Context, a Assignment) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[a.RequestID]
	if !ok {
		return Job{}, notFound("job request", a.RequestID)
	}
	ag, ok := m.agents[a.AgentID]
	if !ok {
		return Job{}, notFound("agent", a.AgentID)
	}
	if !j.AssignTime.IsZero() || j.Finished() {
		return Job{}, fmt.Errorf("job request %d is no longer queued: %w", j.RequestID, ErrConflict)
	}
	if ag.RequestID != 0 {
		return Job{}, fmt.Errorf("agent %d already took job request %d: %w", ag.ID, ag.RequestID, ErrConflict)
	}
	if ag.PoolID != j.PoolID {
		return Job{}, fmt.Errorf("agent %d is not in pool %d: %w", ag.ID, j.PoolID, ErrConflict)
	}
	j.AssignTime, j.LockedUntil = a.Now, a.LockedUntil
	j.AgentID, j.AgentName, j.TokenHash = ag.ID, ag.Name, a.TokenHash
	j.Attempts++
	m.jobs[j.RequestID] = j
	ag.RequestID = j.RequestID
	m.agents[ag.ID] = ag
	m.nextMessage++
	m.messages[m.nextMessage] = Message{
		ID: m.nextMessage, AgentID: ag.ID, Type: a.MessageType, Body: bytes.Clone(a.MessageBody), RequestID: j.RequestID,
	}
	return cloneJob(j), nil
}

// RenewJob implements Store.
func (m *Memory) RenewJob(_ context.Context, requestID int64, agentID int, lockedUntil, now time.Time) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[requestID]
	if !ok || j.AgentID != agentID || agentID == 0 {
		return Job{}, notFound("job request", requestID)
	}
	if j.Finished() {
		return cloneJob(j), nil
	}
	if j.StartTime.IsZero() {
		j.StartTime = now
	}
	if j.ReceiveTime.IsZero() {
		// The agent cannot renew a job it never received.
		j.ReceiveTime = now
	}
	j.LockedUntil = lockedUntil
	m.jobs[requestID] = j
	return cloneJob(j), nil
}

// FinishJob implements Store.
func (m *Memory) FinishJob(_ context.Context, requestID int64, result pipelines.TaskResult, now time.Time) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[requestID]
	if !ok {
		return Job{}, notFound("job request", requestID)
	}
	if j.Finished() {
		return cloneJob(j), fmt.Errorf("job request %d already finished: %w", requestID, ErrConflict)
	}
	j.FinishTime, j.Result = now, result
	m.jobs[requestID] = j
	// A job that finishes leaves nothing for its agent to pick up.
	maps.DeleteFunc(m.messages, func(_ int64, msg Message) bool { return msg.RequestID == requestID })
	return cloneJob(j), nil
}

// CancelJob implements Store.
func (m *Memory) CancelJob(_ context.Context, requestID int64, cancel Message, now time.Time) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[requestID]
	if !ok {
		return Job{}, notFound("job request", requestID)
	}
	if j.Finished() {
		return cloneJob(j), fmt.Errorf("job request %d already finished: %w", requestID, ErrConflict)
	}
	if j.StartTime.IsZero() {
		j.FinishTime, j.Result = now, pipelines.ResultCanceled
		maps.DeleteFunc(m.messages, func(_ int64, msg Message) bool { return msg.RequestID == requestID })
		m.jobs[requestID] = j
		return cloneJob(j), nil
	}
	if j.CancelTime.IsZero() {
		j.CancelTime = now
		m.jobs[requestID] = j
		m.nextMessage++
		m.messages[m.nextMessage] = Message{
			ID: m.nextMessage, AgentID: j.AgentID, Type: cancel.Type, Body: bytes.Clone(cancel.Body), RequestID: requestID,
		}
	}
	return cloneJob(j), nil
}

// RequeueJob implements Store.
func (m *Memory) RequeueJob(_ context.Context, requestID int64, agentID int, now time.Time) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[requestID]
	if !ok {
		return Job{}, notFound("job request", requestID)
	}
	if j.Finished() || j.AgentID != agentID || agentID == 0 || !j.StartTime.IsZero() {
		return cloneJob(j), fmt.Errorf("job request %d is not an unstarted job of agent %d: %w", requestID, agentID, ErrConflict)
	}
	return cloneJob(m.takeBack(j, now)), nil
}

// ---- messages ----

// NextMessage implements Store.
func (m *Memory) NextMessage(_ context.Context, agentID int, now time.Time) (Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next Message
	for _, msg := range m.messages {
		if msg.AgentID == agentID && (next.ID == 0 || msg.ID < next.ID) {
			next = msg
		}
	}
	if next.ID == 0 {
		return Message{}, notFound("message for agent", agentID)
	}
	if j, ok := m.jobs[next.RequestID]; ok && j.ReceiveTime.IsZero() {
		j.ReceiveTime = now
		m.jobs[j.RequestID] = j
	}
	next.Body = bytes.Clone(next.Body)
	return next, nil
}

// DeleteMessage implements Store.
func (m *Memory) DeleteMessage(_ context.Context, agentID int, messageID int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if msg, ok := m.messages[messageID]; ok && msg.AgentID == agentID {
		delete(m.messages, messageID)
	}
	return nil
}

// ---- reporting ----

func (m *Memory) report(requestID int64) (*jobReport, error) {
	if _, ok := m.jobs[requestID]; !ok {
		return nil, notFound("job request", requestID)
	}
	r := m.reporting[requestID]
	if r == nil {
		r = &jobReport{records: map[string]pipelines.TimelineRecord{}}
		m.reporting[requestID] = r
	}
	return r, nil
}

// UpdateTimelineRecords implements Store.
func (m *Memory) UpdateTimelineRecords(_ context.Context, requestID int64, records []pipelines.TimelineRecord, now time.Time) ([]pipelines.TimelineRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.report(requestID)
	if err != nil {
		return nil, err
	}
	added := 0
	for _, rec := range records {
		if _, ok := r.records[strings.ToLower(rec.ID)]; !ok {
			added++
		}
	}
	if len(r.records)+added > MaxTimelineRecords {
		return nil, fmt.Errorf("more than %d timeline records: %w", MaxTimelineRecords, ErrTooLarge)
	}
	out := make([]pipelines.TimelineRecord, 0, len(records))
	for _, rec := range records {
		key := strings.ToLower(rec.ID)
		old, ok := r.records[key]
		if !ok {
			r.order = append(r.order, key)
		}
		merged := MergeTimelineRecord(old, rec, now)
		r.records[key] = merged
		out = append(out, CloneTimelineRecord(merged))
	}
	return out, nil
}

// ListTimelineRecords implements Store.
func (m *Memory) ListTimelineRecords(_ context.Context, requestID int64) ([]pipelines.TimelineRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.report(requestID)
	if err != nil {
		return nil, err
	}
	out := make([]pipelines.TimelineRecord, 0, len(r.order))
	for _, key := range r.order {
		out = append(out, CloneTimelineRecord(r.records[key]))
	}
	return out, nil
}

// AppendFeed implements Store.
func (m *Memory) AppendFeed(_ context.Context, requestID int64, lines []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.report(requestID)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if len(r.feed) >= MaxFeedLines || r.feedBytes+len(l) > MaxLogBytesPerJob {
			break
		}
		r.feed = append(r.feed, l)
		r.feedBytes += len(l)
	}
	return nil
}

// CreateLog implements Store.
func (m *Memory) CreateLog(_ context.Context, requestID int64, path string, now time.Time) (pipelines.TaskLog, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.report(requestID)
	if err != nil {
		return pipelines.TaskLog{}, err
	}
	if len(r.logs) >= MaxLogsPerJob {
		return pipelines.TaskLog{}, fmt.Errorf("more than %d logs: %w", MaxLogsPerJob, ErrTooLarge)
	}
	t := now.UTC()
	l := memLog{info: pipelines.TaskLog{ID: len(r.logs) + 1, Path: path, CreatedOn: &t, LastChangedOn: &t}}
	r.logs = append(r.logs, l)
	return cloneTaskLog(l.info), nil
}

func cloneTaskLog(l pipelines.TaskLog) pipelines.TaskLog {
	l.CreatedOn = clonePtr(l.CreatedOn)
	l.LastChangedOn = clonePtr(l.LastChangedOn)
	return l
}

// AppendLog implements Store.
func (m *Memory) AppendLog(_ context.Context, requestID int64, logID int, data []byte, now time.Time) (pipelines.TaskLog, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.report(requestID)
	if err != nil {
		return pipelines.TaskLog{}, err
	}
	if logID < 1 || logID > len(r.logs) {
		return pipelines.TaskLog{}, notFound("log", logID)
	}
	if r.logBytes+len(data) > MaxLogBytesPerJob {
		return pipelines.TaskLog{}, fmt.Errorf("job logs larger than %d bytes: %w", MaxLogBytesPerJob, ErrTooLarge)
	}
	l := &r.logs[logID-1]
	l.data = append(l.data, data...)
	r.logBytes += len(data)
	l.info.LineCount += int64(bytes.Count(data, []byte{'\n'}))
	t := now.UTC()
	l.info.LastChangedOn = &t
	return cloneTaskLog(l.info), nil
}

// JobLog implements Store.
func (m *Memory) JobLog(_ context.Context, requestID int64) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.report(requestID)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	// While the job runs, its step logs exist but are still empty or partial:
	// the live feed is the better view until the job finishes.
	uploaded := 0
	for _, l := range r.logs {
		uploaded += len(l.data)
	}
	if uploaded > 0 && (m.jobs[requestID].Finished() || len(r.feed) == 0) {
		for _, l := range r.logs {
			buf.Write(l.data)
			if len(l.data) > 0 && l.data[len(l.data)-1] != '\n' {
				buf.WriteByte('\n')
			}
		}
		return buf.Bytes(), nil
	}
	for _, l := range r.feed {
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}

// ---- admin tokens ----

// CreateAdminToken implements Store.
func (m *Memory) CreateAdminToken(_ context.Context, t AdminToken) (AdminToken, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.adminTokens {
		if o.Hash == t.Hash {
			return AdminToken{}, fmt.Errorf("admin token hash: %w", ErrExists)
		}
		if !o.Revoked() && strings.EqualFold(o.Name, t.Name) {
			return AdminToken{}, fmt.Errorf("admin token %q: %w", t.Name, ErrExists)
		}
	}
	m.nextAdminToken++
	t.ID = m.nextAdminToken
	m.adminTokens = append(m.adminTokens, t)
	return t, nil
}

// GetAdminTokenByHash implements Store.
func (m *Memory) GetAdminTokenByHash(_ context.Context, hash string) (AdminToken, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.adminTokens {
		if hash != "" && t.Hash == hash {
			return t, nil
		}
	}
	return AdminToken{}, notFound("admin token", "")
}

// ListAdminTokens implements Store.
func (m *Memory) ListAdminTokens(_ context.Context) ([]AdminToken, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]AdminToken{}, m.adminTokens...), nil
}

// RevokeAdminToken implements Store.
func (m *Memory) RevokeAdminToken(_ context.Context, id int64, now time.Time) (AdminToken, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, t := range m.adminTokens {
		if t.ID == id {
			if !t.Revoked() {
				m.adminTokens[i].RevokedAt = now
			}
			return m.adminTokens[i], nil
		}
	}
	return AdminToken{}, notFound("admin token", id)
}
