package store_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
	"github.com/agentry-dev/agentry/internal/server/store/storetest"
)

func TestMemory(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return store.NewMemory() })
}

func ptr[T any](v T) *T { return &v }

func TestMergeTimelineRecord(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	start := now.Add(-time.Minute)
	tests := []struct {
		name     string
		old, upd pipelines.TimelineRecord
		want     pipelines.TimelineRecord
	}{
		{
			name: "new record",
			upd:  pipelines.TimelineRecord{ID: "a", Name: "Job", State: ptr(pipelines.StatePending)},
			want: pipelines.TimelineRecord{ID: "a", Name: "Job", State: ptr(pipelines.StatePending), ChangeID: 1, LastModified: &now},
		},
		{
			name: "empty fields keep stored values",
			old:  pipelines.TimelineRecord{ID: "a", Name: "Job", StartTime: &start, ChangeID: 3, Log: &pipelines.TaskLogReference{ID: 2}},
			upd:  pipelines.TimelineRecord{ID: "a", State: ptr(pipelines.StateCompleted), Result: ptr(pipelines.ResultFailed)},
			want: pipelines.TimelineRecord{ID: "a", Name: "Job", StartTime: &start, State: ptr(pipelines.StateCompleted),
				Result: ptr(pipelines.ResultFailed), ChangeID: 4, LastModified: &now, Log: &pipelines.TaskLogReference{ID: 2}},
		},
		{
			name: "set fields replace stored values",
			old:  pipelines.TimelineRecord{ID: "a", Name: "old", ErrorCount: ptr(1), Issues: []pipelines.Issue{{Type: "error", Message: "x"}}},
			upd:  pipelines.TimelineRecord{ID: "a", Name: "new", ErrorCount: ptr(0), Issues: []pipelines.Issue{}},
			want: pipelines.TimelineRecord{ID: "a", Name: "new", ErrorCount: ptr(0), Issues: []pipelines.Issue{}, ChangeID: 1, LastModified: &now},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := store.MergeTimelineRecord(tc.old, tc.upd, now)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if tc.upd.State != nil && got.State == tc.upd.State {
				t.Error("merged record shares a pointer with the update")
			}
		})
	}
}
