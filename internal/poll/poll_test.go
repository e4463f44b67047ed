package poll

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	ctx := context.Background()
	calls := 0
	if err := Until(ctx, time.Minute, time.Millisecond, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || calls != 3 {
		t.Errorf("Until = %v after %d calls, want nil after 3", err, calls)
	}

	notYet := errors.New("not yet")
	err := Until(ctx, 20*time.Millisecond, time.Millisecond, func() error { return notYet })
	if !errors.Is(err, notYet) || !strings.Contains(err.Error(), "gave up after 20ms") {
		t.Errorf("Until past its timeout = %v, want one that wraps the last error and says so", err)
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := Until(canceled, 0, time.Millisecond, func() error { return notYet }); !errors.Is(err, context.Canceled) || !errors.Is(err, notYet) {
		t.Errorf("Until with its context ended = %v, want context.Canceled and the last error", err)
	}
}

func TestHolds(t *testing.T) {
	ctx := context.Background()
	calls := 0
	if err := Holds(ctx, 20*time.Millisecond, time.Millisecond, func() error { calls++; return nil }); err != nil || calls < 2 {
		t.Errorf("Holds = %v after %d calls, want nil after several", err, calls)
	}
	broke := errors.New("broke")
	calls = 0
	if err := Holds(ctx, time.Minute, time.Millisecond, func() error {
		if calls++; calls == 3 {
			return broke
		}
		return nil
	}); !errors.Is(err, broke) || calls != 3 {
		t.Errorf("Holds = %v after %d calls, want the error of call 3", err, calls)
	}
}
