package drain

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
)

// ErrPanicked is wrapped by the error Serve returns when code under its
// Guard panicked, and by Guard.Err.
var ErrPanicked = errors.New("drain: panic")

// A Guard turns a panic into a drain. Serve runs every handler under its
// Options.Guard; Go runs other goroutines under it. When guarded code
// panics, the guard reports the panic (OnPanic) and trips: the Serve
// watching it sends STOPPING=1, so that the supervisor starts a replacement
// at once, drains exactly as on SIGTERM, and returns an error wrapping
// ErrPanicked, so that the program exits non-zero. Requests in flight on
// other connections finish; only the one that panicked fails.
//
// Why not recover and serve on, as net/http does for a handler: a panic can
// leave shared state broken (a mutex held, a map half updated), and a worker
// that serves on with it fails later, in stranger ways. A fresh process is
// cheap under a supervisor.
//
// A panic in code the guard does not run (a goroutine started with a plain
// go statement) still crashes the process, as in any Go program.
//
// The zero Guard is ready to use; a Guard must not be copied after first
// use. One Guard may watch over several Serve calls (one per listener, say):
// a panic drains them all. A Guard that no Serve watches only reports.
type Guard struct {
	// OnPanic reports a recovered panic: its value and the stack of the
	// goroutine that panicked, as debug.Stack formats it. It runs on that
	// goroutine, for every panic, not only the first. nil means writing
	// both to os.Stderr: the report the runtime would have written there,
	// had the panic crashed the process. (This is the one place package
	// drain writes anything itself; set OnPanic to route it to a logger.)
	OnPanic func(v any, stack []byte)

	once sync.Once
	done chan struct{} // closed when the guard trips; made by once

	mu  sync.Mutex
	err error // from the first panic
}

// Handler returns h run under the guard. When h panics, the guard trips and
// the request fails in the best way still open: with a 500 response
// carrying "Connection: close" and none of the headers h had set, if h has
// not started its response; else by closing the connection, so the client
// sees the response cut short (net/http aborts it, without logging). A
// connection h has hijacked is closed.
//
// A panic with http.ErrAbortHandler is net/http's way to abort a response,
// not a failure: Handler lets it through untouched, and the guard does not
// trip.
//
// h gets a wrapped ResponseWriter, which notes whether the response has
// started. It has the methods of http.Flusher, http.Hijacker and
// io.ReaderFrom, and Unwrap, through which http.ResponseController reaches
// the rest.
func (g *Guard) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gw := &guardedWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			g.recovered(v)
			gw.fail(r)
		}()
		h.ServeHTTP(gw, r)
	})
}

// Go runs f in a new goroutine under the guard: if f panics, the guard
// reports the panic and trips. A panic with http.ErrAbortHandler counts
// like any other here: there is no response to abort.
func (g *Guard) Go(f func()) {
	go g.Do(f)
}

// Do runs f under the guard, on the calling goroutine: if f panics, the
// guard reports the panic and trips, and Do returns true. It is how a
// handler of another kind of server is guarded (a gRPC method, see
// package grpcdrain): the caller then fails that one request. A panic
// with http.ErrAbortHandler counts like any other here.
func (g *Guard) Do(f func()) (panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			g.recovered(v)
			panicked = true
		}
	}()
	f()
	return false
}

// Done returns a channel that is closed when the guard trips, at the first
// panic it recovers.
func (g *Guard) Done() <-chan struct{} { return g.doneChan() }

// Err returns nil until the guard trips, then an error wrapping ErrPanicked
// that names the first panic's value, and wraps it if it is an error.
func (g *Guard) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

func (g *Guard) doneChan() chan struct{} {
	g.once.Do(func() { g.done = make(chan struct{}) })
	return g.done
}

// recovered reports v, a panic value just recovered on the calling
// goroutine, whose stack still holds the frames that panicked, and trips g.
func (g *Guard) recovered(v any) {
	stack := debug.Stack()
	// Trip even if OnPanic panics in turn.
	defer g.trip(v)
	report := g.OnPanic
	if report == nil {
		report = writePanic
	}
	report(v, stack)
}

func (g *Guard) trip(v any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return
	}
	if err, ok := v.(error); ok {
		g.err = fmt.Errorf("%w: %w", ErrPanicked, err)
	} else {
		g.err = fmt.Errorf("%w: %v", ErrPanicked, v)
	}
	close(g.doneChan())
}

// writePanic is the default OnPanic.
func writePanic(v any, stack []byte) {
	fmt.Fprintf(os.Stderr, "drain: panic: %v\n\n%s", v, stack)
}

// guardedWriter is the ResponseWriter of a guarded handler.
type guardedWriter struct {
	http.ResponseWriter
	started  bool     // the status line may have gone out
	hijacked net.Conn // the connection, once the handler took it over
}

// fail ends the response of r, whose handler panicked.
func (w *guardedWriter) fail(r *http.Request) {
	switch {
	case w.hijacked != nil:
		// The handler owned it; nobody else will close it.
		w.hijacked.Close()
	case w.started:
		// Too late for a status: net/http closes the connection
		// without a word.
		panic(http.ErrAbortHandler)
	default:
		// Headers meant for the handler's response (a Content-Encoding,
		// a cookie) do not belong on an error.
		h := w.Header()
		clear(h)
		// The worker drains now: the client should not wait for this
		// connection's next response.
		if r.ProtoMajor == 1 {
			h.Set("Connection", "close")
		}
		http.Error(w.ResponseWriter, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
	}
}

func (w *guardedWriter) WriteHeader(code int) {
	// A 1xx other than 101 is informational: the real status is to come.
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.started = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *guardedWriter) Write(p []byte) (int, error) {
	w.started = true
	return w.ResponseWriter.Write(p)
}

// ReadFrom keeps net/http's sendfile path for io.Copy to the response.
func (w *guardedWriter) ReadFrom(r io.Reader) (int64, error) {
	w.started = true
	return io.Copy(w.ResponseWriter, r)
}

func (w *guardedWriter) Flush() { w.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (w *guardedWriter) FlushError() error {
	w.started = true
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *guardedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = c
	}
	return c, brw, err
}

// Unwrap lets http.ResponseController reach the methods guardedWriter
// does not have (deadlines, full duplex).
func (w *guardedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
