package pipelines

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// APIVersion is the api-version every call asks for.
const APIVersion = "7.1-preview.1"

// Authorizer adds a credential to a request.
type Authorizer interface {
	Authorize(req *http.Request)
}

// BearerToken authorizes with an OAuth bearer token.
type BearerToken string

// Authorize implements Authorizer.
func (t BearerToken) Authorize(req *http.Request) {
	req.Header.Set("Authorization", "Bearer "+string(t))
}

// PersonalAccessToken authorizes with a PAT as HTTP Basic with an empty user,
// as Azure DevOps expects.
type PersonalAccessToken string

// Authorize implements Authorizer.
func (t PersonalAccessToken) Authorize(req *http.Request) {
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(":"+string(t))))
}

// Error is an error answer from the server.
type Error struct {
	StatusCode int
	Method     string
	URL        string
	Exception  WrappedException
	// Challenge is the WWW-Authenticate header, if any.
	Challenge string
}

func (e *Error) Error() string {
	msg := e.Exception.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	if e.Exception.TypeKey != "" {
		return fmt.Sprintf("%s %s: %d %s (%s)", e.Method, e.URL, e.StatusCode, msg, e.Exception.TypeKey)
	}
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.StatusCode, msg)
}

// IsTypeKey reports whether err is a server error with the given typeKey.
func IsTypeKey(err error, typeKey string) bool {
	var e *Error
	return errors.As(err, &e) && e.Exception.TypeKey == typeKey
}

// StatusCode returns the HTTP status of a server error, or 0.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// Client calls a server that speaks the agent protocol: agentry-server or
// Azure DevOps. BaseURL is the organisation or collection URL.
type Client struct {
	BaseURL string
	Auth    Authorizer
	HTTP    *http.Client
	// UserAgent is sent with every call.
	UserAgent string
}

// NewClient returns a client for baseURL with the given credential.
func NewClient(baseURL string, auth Authorizer, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 100 * time.Second}
	}
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Auth: auth, HTTP: hc, UserAgent: "agentry"}
}

// WithAuth returns a copy of c that uses another credential.
func (c *Client) WithAuth(a Authorizer) *Client {
	cc := *c
	cc.Auth = a
	return &cc
}

const maxErrorBody = 64 << 10

// Do sends one call. body, if not nil, is sent as JSON (or as-is when it is
// an io.Reader); a 2xx answer is decoded into out when out is not nil. It
// returns the HTTP status of a successful call.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body, out any) (int, error) {
	u := path
	if !strings.HasPrefix(path, "http://") && !strings.HasPrefix(path, "https://") {
		u = c.BaseURL + path
	}
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	contentType := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd = b
		contentType = "application/octet-stream"
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return 0, fmt.Errorf("encoding %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(buf)
		contentType = "application/json; charset=utf-8; api-version=" + APIVersion
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json; api-version="+APIVersion)
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	if c.Auth != nil {
		c.Auth.Authorize(req)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{StatusCode: resp.StatusCode, Method: method, URL: redactURL(req.URL), Challenge: resp.Header.Get("WWW-Authenticate")}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		if json.Unmarshal(b, &e.Exception) != nil || e.Exception.Message == "" {
			e.Exception.Message = strings.TrimSpace(truncate(b, 200))
		}
		return resp.StatusCode, e
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if w, ok := out.(io.Writer); ok {
			_, err = io.Copy(w, resp.Body)
			return resp.StatusCode, err
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return resp.StatusCode, err
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return resp.StatusCode, nil
		}
		if err := json.Unmarshal(bytes.TrimPrefix(b, utf8BOM), out); err != nil {
			return resp.StatusCode, fmt.Errorf("decoding %s %s: %w", method, path, err)
		}
	} else {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	}
	return resp.StatusCode, nil
}

// redactURL drops the query (it may carry a lock token or session id).
func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	c.User = nil
	return c.String()
}

const dt = "/_apis/distributedtask"

func poolPath(poolID int) string { return dt + "/pools/" + strconv.Itoa(poolID) }

// ---- pool administration (pool-admin token) ----

// GetPoolByName finds a pool by its name.
func (c *Client) GetPoolByName(ctx context.Context, name string) (*TaskAgentPool, error) {
	var l List[TaskAgentPool]
	if _, err := c.Do(ctx, http.MethodGet, dt+"/pools", url.Values{"poolName": {name}}, nil, &l); err != nil {
		return nil, err
	}
	for i := range l.Value {
		if strings.EqualFold(l.Value[i].Name, name) {
			return &l.Value[i], nil
		}
	}
	return nil, &Error{StatusCode: http.StatusNotFound, Method: http.MethodGet, URL: c.BaseURL + dt + "/pools",
		Exception: WrappedException{Message: fmt.Sprintf("agent pool %q does not exist", name), TypeKey: TypeKeyPoolNotFound}}
}

