package server

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// maskText replaces a secret in what the server shows, as the agent does.
const maskText = "***"

// secretMasker replaces the values of a job's secret variables. The agent
// masks them already; the server does it again for what reaches users, so an
// agent that does not (or a secret printed in pieces across lines that
// happen to meet) never shows one through the job API.
func secretMasker(spec map[string]pipelines.VariableValue) *strings.Replacer {
	var pairs []string
	for _, v := range spec {
		if v.IsSecret && v.Value != "" {
			pairs = append(pairs, v.Value, maskText)
		}
	}
	if len(pairs) == 0 {
		return nil
	}
	return strings.NewReplacer(pairs...)
}

func mask(r *strings.Replacer, b []byte) []byte {
	if r == nil {
		return b
	}
	return []byte(r.Replace(string(b)))
}

// followPoll bounds how long a follower waits without a wake before it
// looks again; wakes come with every feed batch, log chunk and finish.
const followPoll = 5 * time.Second

// getJobLog answers the job's log as text: the logs the agent uploaded, in
// the order it created them, or the live feed lines while it has uploaded
// none. With follow=true it streams the log as it grows until the job ends.
func (s *Server) getJobLog(w http.ResponseWriter, r *http.Request) error {
	j, err := s.jobFromPath(r)
	if err != nil {
		return err
	}
	follow := false
	if v := r.URL.Query().Get("follow"); v != "" {
		if follow, err = strconv.ParseBool(v); err != nil {
			return badRequest("follow %q is not true or false", truncate(v, 16))
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	m := secretMasker(j.Spec.Variables)
	if !follow || j.Finished() {
		b, err := s.jobLog(r.Context(), j.RequestID)
		if err != nil {
			return err
		}
		_, err = w.Write(mask(m, b))
		return err
	}
	return s.followJobLog(r.Context(), w, j.RequestID, m)
}

func (s *Server) jobLog(ctx context.Context, id int64) ([]byte, error) {
	b, err := s.store.JobLog(ctx, id)
	return b, storeError(err, pipelines.TypeKeyJobNotFound, "job "+strconv.FormatInt(id, 10))
}

// followJobLog streams whole lines as they arrive. While the job runs the
// log is its live feed, which only grows; when the job ends, the rest of
// the final log is written if it continues what was sent (else the feed
// already showed it, and the uploaded copy is not repeated).
func (s *Server) followJobLog(ctx context.Context, w http.ResponseWriter, id int64, m *strings.Replacer) error {
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	var sent []byte // what was written, unmasked
	t := time.NewTimer(followPoll)
	defer t.Stop()
	for {
		_, changed := s.jobs.watch(id)
		j, err := s.store.GetJob(ctx, id)
		if err != nil {
			return nil // the answer has started: all we can do is end it
		}
		b, err := s.store.JobLog(ctx, id)
		if err != nil {
			return nil
		}
		if j.Finished() {
			if len(sent) == 0 || bytes.HasPrefix(b, sent) {
				_, _ = w.Write(mask(m, b[len(sent):]))
			}
			return nil
		}
		if bytes.HasPrefix(b, sent) {
			// Whole lines only: a secret is masked within its line.
			if end := bytes.LastIndexByte(b, '\n') + 1; end > len(sent) {
				if _, err := w.Write(mask(m, b[len(sent):end])); err != nil {
					return nil
				}
				_ = rc.Flush()
				sent = b[:end]
			}
		}
		t.Reset(followPoll)
		select {
		case <-changed:
		case <-t.C:
		case <-s.closing:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}
