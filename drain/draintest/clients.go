package draintest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clients is what EchoLoad is made of: the counts, the first
// failure, and the stop.
type clients struct {
	OK, Failed atomic.Int64

	first    atomic.Value
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newClients() clients { return clients{stop: make(chan struct{})} }

// run starts n clients, each calling f with its number.
func (l *clients) run(n int, f func(i int)) {
	for i := range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			f(i)
		}()
	}
}

func (l *clients) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

func (l *clients) fail(err error) {
	l.Failed.Add(1)
	l.first.CompareAndSwap(nil, err)
}

// WaitOK waits until n requests (or messages) in all have been answered.
func (l *clients) WaitOK(t testing.TB, n int64) {
	t.Helper()
	for deadline := time.Now().Add(EventTimeout); l.OK.Load() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d answered, want %d within %v", l.OK.Load(), n, EventTimeout)
		}
	}
}

// Stop ends the clients and waits for them; again, it does nothing.
func (l *clients) Stop() {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// FirstErr is the first failure, nil if none.
func (l *clients) FirstErr() error {
	err, _ := l.first.Load().(error)
	return err
}
