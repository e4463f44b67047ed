package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// maxLineBytes is where an endless output line is cut into several.
const maxLineBytes = 64 << 10

// drainTimeout is how long output is still read after a step's process
// group is gone; only a process that left the group can hold it open.
const drainTimeout = 2 * time.Second

// process is one step's script process.
type process struct {
	argv   []string
	dir    string
	env    []string
	grace  time.Duration // between SIGTERM and SIGKILL when ctx ends
	clock  Clock
	stdout func(line string)
	// stderr, when set, reads the standard error stream apart. Lines from
	// the two streams may then reach the log out of the order they were
	// written in; when it is nil, both streams share one pipe, which keeps
	// them in order, as a terminal shows them.
	stderr func(line string)
}

// run starts the process in its own process group and waits for it. When
// ctx ends, the group gets SIGTERM, and SIGKILL after the grace period.
// Whatever the group left behind is killed when the process exits, so no
// background process outlives its step. The exit code is -1 when the process
// died of a signal; err is only set when it could not start.
func (p process) run(ctx context.Context) (exitCode int, err error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return -1, err
	}
	defer outR.Close()
	errR, errW := outR, outW
	if p.stderr != nil {
		if errR, errW, err = os.Pipe(); err != nil {
			outW.Close()
			return -1, err
		}
		defer errR.Close()
	}

	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Dir, cmd.Env = p.dir, p.env
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	outW.Close()
	errW.Close() // closing the shared pipe twice is harmless
	if err != nil {
		return -1, err
	}
	var readers sync.WaitGroup
	readers.Go(func() { readLines(outR, p.stdout) })
	if p.stderr != nil {
		readers.Go(func() { readLines(errR, p.stderr) })
	}

	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	group := -cmd.Process.Pid
	select {
	case <-exited:
	case <-ctx.Done():
		_ = syscall.Kill(group, syscall.SIGTERM)
		select {
		case <-exited:
		case <-p.clock.After(p.grace):
			_ = syscall.Kill(group, syscall.SIGKILL)
			<-exited
		}
	}
	_ = syscall.Kill(group, syscall.SIGKILL)
	deadline := time.Now().Add(drainTimeout)
	_ = outR.SetReadDeadline(deadline)
	_ = errR.SetReadDeadline(deadline) // the same pipe when the streams share one
	readers.Wait()
	return cmd.ProcessState.ExitCode(), nil
}

// readLines calls emit for every line read from r, without its line ending.
func readLines(r io.Reader, emit func(string)) {
	br := bufio.NewReaderSize(r, maxLineBytes)
	for {
		line, _, err := br.ReadLine()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
				emit("(output ended: " + err.Error() + ")")
			}
			return
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		emit(string(line))
	}
}
