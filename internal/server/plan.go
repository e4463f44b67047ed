package server

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// checkTimeline accepts only the job's own timeline.
func checkTimeline(r *http.Request, j store.Job) error {
	if id := r.PathValue("timelineId"); !sameID(id, j.TimelineID) {
		return errorf(http.StatusNotFound, pipelines.TypeKeyTimelineNotFound, "timeline %s is not this job's", truncate(id, 64))
	}
	return nil
}

func (s *Server) updateTimelineRecords(w http.ResponseWriter, r *http.Request, j store.Job) error {
	if err := checkTimeline(r, j); err != nil {
		return err
	}
	b, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	records, err := decodeTimelineRecords(b)
	if err != nil {
		return err
	}
	out, err := s.store.UpdateTimelineRecords(r.Context(), j.RequestID, records, s.now())
	if err != nil {
		return storeError(err, pipelines.TypeKeyJobNotFound, "job request "+strconv.FormatInt(j.RequestID, 10))
	}
	writeJSON(w, http.StatusOK, pipelines.NewList(out))
	return nil
}

func (s *Server) appendFeed(w http.ResponseWriter, r *http.Request, j store.Job) error {
	if err := checkTimeline(r, j); err != nil {
		return err
	}
	b, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	f, err := decodeFeed(b)
	if err != nil {
		return err
	}
	if err := s.store.AppendFeed(r.Context(), j.RequestID, f.Value); err != nil {
		return storeError(err, pipelines.TypeKeyJobNotFound, "job request "+strconv.FormatInt(j.RequestID, 10))
	}
	s.jobs.bump(j.RequestID) // wake the log's followers
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) createLog(w http.ResponseWriter, r *http.Request, j store.Job) error {
	b, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	in, err := decodeLogCreate(b)
	if err != nil {
		return err
	}
	l, err := s.store.CreateLog(r.Context(), j.RequestID, in.Path, s.now())
	if err != nil {
		return storeError(err, pipelines.TypeKeyJobNotFound, "job request "+strconv.FormatInt(j.RequestID, 10))
	}
	writeJSON(w, http.StatusOK, l)
	return nil
}

// appendLog takes a chunk of log content, whatever its Content-Type.
func (s *Server) appendLog(w http.ResponseWriter, r *http.Request, j store.Job) error {
	id, err := parseID("logId", r.PathValue("logId"), 32)
	if err != nil {
		return err
	}
	b, err := readBody(w, r, maxLogChunk)
	if err != nil {
		return err
	}
	l, err := s.store.AppendLog(r.Context(), j.RequestID, int(id), b, s.now())
	if err != nil {
		return storeError(err, pipelines.TypeKeyJobNotFound, "log "+r.PathValue("logId")+" of this job")
	}
	s.jobs.bump(j.RequestID)
	writeJSON(w, http.StatusOK, l)
	return nil
}

// raisePlanEvent handles JobCompleted, which finishes the job (and so ends
// its token); other events are accepted and ignored.
func (s *Server) raisePlanEvent(w http.ResponseWriter, r *http.Request, j store.Job) error {
	b, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	ev, err := decodeJobEvent(b)
	if err != nil {
		return err
	}
	if ev.Name != pipelines.JobCompletedEvent {
		s.log.V(1).Info("Ignored a plan event", "requestId", j.RequestID, "event", ev.Name)
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if !sameID(ev.JobID, j.JobID) || (ev.RequestID != 0 && ev.RequestID != j.RequestID) {
		return badRequest("the event is for job %s (request %d), the token for job %s (request %d)",
			truncate(ev.JobID, 64), ev.RequestID, j.JobID, j.RequestID)
	}
	done, err := s.store.FinishJob(r.Context(), j.RequestID, ev.Result, s.now())
	s.uncertainWrite(r.Context(), err)
	if errors.Is(err, store.ErrConflict) {
		return unauthorized(pipelines.TypeKeyJobTokenExpired, "the job token expired: job request %d has finished", j.RequestID)
	} else if err != nil {
		return err
	}
	s.jobFinished(done)
	s.log.Info("Finished a job", "requestId", done.RequestID, "result", done.Result, "by", pipelines.JobCompletedEvent)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
