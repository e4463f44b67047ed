package agent

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentry-dev/agentry/internal/poll"
)

// lines collects a process's output lines.
type lines struct {
	mu  sync.Mutex
	all []string
	ch  chan string
}

func newLines() *lines { return &lines{ch: make(chan string, 100)} }

func (l *lines) add(s string) {
	l.mu.Lock()
	l.all = append(l.all, s)
	l.mu.Unlock()
	l.ch <- s
}

func (l *lines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

// waitFor blocks until the process printed want.
func (l *lines) waitFor(t *testing.T, want string) {
	t.Helper()
	for s := range l.ch {
		if s == want {
			return
		}
	}
}

func bashProcess(t *testing.T, script string, clock Clock, out, errOut *lines) process {
	t.Helper()
	bash, err := lookBash()
	if err != nil {
		t.Fatalf("the agent runs steps with bash, which is not on PATH: %v", err)
	}
	return process{
		argv: []string{bash, "--noprofile", "--norc", "-e", "-c", script}, dir: t.TempDir(), env: []string{"PATH=" + os.Getenv("PATH")},
		grace: time.Hour, clock: clock, stdout: out.add, stderr: errOut.add,
	}
}

func TestProcessOutputAndExitCode(t *testing.T) {
	tests := []struct {
		script         string
		code           int
		stdout, stderr []string
	}{
		{`echo one; echo two >&2; printf 'three\r\nno newline'`, 0, []string{"one", "three", "no newline"}, []string{"two"}},
		{`echo before; exit 3`, 3, []string{"before"}, nil},
		{`false; echo not reached`, 1, nil, nil},
		{`kill -KILL $$`, -1, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.script, func(t *testing.T) {
			out, errOut := newLines(), newLines()
			code, err := bashProcess(t, tt.script, realClock{}, out, errOut).run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if code != tt.code {
				t.Errorf("exit code = %d, want %d", code, tt.code)
			}
			if got := out.get(); !slices.Equal(got, tt.stdout) {
				t.Errorf("stdout = %q, want %q", got, tt.stdout)
			}
			if got := errOut.get(); !slices.Equal(got, tt.stderr) {
				t.Errorf("stderr = %q, want %q", got, tt.stderr)
			}
		})
	}
}

// Without a separate stderr reader, a step's two streams reach the log in
// the order the step wrote them, as a terminal shows them.
func TestProcessStreamsKeepTheirOrderInOnePipe(t *testing.T) {
	var mu sync.Mutex
	var got []string
	p := bashProcess(t, `for i in $(seq 1 300); do echo out-$i; echo err-$i >&2; done`, realClock{}, newLines(), newLines())
	p.stdout = func(line string) { mu.Lock(); got = append(got, line); mu.Unlock() }
	p.stderr = nil
	if code, err := p.run(context.Background()); err != nil || code != 0 {
		t.Fatalf("run = %d, %v", code, err)
	}
	var want []string
	for i := 1; i <= 300; i++ {
		want = append(want, fmt.Sprintf("out-%d", i), fmt.Sprintf("err-%d", i))
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Errorf("%d lines, first difference at line %d: got %q, want %q", len(got), i+1, got[i:min(i+2, len(got))], want[i:min(i+2, len(want))])
	}
}

func TestProcessLongLineIsSplit(t *testing.T) {
	out := newLines()
	code, err := bashProcess(t, `head -c 150000 /dev/zero | tr '\0' x; echo`, realClock{}, out, newLines()).run(context.Background())
	if err != nil || code != 0 {
		t.Fatalf("run = %d, %v", code, err)
	}
	got := out.get()
	total := 0
	for _, l := range got {
		if len(l) > maxLineBytes {
			t.Errorf("line of %d bytes, want at most %d", len(l), maxLineBytes)
		}
		total += len(l)
	}
	if total != 150000 {
		t.Errorf("got %d bytes of output, want 150000", total)
	}
}

// A canceled step gets SIGTERM first; one that ignores it is killed when the
// grace period ends.
func TestProcessCancelTermThenKill(t *testing.T) {
	clock := newFakeClock(false)
	out := newLines()
	p := bashProcess(t, `trap 'echo got-term' TERM; echo ready; while :; do sleep 0.2 || true; done`, clock, out, newLines())
	p.grace = 10 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := p.run(ctx)
		done <- result{code, err}
	}()
	out.waitFor(t, "ready")
	cancel()
	out.waitFor(t, "got-term") // SIGTERM arrived and was survived
	if d := <-clock.waits; d != p.grace {
		t.Fatalf("waited %s after SIGTERM, want the grace period %s", d, p.grace)
	}
	clock.Advance(p.grace)
	r := <-done
	if r.err != nil || r.code != -1 {
		t.Fatalf("run = %d, %v; want -1 (killed)", r.code, r.err)
	}
}

// Background processes a step leaves behind are ended with it, so they can
// neither outlive the step nor hold its output open.
func TestProcessEndsLeftoverGroup(t *testing.T) {
	out := newLines()
	code, err := bashProcess(t, `sleep 300 & echo $!`, realClock{}, out, newLines()).run(context.Background())
	if err != nil || code != 0 {
		t.Fatalf("run = %d, %v", code, err)
	}
	got := out.get()
	if len(got) != 1 {
		t.Fatalf("output %q, want the background pid", got)
	}
	pid, err := strconv.Atoi(got[0])
	if err != nil {
		t.Fatal(err)
	}
	// SIGKILL is asynchronous, so watch the process die (or turn zombie,
	// until its new parent reaps it) rather than read its state once.
	if err := poll.Until(context.Background(), 10*time.Second, 10*time.Millisecond, func() error {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return nil // gone
		}
		if fields := strings.Fields(string(stat)); len(fields) > 2 && fields[2] != "Z" && fields[2] != "X" {
			return fmt.Errorf("state %s", fields[2])
		}
		return nil
	}); err != nil {
		t.Fatalf("background process %d still running: %v", pid, err)
	}
}