// AddPool creates a pool.
func (c *Client) AddPool(ctx context.Context, name string) (*TaskAgentPool, error) {
	var p TaskAgentPool
	_, err := c.Do(ctx, http.MethodPost, dt+"/pools", nil, TaskAgentPool{Name: name}, &p)
	return &p, err
}

// ListAgents lists a pool's agents, optionally only the one named name.
func (c *Client) ListAgents(ctx context.Context, poolID int, name string) ([]TaskAgent, error) {
	q := url.Values{}
	if name != "" {
		q.Set("agentName", name)
	}
	var l List[TaskAgent]
	_, err := c.Do(ctx, http.MethodGet, poolPath(poolID)+"/agents", q, nil, &l)
	return l.Value, err
}

// GetAgent reads one agent.
func (c *Client) GetAgent(ctx context.Context, poolID, agentID int) (*TaskAgent, error) {
	var a TaskAgent
	_, err := c.Do(ctx, http.MethodGet, poolPath(poolID)+"/agents/"+strconv.Itoa(agentID), nil, nil, &a)
	return &a, err
}

// AddAgent registers an agent with its public key; the answer carries its id,
// client id and token endpoint.
func (c *Client) AddAgent(ctx context.Context, poolID int, a TaskAgent) (*TaskAgent, error) {
	var out TaskAgent
	_, err := c.Do(ctx, http.MethodPost, poolPath(poolID)+"/agents", nil, a, &out)
	return &out, err
}

// ReplaceAgent replaces an existing registration (new key, merged capabilities).
func (c *Client) ReplaceAgent(ctx context.Context, poolID int, a TaskAgent) (*TaskAgent, error) {
	var out TaskAgent
	_, err := c.Do(ctx, http.MethodPut, poolPath(poolID)+"/agents/"+strconv.Itoa(a.ID), nil, a, &out)
	return &out, err
}

// DeleteAgent deregisters an agent. Deleting an agent that is already gone
// is not an error.
func (c *Client) DeleteAgent(ctx context.Context, poolID, agentID int) error {
	_, err := c.Do(ctx, http.MethodDelete, poolPath(poolID)+"/agents/"+strconv.Itoa(agentID), nil, nil, nil)
	if StatusCode(err) == http.StatusNotFound {
		return nil
	}
	return err
}

// ListJobRequests lists a pool's job requests (what autoscalers read).
func (c *Client) ListJobRequests(ctx context.Context, poolID int) ([]TaskAgentJobRequest, error) {
	var l List[TaskAgentJobRequest]
	_, err := c.Do(ctx, http.MethodGet, poolPath(poolID)+"/jobrequests", nil, nil, &l)
	return l.Value, err
}

// ---- listener (client assertion, then listener token) ----

