package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/agentry-dev/agentry/internal/jobapi"
	"github.com/agentry-dev/agentry/internal/pipelines"
)

// Request body limits.
const (
	maxJSONBody   = 1 << 20  // every JSON body
	maxLogChunk   = 64 << 20 // one log upload
	maxTokenBody  = 64 << 10 // the token endpoint's form
	maxAssertion  = 16 << 10
	maxNameLen    = 256
	maxCaps       = 1000
	maxCapLen     = 4096
	maxSteps      = 100
	maxDemands    = 50
	maxVariables  = 500
	maxFeedBatch  = 10_000
	maxIssues     = 1000
	maxPathLen    = 1024
	maxRecordText = 4096
)

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// readBody reads a request body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, errorf(http.StatusRequestEntityTooLarge, pipelines.TypeKeyBadRequest,
			"request body is larger than %d bytes", limit)
	}
	if err != nil {
		return nil, badRequest("reading the request body: %v", err)
	}
	return b, nil
}

// decodeJSON reads one JSON value into v (field names in any case, a
// leading BOM allowed) and explains what is wrong in words.
func decodeJSON(b []byte, v any) error {
	b = bytes.TrimPrefix(b, utf8BOM)
	if len(bytes.TrimSpace(b)) == 0 {
		return badRequest("the request body is empty; want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return badRequest("the request body is not valid JSON (at byte %d): %v", syn.Offset, syn)
		case errors.As(err, &typ) && typ.Field != "":
			return badRequest("field %q: want %s, got a JSON %s", typ.Field, typ.Type, typ.Value)
		case errors.As(err, &typ):
			return badRequest("the request body is a JSON %s; want %s", typ.Value, typ.Type)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return badRequest("the request body is truncated JSON")
		}
		return badRequest("the request body is not what this call takes: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("the request body has data after its JSON value")
	}
	return nil
}

// checkName accepts a display name: 1 to 256 bytes of UTF-8, no control
// characters, no surrounding spaces.
func checkName(what, s string) error {
	switch {
	case s == "":
		return badRequest("%s is empty", what)
	case len(s) > maxNameLen:
		return badRequest("%s is longer than %d bytes", what, maxNameLen)
	case !utf8.ValidString(s):
		return badRequest("%s is not valid UTF-8", what)
	case strings.TrimSpace(s) != s:
		return badRequest("%s starts or ends with a space", what)
	case strings.ContainsFunc(s, unicode.IsControl):
		return badRequest("%s contains a control character", what)
	}
	return nil
}

func checkCapabilities(what string, caps map[string]string) error {
	if len(caps) > maxCaps {
		return badRequest("%s has more than %d entries", what, maxCaps)
	}
	for k, v := range caps {
		if err := checkName(what+" name", k); err != nil {
			return err
		}
		if len(v) > maxCapLen || !utf8.ValidString(v) {
			return badRequest("%s %q: value is longer than %d bytes or not UTF-8", what, k, maxCapLen)
		}
	}
	return nil
}

// decodePool reads POST pools: the new pool's name.
func decodePool(b []byte) (string, error) {
	var p pipelines.TaskAgentPool
	if err := decodeJSON(b, &p); err != nil {
		return "", err
	}
	if err := checkName("pool name", p.Name); err != nil {
		return "", err
	}
	return p.Name, nil
}

// decodeAgent reads POST/PUT agents: a registration with a usable public key.
func decodeAgent(b []byte) (pipelines.TaskAgent, error) {
	var a pipelines.TaskAgent
	if err := decodeJSON(b, &a); err != nil {
		return a, err
	}
	if err := checkName("agent name", a.Name); err != nil {
		return a, err
	}
	if a.Authorization == nil || a.Authorization.PublicKey == nil {
		return a, badRequest("authorization.publicKey is missing: an agent registers with its RSA public key")
	}
	return a, checkAgent(a)
}

// decodeAgentUpdate reads PATCH agents/{id}: the fields to change, all
// optional; a public key, when sent, must be usable.
func decodeAgentUpdate(b []byte) (pipelines.TaskAgent, error) {
	var a pipelines.TaskAgent
	if err := decodeJSON(b, &a); err != nil {
		return a, err
	}
	if a.Name != "" {
		if err := checkName("agent name", a.Name); err != nil {
			return a, err
		}
	}
	return a, checkAgent(a)
}

// checkAgent checks the fields a registration and an update share.
func checkAgent(a pipelines.TaskAgent) error {
	if len(a.Version) > maxNameLen || len(a.OSDescription) > maxCapLen || len(a.ProvisioningState) > maxNameLen {
		return badRequest("version, osDescription or provisioningState is too long")
	}
	if a.Authorization != nil && a.Authorization.PublicKey != nil {
		if _, err := a.Authorization.PublicKey.RSA(); err != nil {
			return badRequest("authorization.publicKey: %v", err)
		}
	}
	if a.MaxParallelism < 0 {
		return badRequest("maxParallelism is negative")
	}
	if err := checkCapabilities("systemCapabilities", a.SystemCapabilities); err != nil {
		return err
	}
	return checkCapabilities("userCapabilities", a.UserCapabilities)
}

// decodeSession reads POST sessions.
func decodeSession(b []byte) (pipelines.TaskAgentSession, error) {
	var s pipelines.TaskAgentSession
	if err := decodeJSON(b, &s); err != nil {
		return s, err
	}
	if len(s.OwnerName) > maxNameLen || !utf8.ValidString(s.OwnerName) {
		return s, badRequest("ownerName is longer than %d bytes or not UTF-8", maxNameLen)
	}
	if err := checkCapabilities("systemCapabilities", s.SystemCapabilities); err != nil {
		return s, err
	}
	return s, nil
}

// decodeJobRequestUpdate reads PATCH jobrequests/{id}: a renewal, or a
// finish when it carries a result.
func decodeJobRequestUpdate(b []byte) (pipelines.JobRequestUpdate, error) {
	var u pipelines.JobRequestUpdate
	if err := decodeJSON(b, &u); err != nil {
		return u, err
	}
	if u.FinishTime != nil && (u.Result == nil || *u.Result == "") {
		return u, badRequest("finishTime without a result: a finish must say how the job ended")
	}
	if u.Result != nil && *u.Result == "" {
		u.Result = nil
	}
	return u, nil
}

// decodeTimelineRecords reads PATCH timelines/{id}/records.
func decodeTimelineRecords(b []byte) ([]pipelines.TimelineRecord, error) {
	var l pipelines.List[pipelines.TimelineRecord]
	if err := decodeJSON(b, &l); err != nil {
		return nil, err
	}
	for i, r := range l.Value {
		if r.ID == "" || len(r.ID) > 64 {
			return nil, badRequest("record %d: id is empty or longer than 64 bytes", i)
		}
		for _, s := range []string{r.Name, r.RefName, r.Type, r.CurrentOperation, r.ResultCode, r.WorkerName} {
			if len(s) > maxRecordText {
				return nil, badRequest("record %s: a text field is longer than %d bytes", r.ID, maxRecordText)
			}
		}
		if len(r.Issues) > maxIssues {
			return nil, badRequest("record %s: more than %d issues", r.ID, maxIssues)
		}
	}
	return l.Value, nil
}

// decodeFeed reads POST …/feed: a batch of console lines.
func decodeFeed(b []byte) (pipelines.TimelineRecordFeedLines, error) {
	var f pipelines.TimelineRecordFeedLines
	if err := decodeJSON(b, &f); err != nil {
		return f, err
	}
	if len(f.Value) > maxFeedBatch {
		return f, badRequest("a feed batch has more than %d lines", maxFeedBatch)
	}
	return f, nil
}

// decodeLogCreate reads POST logs: the new log's path.
func decodeLogCreate(b []byte) (pipelines.TaskLog, error) {
	var l pipelines.TaskLog
	if err := decodeJSON(b, &l); err != nil {
		return l, err
	}
	if len(l.Path) > maxPathLen {
		return l, badRequest("path is longer than %d bytes", maxPathLen)
	}
	return l, nil
}

// decodeJobEvent reads POST events.
func decodeJobEvent(b []byte) (pipelines.JobEvent, error) {
	var e pipelines.JobEvent
	if err := decodeJSON(b, &e); err != nil {
		return e, err
	}
	if err := checkName("event name", e.Name); err != nil {
		return e, err
	}
	if e.Name == pipelines.JobCompletedEvent && e.Result == "" {
		return e, badRequest("a JobCompleted event needs a result")
	}
	return e, nil
}

// canonicalTasks maps the task names a step may use, in any case, to their
// canonical spelling.
var canonicalTasks = map[string]string{
	"":                                  jobapi.TaskCmdLine,
	strings.ToLower(jobapi.TaskCmdLine): jobapi.TaskCmdLine,
	strings.ToLower(jobapi.TaskBash):    jobapi.TaskBash,
}

// decodeJobSpec reads POST /_apis/agentry/jobs and normalises it: task names
// canonical (CmdLine@2 by default), demands checked.
func decodeJobSpec(b []byte) (jobapi.JobSpec, error) {
	var s jobapi.JobSpec
	if err := decodeJSON(b, &s); err != nil {
		return s, err
	}
	if err := checkName("pool", s.Pool); err != nil {
		return s, err
	}
	if s.Name != "" {
		if err := checkName("name", s.Name); err != nil {
			return s, err
		}
	}
	if len(s.Steps) == 0 {
		return s, badRequest("a job needs at least one step")
	}
	if len(s.Steps) > maxSteps {
		return s, badRequest("a job has at most %d steps", maxSteps)
	}
	for i := range s.Steps {
		st := &s.Steps[i]
		task, ok := canonicalTasks[strings.ToLower(st.Task)]
		if !ok {
			return s, badRequest("step %d: task %q is not supported; use %s or %s", i+1, st.Task, jobapi.TaskCmdLine, jobapi.TaskBash)
		}
		st.Task = task
		if strings.TrimSpace(st.Script) == "" {
			return s, badRequest("step %d: script is empty", i+1)
		}
		if !utf8.ValidString(st.Script) {
			return s, badRequest("step %d: script is not valid UTF-8", i+1)
		}
		if st.DisplayName != "" {
			if err := checkName(fmt.Sprintf("step %d displayName", i+1), st.DisplayName); err != nil {
				return s, err
			}
		}
	}
	if len(s.Demands) > maxDemands {
		return s, badRequest("a job has at most %d demands", maxDemands)
	}
	for _, d := range s.Demands {
		if _, err := pipelines.ParseDemand(d); err != nil {
			return s, badRequest("%v", err)
		}
	}
	if len(s.Variables) > maxVariables {
		return s, badRequest("a job has at most %d variables", maxVariables)
	}
	for k, v := range s.Variables {
		if err := checkName("variable name", k); err != nil {
			return s, err
		}
		if isSystemVariable(k) {
			return s, badRequest("variable %q: names starting with system. are reserved", k)
		}
		if !utf8.ValidString(v.Value) {
			return s, badRequest("variable %q: value is not valid UTF-8", k)
		}
	}
	if s.TimeoutInMinutes < 0 {
		return s, badRequest("timeoutInMinutes is negative")
	}
	return s, nil
}

// tokenRequest is a token endpoint call: the assertion and the client id it
// claims to come from (not yet verified).
type tokenRequest struct {
	Assertion string
	ClientID  string
}

func oauthError(status int, code, typeKey, format string, args ...any) *apiError {
	e := errorf(status, typeKey, format, args...)
	e.oauth = code
	return e
}

// decodeTokenRequest reads the token endpoint's form (RFC 7523 §2.2) and
// peeks at the assertion's issuer, so the caller can find the key that must
// have signed it. Nothing here is trusted until VerifyClientAssertion.
func decodeTokenRequest(b []byte) (tokenRequest, error) {
	form, err := url.ParseQuery(string(b))
	if err != nil {
		return tokenRequest{}, oauthError(http.StatusBadRequest, "invalid_request", pipelines.TypeKeyBadRequest, "the form body does not parse: %v", err)
	}
	if gt := form.Get("grant_type"); gt != pipelines.GrantTypeClientCredentials {
		return tokenRequest{}, oauthError(http.StatusBadRequest, "unsupported_grant_type", pipelines.TypeKeyBadRequest,
			"grant_type %q is not supported; use %s", truncate(gt, 64), pipelines.GrantTypeClientCredentials)
	}
	if at := form.Get("client_assertion_type"); at != pipelines.ClientAssertionTypeJWT {
		return tokenRequest{}, oauthError(http.StatusBadRequest, "invalid_request", pipelines.TypeKeyBadRequest,
			"client_assertion_type %q is not supported; use %s", truncate(at, 96), pipelines.ClientAssertionTypeJWT)
	}
	assertion := form.Get("client_assertion")
	if assertion == "" || len(assertion) > maxAssertion {
		return tokenRequest{}, oauthError(http.StatusBadRequest, "invalid_request", pipelines.TypeKeyBadRequest,
			"client_assertion is missing or longer than %d bytes", maxAssertion)
	}
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(assertion, &claims); err != nil {
		return tokenRequest{}, oauthError(http.StatusBadRequest, "invalid_client", pipelines.TypeKeyBadRequest, "client_assertion is not a JWT")
	}
	if claims.Issuer == "" || len(claims.Issuer) > maxNameLen {
		return tokenRequest{}, oauthError(http.StatusBadRequest, "invalid_client", pipelines.TypeKeyBadRequest, "client_assertion names no issuer")
	}
	return tokenRequest{Assertion: assertion, ClientID: claims.Issuer}, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// parseID reads a positive id from a path segment.
func parseID(what, s string, bits int) (int64, error) {
	n, err := strconv.ParseInt(s, 10, bits)
	if err != nil || n <= 0 {
		return 0, badRequest("%s %q is not a positive integer", what, truncate(s, 32))
	}
	return n, nil
}
