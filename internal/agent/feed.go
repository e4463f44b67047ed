package agent

import (
	"sync"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// MaxFeedLines is the most lines one feed call carries.
const MaxFeedLines = 100

// MaxFeedBytes bounds the text of one feed call, well under the 1 MiB a
// server may accept as a JSON body.
const MaxFeedBytes = 256 << 10

// maxFeedBacklog bounds the lines held for the live view while the server is
// slow; older lines are dropped (the uploaded log still has them).
const maxFeedBacklog = 10 * MaxFeedLines

// FeedBatches splits lines, the first of which is line number first (1-based),
// into feed calls of at most MaxFeedLines lines and, unless a single line is
// longer, MaxFeedBytes of text each.
func FeedBatches(stepID string, first int64, lines []string) []pipelines.TimelineRecordFeedLines {
	var out []pipelines.TimelineRecordFeedLines
	for len(lines) > 0 {
		n, size := 0, 0
		for n < len(lines) && n < MaxFeedLines && (n == 0 || size+len(lines[n]) <= MaxFeedBytes) {
			size += len(lines[n])
			n++
		}
		start := first
		out = append(out, pipelines.TimelineRecordFeedLines{Count: n, Value: lines[:n:n], StepID: stepID, StartLine: &start})
		lines = lines[n:]
		first += int64(n)
	}
	return out
}

// feedBuffer holds a step's console lines until the next feed call. Lines
// are numbered from 1 in the order they were added. While the server is
// slower than the step, only the newest maxFeedBacklog lines are kept.
type feedBuffer struct {
	mu sync.Mutex
	// lines[start:] are held; dropping moves start, so a step printing
	// millions of lines costs O(1) per line, not a copy of the backlog.
	lines   []string
	start   int
	first   int64 // number of lines[start]
	dropped int64
}

func newFeedBuffer() *feedBuffer { return &feedBuffer{first: 1} }

func (b *feedBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
	if len(b.lines)-b.start > maxFeedBacklog {
		b.lines[b.start] = ""
		b.start++
		b.first++
		b.dropped++
	}
	if b.start >= maxFeedBacklog {
		n := copy(b.lines, b.lines[b.start:])
		clear(b.lines[n:])
		b.lines, b.start = b.lines[:n], 0
	}
}

// take empties the buffer and returns what it held and the number of its
// first line.
func (b *feedBuffer) take() (first int64, lines []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	first, lines = b.first, b.lines[b.start:]
	b.first += int64(len(lines))
	b.lines, b.start = nil, 0
	return first, lines
}
