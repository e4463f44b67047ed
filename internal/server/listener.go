package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// createSession opens the agent's listener session with a fresh AES-256 key
// wrapped with the agent's public key.
func (s *Server) createSession(w http.ResponseWriter, r *http.Request, a store.Agent) error {
	b, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	in, err := decodeSession(b)
	if err != nil {
		return err
	}
	if in.Agent.ID != 0 && in.Agent.ID != a.ID {
		return errorf(http.StatusForbidden, pipelines.TypeKeyAccessDenied, "the listener token is agent %d's, the session is for agent %d", a.ID, in.Agent.ID)
	}
	pub, err := a.PublicKey.RSA()
	if err != nil {
		return fmt.Errorf("agent %d has an unusable stored key: %w", a.ID, err)
	}
	key, err := agentcrypto.NewSessionKey()
	if err != nil {
		return err
	}
	wrapped, err := agentcrypto.WrapKey(pub, key, in.UseFipsEncryption)
	if err != nil {
		return fmt.Errorf("wrapping the session key: %w", err)
	}
	now := s.now()
	sess, err := s.store.CreateSession(r.Context(), store.Session{
		ID: uuid.NewString(), AgentID: a.ID, PoolID: a.PoolID, OwnerName: in.OwnerName, Key: key,
		UseFipsEncryption: in.UseFipsEncryption, CreatedOn: now, LastSeen: now,
	}, now.Add(-s.cfg.SessionIdleTimeout))
	switch {
	case errors.Is(err, store.ErrConflict):
		return errorf(http.StatusConflict, pipelines.TypeKeySessionConflict, "agent %q already has a live session", a.Name)
	case err != nil:
		return storeError(err, pipelines.TypeKeyAgentNotFound, "agent "+a.Name)
	}
	if len(in.SystemCapabilities) > 0 {
		if err := s.store.SetSystemCapabilities(r.Context(), a.ID, in.SystemCapabilities); err != nil {
			return storeError(err, pipelines.TypeKeyAgentNotFound, "agent "+a.Name)
		}
	}
	s.log.Info("Opened a session", "agentId", a.ID, "sessionId", sess.ID, "fips", sess.UseFipsEncryption)
	writeJSON(w, http.StatusOK, pipelines.TaskAgentSession{
		SessionID: sess.ID, OwnerName: sess.OwnerName,
		Agent:              pipelines.TaskAgentReference{ID: a.ID, Name: a.Name, Version: a.Version, OSDescription: a.OSDescription},
		SystemCapabilities: in.SystemCapabilities,
		EncryptionKey:      &pipelines.TaskAgentSessionKey{Encrypted: true, Value: wrapped},
		UseFipsEncryption:  sess.UseFipsEncryption,
	})
	return nil
}

// agentSession finds a session of the agent, or says it expired.
func (s *Server) agentSession(ctx context.Context, a store.Agent, id string) (store.Session, error) {
	if id == "" {
		return store.Session{}, badRequest("sessionId is missing")
	}
	sess, err := s.store.GetSession(ctx, id)
	if err == nil && sess.AgentID != a.ID {
		err = store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.Session{}, errorf(http.StatusNotFound, pipelines.TypeKeySessionExpired, "session %s does not exist or has expired; create a new one", truncate(id, 64))
	}
	return sess, err
}

