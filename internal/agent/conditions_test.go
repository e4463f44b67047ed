package agent

import (
	"testing"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

func TestShouldRun(t *testing.T) {
	tests := []struct {
		cond     string
		failed   bool
		canceled bool
		want     bool
		wantErr  bool
	}{
		{"", false, false, true, false},
		{"", true, false, false, false},
		{"", false, true, false, false},
		{"succeeded()", false, false, true, false},
		{" Succeeded ( ) ", true, false, false, false},
		{"succeeded()", false, true, false, false},
		{"failed()", false, false, false, false},
		{"failed()", true, false, true, false},
		{"failed()", true, true, false, false},
		{"always()", true, false, true, false},
		{"always()", false, true, true, false},
		{"succeededOrFailed()", true, false, true, false},
		{"succeededOrFailed()", false, true, false, false},
		{"canceled()", false, false, false, false},
		{"canceled()", true, false, false, false},
		{"canceled()", false, true, true, false},
		{"eq(variables.x, 'y')", false, false, false, true},
	}
	for _, tt := range tests {
		got, err := ShouldRun(tt.cond, tt.failed, tt.canceled)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ShouldRun(%q, failed=%v, canceled=%v) = %v, %v; want %v, error %v", tt.cond, tt.failed, tt.canceled, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestJobResult(t *testing.T) {
	const (
		ok     = pipelines.ResultSucceeded
		issues = pipelines.ResultSucceededWithIssues
		failed = pipelines.ResultFailed
		skip   = pipelines.ResultSkipped
		cancel = pipelines.ResultCanceled
	)
	tests := []struct {
		name  string
		steps []pipelines.TaskResult
		stop  pipelines.TaskResult
		want  pipelines.TaskResult
	}{
		{"no steps", nil, "", ok},
		{"all succeeded", []pipelines.TaskResult{ok, ok}, "", ok},
		{"one failed", []pipelines.TaskResult{ok, failed, skip}, "", failed},
		{"allowed failure", []pipelines.TaskResult{ok, issues}, "", issues},
		{"failure beats issues", []pipelines.TaskResult{issues, failed}, "", failed},
		{"canceled", []pipelines.TaskResult{ok, cancel}, cancel, cancel},
		{"abandoned", []pipelines.TaskResult{ok}, pipelines.ResultAbandoned, pipelines.ResultAbandoned},
		{"skipped only", []pipelines.TaskResult{skip}, "", ok},
	}
	for _, tt := range tests {
		if got := JobResult(tt.steps, tt.stop); got != tt.want {
			t.Errorf("%s: JobResult = %q, want %q", tt.name, got, tt.want)
		}
	}
}
