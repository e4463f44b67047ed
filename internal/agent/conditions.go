package agent

import (
	"fmt"
	"strings"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// ShouldRun decides whether a step runs, given its condition and whether an
// earlier step has failed. It knows the status functions Azure Pipelines
// uses for steps without an expression; anything else is an error, so a
// step is never run (or skipped) on a guess. Once a job is canceled no
// further step runs, whatever its condition.
func ShouldRun(condition string, failedSoFar bool) (bool, error) {
	c := strings.ToLower(strings.Join(strings.Fields(condition), ""))
	switch c {
	case "", "succeeded()":
		return !failedSoFar, nil
	case "failed()":
		return failedSoFar, nil
	case "always()", "succeededorfailed()":
		return true, nil
	case "canceled()":
		return false, nil
	}
	return false, fmt.Errorf("condition %q is not supported: agentry-agent knows succeeded(), failed(), succeededOrFailed(), always() and canceled()", condition)
}

// JobResult combines step results: canceled or abandoned when the job was
// stopped (stop is empty otherwise), failed when any step failed, with
// issues when a step failed but was allowed to, else succeeded.
func JobResult(steps []pipelines.TaskResult, stop pipelines.TaskResult) pipelines.TaskResult {
	if stop != "" {
		return stop
	}
	out := pipelines.ResultSucceeded
	for _, r := range steps {
		switch r {
		case pipelines.ResultFailed, pipelines.ResultCanceled, pipelines.ResultAbandoned:
			return pipelines.ResultFailed
		case pipelines.ResultSucceededWithIssues:
			out = pipelines.ResultSucceededWithIssues
		}
	}
	return out
}
