package agent

import "time"

// Clock is the agent's view of time: the renewal, feed and retry loops wait
// on it, so tests can drive them without sleeping.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
