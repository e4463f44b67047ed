package agent

import (
	"strings"
	"sync"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// timelineUpdates holds a job's timeline record updates until the next call
// that sends them. Each update the agent makes is a record's whole state so
// far (a record only ever gains fields), so a newer update of a record
// replaces an older one not sent yet: the server, which merges updates field
// by field, ends up with the same records (only their changeId counts fewer
// changes). Sent as Microsoft's agent sends them (JobServerQueue), at most
// once a feed interval and once more before the job's result, the records of
// a job whose steps are shorter than the interval take one call, not two for
// the job and two per step.
type timelineUpdates struct {
	mu      sync.Mutex
	pending []pipelines.TimelineRecord
	// added holds a token while updates may be pending.
	added chan struct{}
}

func newTimelineUpdates() *timelineUpdates {
	return &timelineUpdates{added: make(chan struct{}, 1)}
}

// add queues updates behind the pending ones.
func (u *timelineUpdates) add(recs ...pipelines.TimelineRecord) {
	u.mu.Lock()
	u.pending = MergeTimelineUpdates(u.pending, recs...)
	u.mu.Unlock()
	select {
	case u.added <- struct{}{}:
	default:
	}
}

// take empties the queue and returns what it held.
func (u *timelineUpdates) take() []pipelines.TimelineRecord {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := u.pending
	u.pending = nil
	return out
}

// MergeTimelineUpdates adds updates to pending: an update of a record that is
// pending already takes its place, since each update is the record's whole
// state; a record not pending yet goes last. Record ids are GUIDs, matched
// ignoring case as the server does. A job has a handful of records, so a
// linear search is all it needs.
func MergeTimelineUpdates(pending []pipelines.TimelineRecord, updates ...pipelines.TimelineRecord) []pipelines.TimelineRecord {
	for _, r := range updates {
		i := 0
		for i < len(pending) && !strings.EqualFold(pending[i].ID, r.ID) {
			i++
		}
		if i < len(pending) {
			pending[i] = r
		} else {
			pending = append(pending, r)
		}
	}
	return pending
}
