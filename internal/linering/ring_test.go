package linering

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func line(i int) Line {
	return Line{Time: time.Unix(int64(i), 0), Slot: i % 2, PID: 100 + i, Stream: "stdout", Text: "line " + strconv.Itoa(i)}
}

func TestLastAndBounds(t *testing.T) {
	const size = 20 * (lineOverhead + 7)
	r := New(Options{Size: size, MaxLine: 10})
	for i := range 50 {
		r.Add(line(i))
	}
	last := r.Last(5)
	if len(last) != 5 || last[0].Text != "line 45" || last[4].Text != "line 49" {
		t.Errorf("last 5: %+v", last)
	}
	all := r.Last(1000)
	total := 0
	for _, l := range all {
		total += len(l.Text) + lineOverhead
	}
	if total > size || len(all) < 10 {
		t.Errorf("kept %d lines costing %d bytes, want at most %d and the newest ones", len(all), total, size)
	}
	r.Add(Line{Text: strings.Repeat("x", 1000)})
	if l := r.Last(1)[0]; len(l.Text) != 10 || !l.Cut {
		t.Errorf("a long line kept as %d bytes, cut %v; want 10, cut", len(l.Text), l.Cut)
	}
}

func TestFollow(t *testing.T) {
	r := New(Options{})
	r.Add(line(1))
	last, f := r.Follow(10)
	defer f.Close()
	r.Add(line(2))
	if len(last) != 1 || last[0].Text != "line 1" {
		t.Errorf("before following: %+v", last)
	}
	if l := <-f.Lines(); l.Text != "line 2" {
		t.Errorf("followed %+v, want line 2", l)
	}
	// A follower that does not read never holds the writer up.
	for i := range 3 * followBuffer {
		r.Add(line(i))
	}
	if n := f.Dropped(); n != 2*followBuffer {
		t.Errorf("dropped %d, want %d", n, 2*followBuffer)
	}
}

// Empty lines cost their overhead: a flood of them keeps the ring
// bounded in lines too.
func TestEmptyLinesAreBounded(t *testing.T) {
	r := New(Options{Size: 64 << 10})
	for range 100000 {
		r.Add(Line{Stream: "stdout"})
	}
	if n := len(r.Last(1 << 20)); n > (64<<10)/lineOverhead {
		t.Errorf("kept %d empty lines in a 64 KiB ring, want at most %d", n, (64<<10)/lineOverhead)
	}
	if cap(r.lines) > 4*(64<<10)/lineOverhead {
		t.Errorf("the ring's slice grew to %d", cap(r.lines))
	}
}
