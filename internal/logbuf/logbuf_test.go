package logbuf

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// gate is a writer that blocks until opened, like a pipe nobody reads.
type gate struct {
	open chan struct{}
	syncBuffer
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	return g.syncBuffer.Write(p)
}

// within fails the test if f does not return within d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %s", what, d)
	}
}

// With the reader stuck, writes return at once; lines that do not fit are
// dropped whole and counted, and once the reader moves a line says how
// many. What was kept comes out in order.
func TestStuckReaderNeverBlocks(t *testing.T) {
	g := newGate()
	w := New(g, Options{Size: 4096})
	within(t, 5*time.Second, "10000 writes to a stuck reader", func() {
		for i := range 10000 {
			fmt.Fprintf(w, "line %05d %s\n", i, strings.Repeat("x", 80))
		}
	})
	dropped := w.Dropped()
	if dropped < 10000-4096/92 || dropped >= 10000 {
		t.Fatalf("dropped %d of 10000 lines with room for %d", dropped, 4096/92)
	}
	close(g.open)
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(g.String(), "\n"), "\n")
	note := lines[len(lines)-1]
	if want := fmt.Sprintf("baton: %d lines of output dropped", dropped); !strings.HasPrefix(note, want) {
		t.Errorf("last line %q, want it to start %q", note, want)
	}
	kept := lines[:len(lines)-1]
	if int64(len(kept))+dropped != 10000 {
		t.Errorf("%d lines kept and %d dropped of 10000", len(kept), dropped)
	}
	for i, l := range kept {
		if len(l) != 91 || !strings.HasPrefix(l, fmt.Sprintf("line %05d ", i)) {
			t.Fatalf("kept line %d is %q: want the first lines, whole and in order", i, l)
		}
	}
}

// Concurrent writers with a ring that holds all they write (so that
// nothing is dropped however slowly the reader gets scheduled: on a
// loaded machine it fell behind 20,000 lines in the default 256 KiB):
// nothing is lost, each writer's lines stay in order, and a line never
// mixes with another.
func TestConcurrentWritersKeepOrder(t *testing.T) {
	var out syncBuffer
	w := New(&out, Options{Size: 4 << 20})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				fmt.Fprintf(w, "writer %d line %d\n", g, i)
			}
		}()
	}
	wg.Wait()
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	next := [4]int{}
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var g, i int
		if _, err := fmt.Sscanf(l, "writer %d line %d", &g, &i); err != nil || i != next[g] {
			t.Fatalf("line %q out of order or mixed (want writer %d line %d)", l, g, next[g])
		}
		next[g]++
	}
	if next != [4]int{5000, 5000, 5000, 5000} || w.Dropped() != 0 {
		t.Errorf("got %v lines per writer, %d dropped; want all 5000 each", next, w.Dropped())
	}
}

// A flood through Bulk leaves room for the Writer's own lines.
func TestBulkFloodLeavesRoomForOwnLines(t *testing.T) {
	g := newGate()
	w := New(g, Options{Size: 4096, Reserve: 1024})
	within(t, 5*time.Second, "a flood to a stuck reader", func() {
		for i := range 1000 {
			fmt.Fprintf(w.Bulk(), "worker line %04d %s\n", i, strings.Repeat("x", 80))
		}
		for i := range 10 {
			fmt.Fprintf(w, "own line %d\n", i)
		}
	})
	close(g.open)
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	out := g.String()
	for i := range 10 {
		if !strings.Contains(out, fmt.Sprintf("own line %d\n", i)) {
			t.Errorf("own line %d was crowded out by the flood:\n%s", i, out)
		}
	}
	if w.Dropped() == 0 || w.Bulk().(interface{ Dropped() int64 }).Dropped() != w.Dropped() {
		t.Errorf("dropped %d, want the flood's excess counted (and the same count through Bulk)", w.Dropped())
	}
}

func TestLineLongerThanRingIsDropped(t *testing.T) {
	var out syncBuffer
	w := New(&out, Options{Size: 16, Note: func(n int) []byte { return fmt.Appendf(nil, "lost %d\n", n) }})
	w.Write([]byte(strings.Repeat("y", 17) + "\n"))
	w.Write([]byte("short\n"))
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "short\nlost 1\n" && got != "lost 1\nshort\n" {
		t.Errorf("output %q, want the short line and a note of 1 lost", got)
	}
}

// broken is a writer whose reader has gone (a pipe, EPIPE) until it is
// mended; a write may have taken part of its bytes before failing.
type broken struct {
	syncBuffer
	mu      sync.Mutex
	closed  bool
	partial int // bytes the next failing write takes, if any
}

func (b *broken) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		return b.syncBuffer.Write(p)
	}
	n := min(b.partial, len(p))
	b.partial = 0
	b.syncBuffer.Write(p[:n])
	return n, syscall.EPIPE
}

func (b *broken) set(closed bool, partial int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed, b.partial = closed, partial
}

// Lines the underlying writer fails to take (its reader has gone) are
// dropped and counted, a line it took only part of too; once it takes
// lines again, the next ones come out whole.
func TestFailedWritesAreCounted(t *testing.T) {
	b := &broken{}
	w := New(b, Options{})
	flush := func() {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			w.mu.Lock()
			done := w.written == w.appended
			w.mu.Unlock()
			if done {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the ring was not written out within 5s")
			}
		}
	}
	fmt.Fprintf(w, "before\n")
	flush()
	b.set(true, 3)
	for i := range 100 {
		fmt.Fprintf(w, "lost %d\n", i)
	}
	flush()
	b.set(false, 0)
	fmt.Fprintf(w, "after\n")
	if err := w.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := w.Dropped(); got != 100 {
		t.Errorf("dropped %d lines, want the 100 the writer failed to take", got)
	}
	if got := b.String(); got != "before\nlos"+"after\n" {
		t.Errorf("output %q, want the lines before and after the failure and the part the failing write took", got)
	}
}

// Close gives up on a reader that never takes the rest.
func TestCloseIsBounded(t *testing.T) {
	g := newGate()
	defer close(g.open)
	w := New(g, Options{})
	w.Write([]byte("stuck\n"))
	start := time.Now()
	if err := w.Close(100 * time.Millisecond); !errors.Is(err, ErrFlushTimeout) {
		t.Errorf("Close = %v, want ErrFlushTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %s", d)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
