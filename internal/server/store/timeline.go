package store

import (
	"slices"
	"time"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// MergeTimelineRecord applies an update to a stored record as Azure does: a
// field the update leaves empty (nil, "", 0) keeps its stored value. The
// record's ChangeID is bumped and LastModified set to now. The result shares
// nothing with its arguments.
func MergeTimelineRecord(old, upd pipelines.TimelineRecord, now time.Time) pipelines.TimelineRecord {
	r := CloneTimelineRecord(old)
	u := CloneTimelineRecord(upd)
	r.ID = upd.ID
	setIf(&r.ParentID, u.ParentID)
	setStr(&r.Type, u.Type)
	setStr(&r.Name, u.Name)
	setStr(&r.RefName, u.RefName)
	setIf(&r.StartTime, u.StartTime)
	setIf(&r.FinishTime, u.FinishTime)
	setStr(&r.CurrentOperation, u.CurrentOperation)
	setIf(&r.PercentComplete, u.PercentComplete)
	setIf(&r.State, u.State)
	setIf(&r.Result, u.Result)
	setStr(&r.ResultCode, u.ResultCode)
	setStr(&r.WorkerName, u.WorkerName)
	setIf(&r.Order, u.Order)
	setIf(&r.Log, u.Log)
	setIf(&r.ErrorCount, u.ErrorCount)
	setIf(&r.WarningCount, u.WarningCount)
	if u.Issues != nil {
		r.Issues = u.Issues
	}
	r.ChangeID = old.ChangeID + 1
	t := now.UTC()
	r.LastModified = &t
	return r
}

func setIf[T any](dst **T, v *T) {
	if v != nil {
		*dst = v
	}
}

func setStr(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// CloneTimelineRecord returns a deep copy of r.
func CloneTimelineRecord(r pipelines.TimelineRecord) pipelines.TimelineRecord {
	c := r
	c.ParentID = clonePtr(r.ParentID)
	c.StartTime = clonePtr(r.StartTime)
	c.FinishTime = clonePtr(r.FinishTime)
	c.PercentComplete = clonePtr(r.PercentComplete)
	c.State = clonePtr(r.State)
	c.Result = clonePtr(r.Result)
	c.LastModified = clonePtr(r.LastModified)
	c.Order = clonePtr(r.Order)
	c.Log = clonePtr(r.Log)
	c.ErrorCount = clonePtr(r.ErrorCount)
	c.WarningCount = clonePtr(r.WarningCount)
	if r.Issues != nil {
		c.Issues = slices.Clone(r.Issues)
		for i := range c.Issues {
			c.Issues[i].Data = cloneMap(r.Issues[i].Data)
		}
	}
	return c
}