// GetListenerToken trades a client assertion for a listener token at the
// agent's token endpoint. It sends no credential of its own.
func (c *Client) GetListenerToken(ctx context.Context, tokenURL, assertion string) (*AccessToken, error) {
	form := url.Values{
		"grant_type":            {GrantTypeClientCredentials},
		"client_assertion_type": {ClientAssertionTypeJWT},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if resp.StatusCode != http.StatusOK {
		e := &Error{StatusCode: resp.StatusCode, Method: http.MethodPost, URL: redactURL(req.URL)}
		if json.Unmarshal(b, &e.Exception) != nil || e.Exception.Message == "" {
			e.Exception.Message = strings.TrimSpace(truncate(b, 200))
		}
		return nil, e
	}
	var t AccessToken
	if err := json.Unmarshal(b, &t); err != nil || t.AccessToken == "" {
		return nil, fmt.Errorf("token endpoint answered without an access token")
	}
	return &t, nil
}

// CreateSession opens a listener session.
func (c *Client) CreateSession(ctx context.Context, poolID int, s TaskAgentSession) (*TaskAgentSession, error) {
	var out TaskAgentSession
	_, err := c.Do(ctx, http.MethodPost, poolPath(poolID)+"/sessions", nil, s, &out)
	return &out, err
}

// DeleteSession closes a listener session.
func (c *Client) DeleteSession(ctx context.Context, poolID int, sessionID string) error {
	_, err := c.Do(ctx, http.MethodDelete, poolPath(poolID)+"/sessions/"+url.PathEscape(sessionID), nil, nil, nil)
	return err
}

// GetMessage long-polls the agent's queue. It returns nil, nil when the
// server answered with no message.
func (c *Client) GetMessage(ctx context.Context, poolID int, sessionID string, lastMessageID int64) (*TaskAgentMessage, error) {
	q := url.Values{"sessionId": {sessionID}}
	if lastMessageID > 0 {
		q.Set("lastMessageId", strconv.FormatInt(lastMessageID, 10))
	}
	var m TaskAgentMessage
	status, err := c.Do(ctx, http.MethodGet, poolPath(poolID)+"/messages", q, nil, &m)
	if err != nil {
		return nil, err
	}
	if status == http.StatusAccepted || status == http.StatusNoContent || m.MessageType == "" {
		return nil, nil
	}
	return &m, nil
}

// DeleteMessage acknowledges a message so it is not delivered again.
func (c *Client) DeleteMessage(ctx context.Context, poolID int, sessionID string, messageID int64) error {
	_, err := c.Do(ctx, http.MethodDelete, poolPath(poolID)+"/messages/"+strconv.FormatInt(messageID, 10),
		url.Values{"sessionId": {sessionID}}, nil, nil)
	return err
}

// JobRequestUpdate is the body of a renew or finish PATCH.
type JobRequestUpdate struct {
	RequestID  int64       `json:"requestId"`
	FinishTime *time.Time  `json:"finishTime,omitempty"`
	Result     *TaskResult `json:"result,omitempty"`
}

const zeroLockToken = "00000000-0000-0000-0000-000000000000"

// RenewJobRequest extends the lock on a job request.
func (c *Client) RenewJobRequest(ctx context.Context, poolID int, requestID int64) (*TaskAgentJobRequest, error) {
	var out TaskAgentJobRequest
	_, err := c.Do(ctx, http.MethodPatch, poolPath(poolID)+"/jobrequests/"+strconv.FormatInt(requestID, 10),
		url.Values{"lockToken": {zeroLockToken}}, JobRequestUpdate{RequestID: requestID}, &out)
	return &out, err
}

// FinishJobRequest finishes a job request (plans older than version 8).
func (c *Client) FinishJobRequest(ctx context.Context, poolID int, requestID int64, result TaskResult, at time.Time) error {
	_, err := c.Do(ctx, http.MethodPatch, poolPath(poolID)+"/jobrequests/"+strconv.FormatInt(requestID, 10),
		url.Values{"lockToken": {zeroLockToken}}, JobRequestUpdate{RequestID: requestID, FinishTime: &at, Result: &result}, nil)
	return err
}

// ---- reporting (job token; BaseURL is the SystemVssConnection URL) ----

// PlanPath is the base of a plan's reporting routes.
func PlanPath(plan PlanReference, hub string) string {
	if hub == "" {
		hub = plan.PlanType
	}
	return "/" + url.PathEscape(plan.ScopeIdentifier) + dt + "/hubs/" + url.PathEscape(hub) + "/plans/" + url.PathEscape(plan.PlanID)
}

// UpdateTimelineRecords creates or updates timeline records.
func (c *Client) UpdateTimelineRecords(ctx context.Context, plan PlanReference, timelineID string, records []TimelineRecord) error {
	_, err := c.Do(ctx, http.MethodPatch, PlanPath(plan, "")+"/timelines/"+url.PathEscape(timelineID)+"/records", nil, NewList(records), nil)
	return err
}

// AppendFeed sends a batch of live console lines for a step.
func (c *Client) AppendFeed(ctx context.Context, plan PlanReference, timelineID, recordID string, lines TimelineRecordFeedLines) error {
	_, err := c.Do(ctx, http.MethodPost, PlanPath(plan, "")+"/timelines/"+url.PathEscape(timelineID)+"/records/"+url.PathEscape(recordID)+"/feed", nil, lines, nil)
	return err
}

// CreateLog creates an empty log.
func (c *Client) CreateLog(ctx context.Context, plan PlanReference, path string) (*TaskLog, error) {
	var out TaskLog
	_, err := c.Do(ctx, http.MethodPost, PlanPath(plan, "")+"/logs", nil, TaskLog{Path: path}, &out)
	return &out, err
}

// UploadLog appends content to a log.
func (c *Client) UploadLog(ctx context.Context, plan PlanReference, logID int, content io.Reader) error {
	_, err := c.Do(ctx, http.MethodPost, PlanPath(plan, "")+"/logs/"+strconv.Itoa(logID), nil, content, nil)
	return err
}

// RaisePlanEvent sends a plan event such as JobCompleted.
func (c *Client) RaisePlanEvent(ctx context.Context, plan PlanReference, ev JobEvent) error {
	_, err := c.Do(ctx, http.MethodPost, PlanPath(plan, "")+"/events", nil, ev, nil)
	return err
}
