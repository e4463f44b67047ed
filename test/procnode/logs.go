package procnode

import (
	"bytes"
	"context"
	"io"
	"os"
	"sync"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// logFile is a container's combined stdout and stderr on disk. Followers are
// woken on every write and when the container's output ends.
type logFile struct {
	path string

	mu      sync.Mutex
	f       *os.File
	changed chan struct{} // closed and replaced on every write and on close
	ended   bool
}

func createLogFile(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &logFile{path: path, f: f, changed: make(chan struct{})}, nil
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return 0, os.ErrClosed
	}
	n, err := l.f.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return n, err
}

// end closes the file; followers read what is left and stop.
func (l *logFile) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return
	}
	l.ended = true
	_ = l.f.Close()
	close(l.changed)
}

// state returns a channel that is closed at the next change, and whether the
// output has ended.
func (l *logFile) state() (<-chan struct{}, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed, l.ended
}

// open serves `kubectl logs`: tailLines and limitBytes are honoured, follow
// streams until the container's output ends or ctx is done; timestamps and
// since* are not supported (the log holds no times).
func (l *logFile) open(ctx context.Context, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	var tail []byte
	if opts.Tail > 0 {
		// Keep the last lines of what is there now; following goes on from there.
		data, err := io.ReadAll(f)
		if err != nil {
			_ = f.Close()
			return nil, err
		}
		tail = lastLines(data, opts.Tail)
	}
	var r io.Reader = f
	if opts.Follow {
		r = &followReader{ctx: ctx, f: f, l: l}
	}
	if tail != nil {
		r = io.MultiReader(bytes.NewReader(tail), r)
	}
	if opts.LimitBytes > 0 {
		r = io.LimitReader(r, int64(opts.LimitBytes))
	}
	return struct {
		io.Reader
		io.Closer
	}{r, f}, nil
}

func lastLines(data []byte, n int) []byte {
	end := len(data)
	if end > 0 && data[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if data[i] == '\n' {
			n--
			if n == 0 {
				return data[i+1:]
			}
		}
	}
	return data
}

// followReader turns EOF into a wait for more output, until the output ends.
type followReader struct {
	ctx context.Context
	f   io.Reader
	l   *logFile
}

func (r *followReader) Read(p []byte) (int, error) {
	for {
		changed, ended := r.l.state()
		n, err := r.f.Read(p)
		if n > 0 || err != io.EOF {
			return n, err
		}
		if ended {
			return 0, io.EOF
		}
		select {
		case <-changed:
		case <-r.ctx.Done():
			return 0, io.EOF
		}
	}
}
