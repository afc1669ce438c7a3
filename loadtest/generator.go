package loadtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ErrEnded is returned by WaitOK when the run ended before enough requests
// succeeded.
var ErrEnded = errors.New("load: run ended")

// Generator is a running load. Its methods are safe for concurrent use.
type Generator struct {
	opts  Options
	start time.Time

	stopping chan struct{} // closed when clients should stop issuing requests
	stopOnce sync.Once
	done     chan struct{} // closed once every goroutine of the run has ended
	elapsed  atomic.Int64  // final Elapsed in nanoseconds, stored before done is closed

	issued   atomic.Int64 // attempts reserved against Options.Requests
	requests atomic.Int64
	counts   [numOutcomes]atomic.Int64

	closeFrames atomic.Int64 // WebSocket sessions the server ended with a close frame

	latency latencies

	mu       sync.Mutex // guards pids, connPIDs, samples and timeline
	pids     map[string]int64
	connPIDs map[string]int64
	samples  []string
	timeline []Bucket

	wmu      sync.Mutex // guards waiters; nwaiters mirrors len(waiters)
	waiters  []*waiter
	nwaiters atomic.Int64
}

// waiter is a WaitOK call waiting for n OK responses.
type waiter struct {
	n  int64
	ch chan struct{} // closed when n is reached
}

// Start validates o and starts o.Concurrency clients. The run ends after
// o.Duration, after o.Requests attempts, when ctx is done, or on Stop,
// whichever comes first; ending lets requests in flight finish. Start never
// dials an address that is not loopback.
func Start(ctx context.Context, o Options) (*Generator, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load: start: %w", err)
	}
	g := &Generator{
		opts:     o,
		start:    time.Now(),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
		pids:     make(map[string]int64),
		connPIDs: make(map[string]int64),
	}
	var wg sync.WaitGroup
	wg.Go(func() { g.watch(ctx) })
	for range o.Concurrency {
		wg.Go(g.work)
	}
	// Ends once the watcher and every client have ended.
	go func() {
		wg.Wait()
		g.elapsed.Store(int64(time.Since(g.start)))
		close(g.done)
	}()
	return g, nil
}

// Run starts a load, waits for it to end by Duration, Requests or ctx, and
// returns its totals. With neither Duration nor Requests set it runs until
// ctx is done. The error is only ever one from Start.
func Run(ctx context.Context, o Options) (Result, error) {
	g, err := Start(ctx, o)
	if err != nil {
		return Result{}, err
	}
	<-g.Done()
	return g.Stop(), nil
}

// Stop ends the run, waits for requests in flight to finish (at most
// Options.Timeout) and returns the totals. Requests in flight are counted as
// whatever they turn out to be; none is aborted. Stop is idempotent.
func (g *Generator) Stop() Result {
	g.end()
	<-g.done
	return g.Snapshot()
}

// Done returns a channel that is closed when the run has ended, by Duration,
// Requests, ctx or Stop, and its last request has finished.
func (g *Generator) Done() <-chan struct{} { return g.done }

// Snapshot returns the totals so far. While the run goes on, Requests also
// counts requests still in flight.
func (g *Generator) Snapshot() Result {
	r := Result{Mode: g.opts.Mode, Protocol: g.opts.Protocol, Concurrency: g.opts.Concurrency}
	// Outcomes before attempts, so that OK+Failed() <= Requests.
	r.OK = g.counts[outOK].Load()
	r.Refused = g.counts[outRefused].Load()
	r.Reset = g.counts[outReset].Load()
	r.EOF = g.counts[outEOF].Load()
	r.Timeout = g.counts[outTimeout].Load()
	r.BadStatus = g.counts[outBadStatus].Load()
	r.Other = g.counts[outOther].Load()
	r.Unclosed = g.counts[outUnclosed].Load()
	r.CloseFrames = g.closeFrames.Load()
	r.Requests = g.requests.Load()
	select {
	case <-g.done:
		r.Elapsed = time.Duration(g.elapsed.Load())
	default:
		r.Elapsed = time.Since(g.start)
	}
	g.mu.Lock()
	r.PIDs = maps.Clone(g.pids)
	r.ConnPIDs = maps.Clone(g.connPIDs)
	r.Samples = slices.Clone(g.samples)
	r.Timeline = slices.Clone(g.timeline)
	g.mu.Unlock()
	r.Latency = g.latency.snapshot()
	return r
}

// WaitOK blocks until at least n OK responses were counted in total. It
// returns an error wrapping ctx's cause if ctx is done first, or ErrEnded if
// the run ended with fewer.
func (g *Generator) WaitOK(ctx context.Context, n int64) error {
	ok := &g.counts[outOK]
	if ok.Load() >= n {
		return nil
	}
	w := &waiter{n: n, ch: make(chan struct{})}
	g.wmu.Lock()
	g.waiters = append(g.waiters, w)
	g.nwaiters.Add(1)
	g.wmu.Unlock()
	// An OK counted before the waiter was visible did not wake it.
	if ok.Load() >= n {
		g.unwait(w)
		return nil
	}
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		g.unwait(w)
		return fmt.Errorf("load: wait for %d ok responses (have %d): %w", n, ok.Load(), context.Cause(ctx))
	case <-g.done:
		g.unwait(w)
		if got := ok.Load(); got < n {
			return fmt.Errorf("%w after %d of %d ok responses", ErrEnded, got, n)
		}
		return nil
	}
}

