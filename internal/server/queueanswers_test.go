package server

import (
	"context"
	"errors"
	"strconv"
	"testing"
)

// TestQueueAnswers checks the cache of queue watch answers: an answer is
// read once per revision and pool, an older revision never takes the place
// of a newer one, and a failed read is not kept.
func TestQueueAnswers(t *testing.T) {
	c := newQueueAnswers()
	ctx := context.Background()
	reads := 0
	failing := false
	get := func(pool int, rev int64) string {
		t.Helper()
		b, err := c.get(ctx, pool, rev, func(context.Context) ([]byte, error) {
			reads++
			if failing {
				return nil, errors.New("store down")
			}
			return []byte(strconv.Itoa(pool) + "@" + strconv.FormatInt(rev, 10) + "#" + strconv.Itoa(reads)), nil
		})
		if err != nil {
			return "error"
		}
		return string(b)
	}
	steps := []struct {
		name    string
		pool    int
		rev     int64
		failing bool
		want    string
	}{
		{"first read", 1, 10, false, "1@10#1"},
		{"same revision: shared", 1, 10, false, "1@10#1"},
		{"other pool: its own", 2, 10, false, "2@10#2"},
		{"newer revision: read again", 1, 11, false, "1@11#3"},
		{"older revision: read, not from the newer answer", 1, 10, false, "1@10#4"},
		{"the newer answer is still kept", 1, 11, false, "1@11#3"},
		{"a failed read", 1, 12, true, "error"},
		{"is not kept", 1, 12, false, "1@12#6"},
		{"the answer after it is", 1, 12, false, "1@12#6"},
	}
	for _, s := range steps {
		failing = s.failing
		if got := get(s.pool, s.rev); got != s.want {
			t.Errorf("%s: get(pool %d, revision %d) = %q, want %q", s.name, s.pool, s.rev, got, s.want)
		}
	}
}

// TestUncertainWrite checks that a write cut short by its caller's context,
// which the store may have kept, moves every pool's queue revision (so no
// watcher misses it and no cached answer outlives it), and that other
// outcomes do not.
func TestUncertainWrite(t *testing.T) {
	s, err := New(Config{AdminToken: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name  string
		ctx   context.Context
		err   error
		moves bool
	}{
		{"succeeded", context.Background(), nil, false},
		{"failed in the store", context.Background(), errors.New("conflict"), false},
		{"caller gone, store error", canceled, errors.New("conflict"), false},
		{"caller gone before the store answered", canceled, context.Canceled, true},
	}
	for _, tc := range tests {
		before1, _ := s.queues.watch(1)
		before2, _ := s.queues.watch(2)
		s.uncertainWrite(tc.ctx, tc.err)
		after1, _ := s.queues.watch(1)
		after2, _ := s.queues.watch(2)
		if moved := after1 > before1 && after2 > before2; moved != tc.moves || (after1 > before1) != (after2 > before2) {
			t.Errorf("%s: revisions %d→%d and %d→%d; want both moved: %t", tc.name, before1, after1, before2, after2, tc.moves)
		}
	}
}
