package pipelines

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// TaskResult is the outcome of a job or step. On the wire it is a camelCase
// string or its number; both are read, the string is written.
type TaskResult string

// The task results, in the order of their wire numbers.
const (
	ResultSucceeded           TaskResult = "succeeded"
	ResultSucceededWithIssues TaskResult = "succeededWithIssues"
	ResultFailed              TaskResult = "failed"
	ResultCanceled            TaskResult = "canceled"
	ResultSkipped             TaskResult = "skipped"
	ResultAbandoned           TaskResult = "abandoned"
)

var taskResults = []TaskResult{ResultSucceeded, ResultSucceededWithIssues, ResultFailed, ResultCanceled, ResultSkipped, ResultAbandoned}

// UnmarshalJSON reads a result as a string (any case) or a number.
func (r *TaskResult) UnmarshalJSON(b []byte) error {
	v, err := readEnum(b, func(i int) (string, bool) {
		if i < 0 || i >= len(taskResults) {
			return "", false
		}
		return string(taskResults[i]), true
	}, func(s string) (string, bool) {
		for _, t := range taskResults {
			if strings.EqualFold(string(t), s) {
				return string(t), true
			}
		}
		return "", false
	})
	if err != nil {
		return fmt.Errorf("task result: %w", err)
	}
	*r = TaskResult(v)
	return nil
}

// AgentStatus says whether an agent has a live session.
type AgentStatus string

// Agent statuses.
const (
	AgentOffline AgentStatus = "offline"
	AgentOnline  AgentStatus = "online"
)

// UnmarshalJSON reads a status as a string or a number (offline 1, online 2).
func (s *AgentStatus) UnmarshalJSON(b []byte) error {
	v, err := readEnum(b, func(i int) (string, bool) {
		switch i {
		case 1:
			return string(AgentOffline), true
		case 2:
			return string(AgentOnline), true
		}
		return "", false
	}, func(v string) (string, bool) {
		for _, t := range []AgentStatus{AgentOffline, AgentOnline} {
			if strings.EqualFold(string(t), v) {
				return string(t), true
			}
		}
		return "", false
	})
	if err != nil {
		return fmt.Errorf("agent status: %w", err)
	}
	*s = AgentStatus(v)
	return nil
}

// TimelineRecordState is where a timeline record is in its life.
type TimelineRecordState string

// Timeline record states.
const (
	StatePending    TimelineRecordState = "pending"
	StateInProgress TimelineRecordState = "inProgress"
	StateCompleted  TimelineRecordState = "completed"
)

// UnmarshalJSON reads a state as a string or a number.
func (s *TimelineRecordState) UnmarshalJSON(b []byte) error {
	all := []TimelineRecordState{StatePending, StateInProgress, StateCompleted}
	v, err := readEnum(b, func(i int) (string, bool) {
		if i < 0 || i >= len(all) {
			return "", false
		}
		return string(all[i]), true
	}, func(v string) (string, bool) {
		for _, t := range all {
			if strings.EqualFold(string(t), v) {
				return string(t), true
			}
		}
		return "", false
	})
	if err != nil {
		return fmt.Errorf("timeline record state: %w", err)
	}
	*s = TimelineRecordState(v)
	return nil
}

func readEnum(b []byte, byNumber func(int) (string, bool), byName func(string) (string, bool)) (string, error) {
	if string(b) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if v, ok := byName(s); ok {
			return v, nil
		}
		if i, err := strconv.Atoi(s); err == nil {
			if v, ok := byNumber(i); ok {
				return v, nil
			}
		}
		return "", fmt.Errorf("unknown value %q", s)
	}
	var i int
	if err := json.Unmarshal(b, &i); err != nil {
		return "", fmt.Errorf("want a string or a number, got %s", truncate(b, 32))
	}
	if v, ok := byNumber(i); ok {
		return v, nil
	}
	return "", fmt.Errorf("unknown value %d", i)
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
