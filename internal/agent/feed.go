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
// are numbered from 1 in the order they were added.
type feedBuffer struct {
	mu      sync.Mutex
	lines   []string
	first   int64 // number of lines[0]
	dropped int64
}

func newFeedBuffer() *feedBuffer { return &feedBuffer{first: 1} }

func (b *feedBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
	if over := len(b.lines) - maxFeedBacklog; over > 0 {
		b.lines = append(b.lines[:0:0], b.lines[over:]...)
		b.first += int64(over)
		b.dropped += int64(over)
	}
}

// take empties the buffer and returns what it held and the number of its
// first line.
func (b *feedBuffer) take() (first int64, lines []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	first, lines = b.first, b.lines
	b.first += int64(len(b.lines))
	b.lines = nil
	return first, lines
}