// unwait removes w from the waiters, if it is still there.
func (g *Generator) unwait(w *waiter) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if i := slices.Index(g.waiters, w); i >= 0 {
		g.waiters = slices.Delete(g.waiters, i, i+1)
		g.nwaiters.Add(-1)
	}
}

// wake releases the waiters satisfied by ok OK responses. It costs one
// atomic load while nobody waits.
func (g *Generator) wake(ok int64) {
	if g.nwaiters.Load() == 0 {
		return
	}
	g.wmu.Lock()
	defer g.wmu.Unlock()
	g.waiters = slices.DeleteFunc(g.waiters, func(w *waiter) bool {
		if ok >= w.n {
			close(w.ch)
			return true
		}
		return false
	})
	g.nwaiters.Store(int64(len(g.waiters)))
}

// end tells the clients to stop issuing requests.
func (g *Generator) end() {
	g.stopOnce.Do(func() { close(g.stopping) })
}

// watch ends the run on ctx or Duration. It returns once the run ends.
func (g *Generator) watch(ctx context.Context) {
	var timeout <-chan time.Time
	if g.opts.Duration > 0 {
		t := time.NewTimer(g.opts.Duration)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
	case <-timeout:
	case <-g.stopping:
	}
	g.end()
}

// work is one client's loop: one request after another, with no pause, until
// the run ends. The request in flight when it ends is finished and counted.
func (g *Generator) work() {
	if g.opts.Nice > 0 {
		// The thread ends with the goroutine, which never unlocks it:
		// no other goroutine runs at this priority. (A thread may always
		// lower its own priority; were it refused, the client would run
		// at the usual one.)
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// But the runtime parks the main thread when its goroutine
			// ends, and the main thread could not take the usual
			// priority back (raising one takes a privilege). While
			// this goroutine holds it, the client runs on another.
			done := make(chan struct{})
			go func() {
				defer close(done)
				g.work()
			}()
			<-done
			runtime.UnlockOSThread()
			return
		}
		_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), g.opts.Nice)
	}
	c := newRequester(g.opts, g)
	defer c.close()
	conns, _ := c.(connCounter)
	for {
		select {
		case <-g.stopping:
			return
		default:
		}
		if g.opts.Requests > 0 && g.issued.Add(1) > g.opts.Requests {
			g.end()
			return
		}
		g.requests.Add(1)
		began := time.Now()
		pid, err := c.do()
		conn := connUnknown
		if conns != nil {
			conn = connKept
			if conns.newConn() {
				conn = connNew
			}
		}
		g.record(pid, err, began, conn)
	}
}

// connKind is what a request knew of its connection.
type connKind int

const (
	connUnknown connKind = iota // the protocol's client pools its connections
	connNew                     // the request dialed it
	connKept                    // an earlier request's
)

// record counts one finished request, begun at began, on a connection of
// kind conn.
func (g *Generator) record(pid string, err error, began time.Time, conn connKind) {
	now := time.Now()
	out := classify(err)
	if g.opts.Timeline > 0 {
		g.mark(now, out == outOK)
	}
	if out == outOK {
		g.latency.add(now.Sub(began))
		if pid != "" {
			g.mu.Lock()
			g.pids[pid]++
			if conn == connNew {
				g.connPIDs[pid]++
			}
			g.mu.Unlock()
		}
		g.wake(g.counts[outOK].Add(1))
		return
	}
	g.counts[out].Add(1)
	g.mu.Lock()
	if len(g.samples) < MaxSamples {
		g.samples = append(g.samples, sample(out, err, began, now, conn))
	}
	g.mu.Unlock()
}

// sample describes one failed request for a test's log: its outcome, when
// it began by the wall clock (to match against a server's log), how long it
// took, on what connection, and its error.
func sample(out outcome, err error, began, now time.Time, conn connKind) string {
	on := ""
	switch conn {
	case connNew:
		on = ", new connection"
	case connKept:
		on = ", kept connection"
	}
	return fmt.Sprintf("%s (began %s, after %v%s): %v", out, began.Format("15:04:05.000"), now.Sub(began).Round(time.Millisecond), on, err)
}

// mark counts a request that ended at now in its timeline bucket.
func (g *Generator) mark(now time.Time, ok bool) {
	i := int(now.Sub(g.start) / g.opts.Timeline)
	if i >= MaxTimeline {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(g.timeline) <= i {
		g.timeline = append(g.timeline, Bucket{})
	}
	if ok {
		g.timeline[i].OK++
	} else {
		g.timeline[i].Failed++
	}
}
