package agent

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

func TestMergeTimelineUpdates(t *testing.T) {
	const job, step1, step2 = "0b1d6a1e-0000-4000-8000-000000000001", "0b1d6a1e-0000-4000-8000-000000000002", "0b1d6a1e-0000-4000-8000-000000000003"
	rec := func(id string, state pipelines.TimelineRecordState) pipelines.TimelineRecord {
		return pipelines.TimelineRecord{ID: id, State: &state}
	}
	pending, inProgress, completed := pipelines.StatePending, pipelines.StateInProgress, pipelines.StateCompleted
	tests := []struct {
		name    string
		pending []pipelines.TimelineRecord
		updates []pipelines.TimelineRecord
		want    []pipelines.TimelineRecord
	}{
		{"into nothing", nil, []pipelines.TimelineRecord{rec(job, inProgress), rec(step1, pending)},
			[]pipelines.TimelineRecord{rec(job, inProgress), rec(step1, pending)}},
		{"a newer state takes the older one's place", []pipelines.TimelineRecord{rec(job, inProgress), rec(step1, pending), rec(step2, pending)},
			[]pipelines.TimelineRecord{rec(step1, inProgress), rec(step1, completed)},
			[]pipelines.TimelineRecord{rec(job, inProgress), rec(step1, completed), rec(step2, pending)}},
		{"a record not pending goes last", []pipelines.TimelineRecord{rec(step1, completed)},
			[]pipelines.TimelineRecord{rec(job, completed)},
			[]pipelines.TimelineRecord{rec(step1, completed), rec(job, completed)}},
		{"ids match ignoring case", []pipelines.TimelineRecord{rec(job, inProgress)},
			[]pipelines.TimelineRecord{rec("0B1D6A1E-0000-4000-8000-000000000001", completed)},
			[]pipelines.TimelineRecord{rec("0B1D6A1E-0000-4000-8000-000000000001", completed)}},
		{"the same record twice in one update", nil, []pipelines.TimelineRecord{rec(step1, pending), rec(step1, inProgress)},
			[]pipelines.TimelineRecord{rec(step1, inProgress)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MergeTimelineUpdates(tt.pending, tt.updates...)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("MergeTimelineUpdates (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTimelineUpdatesTake(t *testing.T) {
	u := newTimelineUpdates()
	if got := u.take(); got != nil {
		t.Errorf("take() of an empty queue = %v, want nothing", got)
	}
	u.add(pipelines.TimelineRecord{ID: "a"}, pipelines.TimelineRecord{ID: "b"})
	select {
	case <-u.added:
	default:
		t.Error("add did not signal that updates are pending")
	}
	u.add(pipelines.TimelineRecord{ID: "a", Name: "newer"})
	want := []pipelines.TimelineRecord{{ID: "a", Name: "newer"}, {ID: "b"}}
	if diff := cmp.Diff(want, u.take()); diff != "" {
		t.Errorf("take() (-want +got):\n%s", diff)
	}
	if got := u.take(); got != nil {
		t.Errorf("take() after take() = %v, want nothing", got)
	}
}
