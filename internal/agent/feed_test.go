package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFeedBatches(t *testing.T) {
	big := strings.Repeat("b", MaxFeedBytes/2)
	huge := strings.Repeat("h", MaxFeedBytes+1)
	lines := func(from, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprint(from+i))
		}
		return out
	}
	type batch struct {
		start int64
		lines []string
	}
	tests := []struct {
		name  string
		first int64
		lines []string
		want  []batch
	}{
		{"none", 1, nil, nil},
		{"one short batch", 1, lines(1, 3), []batch{{1, lines(1, 3)}}},
		{"exactly max", 5, lines(5, 100), []batch{{5, lines(5, 100)}}},
		{"split", 1, lines(1, 250), []batch{{1, lines(1, 100)}, {101, lines(101, 100)}, {201, lines(201, 50)}}},
		{"split by size", 1, []string{big, big, big, "x"}, []batch{{1, []string{big, big}}, {3, []string{big, "x"}}}},
		{"one line longer than the limit", 1, []string{huge, "x"}, []batch{{1, []string{huge}}, {2, []string{"x"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []batch
			for _, b := range FeedBatches("step", tt.first, tt.lines) {
				if b.Count != len(b.Value) || b.StepID != "step" || b.StartLine == nil {
					t.Fatalf("malformed batch %+v", b)
				}
				got = append(got, batch{*b.StartLine, b.Value})
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(batch{})); diff != "" {
				t.Errorf("batches (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFeedBufferNumbersLines(t *testing.T) {
	b := newFeedBuffer()
	b.add("a")
	b.add("b")
	first, got := b.take()
	if first != 1 || !cmp.Equal(got, []string{"a", "b"}) {
		t.Fatalf("take = %d %q, want 1 [a b]", first, got)
	}
	b.add("c")
	if first, got = b.take(); first != 3 || !cmp.Equal(got, []string{"c"}) {
		t.Fatalf("take = %d %q, want 3 [c]", first, got)
	}
	if first, got = b.take(); first != 4 || len(got) != 0 {
		t.Fatalf("empty take = %d %q, want 4 []", first, got)
	}
}

func TestFeedBufferDropsOldestWhenBehind(t *testing.T) {
	b := newFeedBuffer()
	for i := 1; i <= maxFeedBacklog+5; i++ {
		b.add(fmt.Sprint(i))
	}
	first, got := b.take()
	if first != 6 || len(got) != maxFeedBacklog || got[0] != "6" {
		t.Fatalf("take = first %d, %d lines starting %q; want first 6, %d lines starting \"6\"", first, len(got), got[0], maxFeedBacklog)
	}
}
