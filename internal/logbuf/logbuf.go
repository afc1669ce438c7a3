package logbuf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// DefaultSize is the ring's size when Options.Size is zero: room for a
// few thousand lines while the reader lags.
const DefaultSize = 256 << 10

// Options configure a Writer. The zero value is usable.
type Options struct {
	// Size is the ring's size in bytes; zero means DefaultSize. A line
	// longer than it is always dropped.
	Size int
	// Reserve is how much of the ring writes through Bulk must leave
	// free, so that a flood of bulk output (the workers') cannot crowd
	// out baton's own log lines; zero means a quarter of Size.
	Reserve int
	// Note formats the line that says n lines were dropped; nil means a
	// plain "baton: N lines of output dropped ..." line.
	Note func(n int) []byte
}

// Writer is an io.Writer that never blocks; see the package comment. Its
// methods may be called concurrently.
type Writer struct {
	out     io.Writer
	note    func(n int) []byte
	reserve int

	mu   sync.Mutex
	ring []byte
	r, n int // the buffered bytes are ring[r:r+n], wrapping around
	// appended and written count the bytes that went into and out of
	// the ring. lost lines were dropped since the last note, which goes
	// out where the first of them would have been: once written reaches
	// lostAt.
	appended, written, lostAt int64
	lost                      int
	total                     int64
	closing                   bool
	wake                      chan struct{} // a token: data or closing
	done                      chan struct{} // closed when the goroutine has ended
}

// New returns a Writer for out and starts its goroutine, which ends with
// Close.
func New(out io.Writer, o Options) *Writer {
	if o.Size <= 0 {
		o.Size = DefaultSize
	}
	if o.Reserve <= 0 || o.Reserve >= o.Size {
		o.Reserve = o.Size / 4
	}
	if o.Note == nil {
		o.Note = func(n int) []byte {
			return fmt.Appendf(nil, "baton: %d lines of output dropped: baton's output is not read fast enough\n", n)
		}
	}
	w := &Writer{out: out, note: o.Note, reserve: o.Reserve, ring: make([]byte, o.Size), wake: make(chan struct{}, 1), done: make(chan struct{})}
	// Touch every page now: the ring's share of baton's resident memory
	// is then paid at start, not page by page over the first hours of
	// output, where it would look like a leak.
	for i := 0; i < len(w.ring); i += 4096 {
		w.ring[i] = 0
	}
	go w.drain()
	return w
}

// Write buffers p, a whole line, or drops it when there is no room (or
// the Writer is closed). It never fails and never waits on the underlying
// writer.
func (w *Writer) Write(p []byte) (int, error) { return w.write(p, 0) }

// Bulk returns a writer into the same ring for output that may come in
// floods: its lines are dropped once only Options.Reserve is left.
func (w *Writer) Bulk() io.Writer { return bulk{w} }

type bulk struct{ w *Writer }

func (b bulk) Write(p []byte) (int, error) { return b.w.write(p, b.w.reserve) }

// Dropped, on the bulk writer, counts the Writer's drops.
func (b bulk) Dropped() int64 { return b.w.Dropped() }

func (w *Writer) write(p []byte, keepFree int) (int, error) {
	w.mu.Lock()
	if w.closing || len(p) > len(w.ring)-w.n-keepFree {
		if !w.closing {
			if w.lost == 0 {
				w.lostAt = w.appended
			}
			w.lost++
		}
		w.total++
		w.mu.Unlock()
		return len(p), nil
	}
	end := (w.r + w.n) % len(w.ring)
	c := copy(w.ring[end:], p)
	copy(w.ring, p[c:])
	w.n += len(p)
	w.appended += int64(len(p))
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// Dropped returns how many lines were dropped so far.
func (w *Writer) Dropped() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.total
}

// drain copies the ring to the underlying writer, in as few writes as the
// wrap-around allows, until Close. Producers only ever write into the free
// part of the ring, so the part being written out needs no lock.
func (w *Writer) drain() {
	defer close(w.done)
	for {
		w.mu.Lock()
		for w.n == 0 && w.lost == 0 && !w.closing {
			w.mu.Unlock()
			<-w.wake
			w.mu.Lock()
		}
		if w.n == 0 && w.lost == 0 {
			w.mu.Unlock()
			return // closing, and all written
		}
		end := min(w.r+w.n, len(w.ring))
		if w.lost > 0 {
			end = min(end, w.r+int(w.lostAt-w.written))
		}
		seg := w.ring[w.r:end]
		w.mu.Unlock()

		failed := 0
		if len(seg) > 0 {
			if n, err := w.out.Write(seg); err != nil {
				failed = lines(seg[min(max(n, 0), len(seg)):])
			}
		}
		w.mu.Lock()
		w.total += int64(failed)
		w.r = (w.r + len(seg)) % len(w.ring)
		w.n -= len(seg)
		w.written += int64(len(seg))
		lost := 0
		if w.lost > 0 && w.written == w.lostAt {
			lost, w.lost = w.lost, 0
		}
		w.mu.Unlock()
		if lost > 0 {
			w.out.Write(w.note(lost))
		}
	}
}

// lines counts the lines in p, a last one without its newline included.
func lines(p []byte) int {
	n := bytes.Count(p, []byte{'\n'})
	if len(p) > 0 && p[len(p)-1] != '\n' {
		n++
	}
	return n
}

// ErrFlushTimeout is returned by Close when the underlying writer did not
// take everything in time.
var ErrFlushTimeout = errors.New("logbuf: output not flushed in time")

// Close drops further writes and waits, up to timeout, until everything
// buffered was written.
func (w *Writer) Close(timeout time.Duration) error {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.done:
		return nil
	case <-t.C:
		return ErrFlushTimeout
	}
}
