package linering

import (
	"sync"
	"time"
)

// Defaults for Options' zero values.
const (
	DefaultSize    = 1 << 20 // bytes of lines kept
	DefaultMaxLine = 4 << 10 // bytes of one line kept
	// followBuffer is how many lines a follower may lag behind.
	followBuffer = 1024
	// lineOverhead is what a kept line costs besides its text: an empty
	// line is no free line.
	lineOverhead = 128
)

// Line is one line a worker wrote.
type Line struct {
	Time       time.Time
	Slot       int
	Generation int
	PID        int
	Stream     string // "stdout" or "stderr"
	Text       string // without its newline; cut at MaxLine
	Cut        bool   // Text is the start of a longer line
}

// Options bound a Ring. The zero value is usable.
type Options struct {
	// Size bounds the bytes kept (each line's text and a fixed
	// overhead); 0 means DefaultSize.
	Size int
	// MaxLine bounds one line; 0 means DefaultMaxLine.
	MaxLine int
}

// Ring holds the last lines. It is safe for concurrent use.
type Ring struct {
	mu        sync.Mutex
	opts      Options
	lines     []Line // oldest first, from start
	start     int
	bytes     int
	followers map[*Follower]bool
}

// New returns an empty Ring.
func New(opts Options) *Ring {
	if opts.Size <= 0 {
		opts.Size = DefaultSize
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = DefaultMaxLine
	}
	return &Ring{opts: opts, followers: map[*Follower]bool{}}
}

// MaxLine is the longest text a Line keeps.
func (r *Ring) MaxLine() int { return r.opts.MaxLine }

// Add keeps l (its text cut at MaxLine), forgetting the oldest lines
// beyond Size, and passes it to every follower. It never blocks.
func (r *Ring) Add(l Line) {
	if len(l.Text) > r.opts.MaxLine {
		l.Text, l.Cut = l.Text[:r.opts.MaxLine], true
	}
	l.Text = string([]byte(l.Text)) // own the bytes: callers reuse theirs
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, l)
	r.bytes += len(l.Text) + lineOverhead
	for r.bytes > r.opts.Size && r.start < len(r.lines) {
		r.bytes -= len(r.lines[r.start].Text) + lineOverhead
		r.lines[r.start] = Line{}
		r.start++
	}
	if r.start > len(r.lines)/2 {
		r.lines = append(r.lines[:0], r.lines[r.start:]...)
		r.start = 0
	}
	for f := range r.followers {
		select {
		case f.c <- l:
		default:
			f.dropped++
		}
	}
}

// Last returns the last n lines, oldest first.
func (r *Ring) Last(n int) []Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last(n)
}

func (r *Ring) last(n int) []Line {
	kept := r.lines[r.start:]
	if n < len(kept) {
		kept = kept[len(kept)-n:]
	}
	return append([]Line(nil), kept...)
}

// Follow returns the last n lines and a Follower of every line added
// after them. Close it when done.
func (r *Ring) Follow(n int) ([]Line, *Follower) {
	f := &Follower{r: r, c: make(chan Line, followBuffer)}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.followers[f] = true
	return r.last(n), f
}

// Follower receives the lines added after Follow.
type Follower struct {
	r       *Ring
	c       chan Line
	dropped int // guarded by r.mu
}

// Lines delivers the new lines.
func (f *Follower) Lines() <-chan Line { return f.c }

// Dropped returns how many lines were lost since the last call because
// the follower did not keep up.
func (f *Follower) Dropped() int {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	n := f.dropped
	f.dropped = 0
	return n
}

// Close stops following.
func (f *Follower) Close() {
	f.r.mu.Lock()
	delete(f.r.followers, f)
	f.r.mu.Unlock()
}