func (s *Server) deleteSession(w http.ResponseWriter, r *http.Request, a store.Agent) error {
	id := r.PathValue("sessionId")
	sess, err := s.agentSession(r.Context(), a, id)
	var ae *apiError
	if errors.As(err, &ae) && ae.typeKey == pipelines.TypeKeySessionExpired {
		w.WriteHeader(http.StatusNoContent) // already gone
		return nil
	} else if err != nil {
		return err
	}
	if err := s.store.DeleteSession(r.Context(), sess.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	s.polls.wakeAgent(a.ID) // end the session's long-poll
	s.log.Info("Closed a session", "agentId", a.ID, "sessionId", sess.ID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// sessionTouches is how many times per SessionIdleTimeout a session's
// LastSeen is moved forward at most (every 6 s by default). Each move is a
// write, with an fsync of its own when nothing else is writing, and most
// polls come within seconds of the session's creation or of the agent's
// last poll; the idle timeout is minutes, so a session looks idle at worst
// a thirtieth of it early.
const sessionTouches = 30

// getMessage long-polls the agent's queue. Each round it looks for an
// undeleted message, else tries to assign the agent a job; when there is
// nothing it waits to be woken (a job handed to it, a cancellation, its
// session or registration gone), the hold time, the client going away or
// the server closing.
func (s *Server) getMessage(w http.ResponseWriter, r *http.Request, a store.Agent) error {
	ctx := r.Context()
	sessionID := r.URL.Query().Get("sessionId")
	hold := time.NewTimer(s.cfg.LongPoll)
	defer hold.Stop()
	p := newPoll(a, s.publicURL(r))
	defer s.polls.remove(p)
	// The first round goes by the agent as the listener token's check just
	// read it; later ones read it again.
	cur := a
	for round := 0; ; round++ {
		if round > 0 {
			var err error
			cur, err = s.store.GetAgent(ctx, a.ID)
			if errors.Is(err, store.ErrNotFound) {
				return errorf(http.StatusNotFound, pipelines.TypeKeyAgentNotFound, "agent %d has been deleted", a.ID)
			} else if err != nil {
				return err
			}
		}
		// Registered before looking, so a wake in between is not lost.
		s.polls.add(p, cur)
		sess, err := s.agentSession(ctx, a, sessionID)
		if err != nil {
			return err
		}
		if now := s.now(); now.Sub(sess.LastSeen) >= s.cfg.SessionIdleTimeout/sessionTouches {
			if err := s.store.TouchSession(ctx, sess.ID, now); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		msg, ok, err := s.nextMessage(ctx, cur, p.baseURL)
		if err != nil {
			return err
		}
		if ok {
			if msg.Type == pipelines.MessageTypeJobRequest {
				s.queues.bump(int64(a.PoolID)) // received
			}
			return s.deliver(w, sess, msg)
		}
		if hook := s.onLongPollWait.Load(); hook != nil {
			(*hook)(a.ID)
		}
		select {
		case <-p.wake:
		case <-hold.C:
			w.WriteHeader(http.StatusAccepted)
			return nil
		case <-s.closing:
			w.WriteHeader(http.StatusAccepted)
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// nextMessage returns the agent's oldest undeleted message, first assigning
// it a job if it has none yet.
func (s *Server) nextMessage(ctx context.Context, a store.Agent, baseURL string) (store.Message, bool, error) {
	msg, err := s.store.NextMessage(ctx, a.ID, s.now())
	s.uncertainWrite(ctx, err)
	if err == nil {
		return msg, true, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return msg, false, err
	}
	assigned, err := s.assignJob(ctx, a, baseURL)
	if err != nil || !assigned {
		return store.Message{}, false, err
	}
	msg, err = s.store.NextMessage(ctx, a.ID, s.now())
	s.uncertainWrite(ctx, err)
	if errors.Is(err, store.ErrNotFound) {
		return msg, false, nil // finished or requeued in between
	}
	return msg, err == nil, err
}

// assignJob gives an agent that has never taken a job the oldest queued job
// of its pool whose demands it meets. It reports whether it assigned one.
func (s *Server) assignJob(ctx context.Context, a store.Agent, baseURL string) (bool, error) {
	if a.RequestID != 0 || !a.Enabled {
		return false, nil
	}
	caps := pipelines.NewCapabilities(a.SystemCapabilities, a.UserCapabilities)
	j, ok, err := s.claims.claim(ctx, s.store, a.PoolID, func(queued []store.Job) (store.Job, bool) {
		for _, j := range queued {
			if caps.Satisfy(j.Spec.Demands) {
				return j, true
			}
		}
		return store.Job{}, false
	})
	if err != nil || !ok {
		return false, err
	}
	assigned, err := s.assignTo(ctx, a.ID, j.RequestID, baseURL)
	s.claims.release(a.PoolID, j.RequestID)
	if err != nil || assigned {
		return assigned, err
	}
	// Lost: the job went, or dispatch handed this agent another one. Other
	// agents may have passed the job over while it was claimed, so hand out
	// what is queued (this agent too, if it is still free: it waits in line).
	return false, s.dispatch(ctx, a.PoolID)
}

// deliver sends a message encrypted with the session key under a fresh IV.
func (s *Server) deliver(w http.ResponseWriter, sess store.Session, msg store.Message) error {
	iv, ct, err := agentcrypto.Encrypt(sess.Key, msg.Body)
	if err != nil {
		return fmt.Errorf("encrypting message %d: %w", msg.ID, err)
	}
	writeJSON(w, http.StatusOK, pipelines.TaskAgentMessage{
		MessageID: msg.ID, MessageType: msg.Type, IV: iv, Body: base64.StdEncoding.EncodeToString(ct),
	})
	return nil
}

func (s *Server) deleteMessage(w http.ResponseWriter, r *http.Request, a store.Agent) error {
	if _, err := s.agentSession(r.Context(), a, r.URL.Query().Get("sessionId")); err != nil {
		return err
	}
	id, err := parseID("messageId", r.PathValue("messageId"), 64)
	if err != nil {
		return err
	}
	if err := s.store.DeleteMessage(r.Context(), a.ID, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// updateJobRequest renews a job request's lock, or finishes it when the
// body carries a result (plans older than version 8).
func (s *Server) updateJobRequest(w http.ResponseWriter, r *http.Request, a store.Agent) error {
	id, err := parseID("requestId", r.PathValue("requestId"), 64)
	if err != nil {
		return err
	}
	b, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	u, err := decodeJobRequestUpdate(b)
	if err != nil {
		return err
	}
	if u.RequestID != 0 && u.RequestID != id {
		return badRequest("the body is job request %d, the path %d", u.RequestID, id)
	}
	ctx := r.Context()
	notYours := errorf(http.StatusNotFound, pipelines.TypeKeyJobNotFound, "job request %d does not exist or is not this agent's", id)
	j, err := s.store.GetJob(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && j.AgentID != a.ID) {
		return notYours
	} else if err != nil {
		return err
	}
	now := s.now()
	started := !j.StartTime.IsZero()
	if u.Result != nil {
		j, err = s.store.FinishJob(ctx, id, *u.Result, now)
		s.uncertainWrite(ctx, err)
		if err == nil {
			s.log.Info("Finished a job", "requestId", id, "result", j.Result, "by", "jobRequestUpdate")
			s.jobFinished(j)
		}
		if errors.Is(err, store.ErrConflict) {
			err = nil // already finished: answer with how it ended
		}
	} else {
		j, err = s.store.RenewJob(ctx, id, a.ID, now.Add(s.cfg.JobLock), now)
		s.uncertainWrite(ctx, err)
		if err == nil && !started && !j.StartTime.IsZero() {
			s.queues.bump(int64(j.PoolID))
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		return notYours
	} else if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toJobRequest(j))
	return nil
}

// sameID compares GUIDs as text, without case.
func sameID(a, b string) bool { return strings.EqualFold(a, b) }
