package agent

import (
	"fmt"
	"strings"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// ShouldRun decides whether a step runs, given its condition, whether an
// earlier step has failed and whether the server canceled the job (or it ran
// out of time). It knows the status functions Azure Pipelines uses for steps
// without an expression, with their meaning on Azure: succeeded() and
// failed() are false once the job is canceled, succeededOrFailed() runs
// unless it is canceled, always() runs in every case, canceled() only after a
// cancellation. Anything else is an error, so a step is never run (or
// skipped) on a guess.
func ShouldRun(condition string, failedSoFar, canceled bool) (bool, error) {
	c := strings.ToLower(strings.Join(strings.Fields(condition), ""))
	switch c {
	case "", "succeeded()":
		return !failedSoFar && !canceled, nil
	case "failed()":
		return failedSoFar && !canceled, nil
	case "succeededorfailed()":
		return !canceled, nil
	case "always()":
		return true, nil
	case "canceled()", "cancelled()":
		return canceled, nil
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
