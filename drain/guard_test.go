package drain_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/drain"
	"github.com/batonhq/baton/loadtest"
)

// panicked records what a Guard's OnPanic reports.
type panicked struct {
	mu      sync.Mutex
	reports []report
	got     chan struct{} // poked on every report
}

type report struct {
	v     any
	stack string
}

func newGuard() (*drain.Guard, *panicked) {
	p := &panicked{got: make(chan struct{}, 16)}
	return &drain.Guard{OnPanic: func(v any, stack []byte) {
		p.mu.Lock()
		p.reports = append(p.reports, report{v, string(stack)})
		p.mu.Unlock()
		p.got <- struct{}{}
	}}, p
}

func (p *panicked) all() []report {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.reports)
}

// check fails the test unless exactly the panics of values want were
// reported, each with a stack through panicNow.
func (p *panicked) check(t *testing.T, want ...any) {
	t.Helper()
	got := p.all()
	if len(got) != len(want) {
		t.Fatalf("OnPanic reported %d panics, want %d: %v", len(got), len(want), got)
	}
	for i, r := range got {
		if r.v != want[i] {
			t.Errorf("panic %d: value %v, want %v", i, r.v, want[i])
		}
		if !strings.Contains(r.stack, "panic(") || !strings.Contains(r.stack, "drain_test.panicNow(") {
			t.Errorf("panic %d: the stack does not show where it panicked:\n%s", i, r.stack)
		}
	}
}

// panicNow panics with v, from a frame the reported stack must show.
//
//go:noinline
func panicNow(v any) { panic(v) }

// panicValue is what the test handlers and goroutines panic with.
const panicValue = "test: /panic requested"

// guardHandler answers like startServer's default handler, except:
//
//	/panic  panics with panicValue
//	/held   says so on held, then answers once release is closed
func guardHandler(id string, held chan<- struct{}, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", id)
		switch r.URL.Path {
		case "/panic":
			panicNow(panicValue)
		case "/held":
			held <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "hello from "+id+"\n")
	})
}

// releaser returns a channel that release closes, also when the test ends,
// so that held handlers never outlive it.
func releaser(t *testing.T) (ch chan struct{}, release func()) {
	ch = make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	return ch, release
}

// reply is the outcome of one request.
type reply struct {
	resp *http.Response
	body string
	err  error
}

func (r reply) String() string {
	if r.resp == nil {
		return fmt.Sprintf("error %v", r.err)
	}
	return fmt.Sprintf("status %d, close %t, header %v, body %q, error %v", r.resp.StatusCode, r.resp.Close, r.resp.Header, r.body, r.err)
}

// roundTrip sends "GET path" on c and reads the final response (skipping
// 1xx ones) and its body.
func roundTrip(c net.Conn, br *bufio.Reader, path string) reply {
	c.SetDeadline(time.Now().Add(eventTimeout))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return reply{err: err}
	}
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return reply{err: err}
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			return reply{resp, string(body), err}
		}
	}
}

// fetch does "GET path" on a new connection, in a goroutine.
func fetch(t *testing.T, addr, path string) <-chan reply {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan reply, 1)
	go func() {
		defer c.Close()
		ch <- roundTrip(c, bufio.NewReader(c), path)
	}()
	return ch
}

func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(eventTimeout):
		t.Fatalf("no %s within %v", what, eventTimeout)
		var zero T
		return zero
	}
}

// TestPanicDrainsUnderLoad is the guard's promise: a panic in a handler or
// a guarded goroutine of one server makes it say STOPPING=1 and drain while
// another server keeps accepting on the same socket. Requests in flight on
// its other connections finish, clients that never retry see no failure,
// only the request that panicked gets a 500, and Serve returns an error
// wrapping ErrPanicked.
func TestPanicDrainsUnderLoad(t *testing.T) {
	for _, trigger := range []string{"handler", "goroutine"} {
		for _, mode := range []loadtest.Mode{loadtest.KeepAlive, loadtest.PerRequest} {
			t.Run(trigger+"/"+mode.String(), func(t *testing.T) {
				testPanicUnderLoad(t, trigger, mode)
			})
		}
	}
}

func testPanicUnderLoad(t *testing.T, trigger string, mode loadtest.Mode) {
	const inFlight = 2
	base := listen(t)
	addr := base.Addr().String()
	guard, reports := newGuard()
	held := make(chan struct{}, inFlight)
	release, releaseAll := releaser(t)
	opts := drain.Options{Timeout: 10 * time.Second, IdleGrace: 200 * time.Millisecond, Guard: guard}
	s0 := startServer(t, dup(t, base), "s0", opts, guardHandler("s0", held, release))
	returned := make(chan time.Time, 1)
	go func() {
		err := <-s0.done
		returned <- time.Now()
		s0.done <- err
	}()

	// While s0 is alone on the socket, it takes these connections: slow
	// requests, and a keep-alive connection to ask for /panic on.
	var slow []<-chan reply
	for range inFlight {
		slow = append(slow, fetch(t, addr, "/held"))
		waitFor(t, held, "a slow request in s0's handler")
	}
	pc, pbr := keepAlive(t, addr)
	defer pc.Close()

	// The load starts on s0 alone too: with keep-alive, all its
	// connections are s0's when s0 panics.
	g, err := loadtest.Start(context.Background(), loadtest.Options{Addr: addr, Concurrency: 32, Mode: mode, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	s0.waitHits(t, s0.hits.Load()+200)
	s1 := startServer(t, dup(t, base), "s1", drain.Options{Timeout: 10 * time.Second}, nil)
	s0.waitHits(t, s0.hits.Load()+200)

	switch trigger {
	case "handler":
		r := roundTrip(pc, pbr, "/panic")
		if r.err != nil {
			t.Fatalf("/panic: %v, want a 500", r.err)
		}
		if r.resp.StatusCode != http.StatusInternalServerError || !r.resp.Close || r.resp.Header.Get("X-Pid") != "" {
			t.Errorf("/panic: status %d, close %t, X-Pid %q; want 500, Connection: close and none of the handler's headers",
				r.resp.StatusCode, r.resp.Close, r.resp.Header.Get("X-Pid"))
		}
	case "goroutine":
		guard.Go(func() { panicNow(panicValue) })
	}
	waitFor(t, s0.stopping, "STOPPING=1 after the panic")
	// Under load, the survivor serves on while s0 drains; s0 cannot be
	// done before its slow requests are.
	s1.waitHits(t, s1.hits.Load()+300)
	releasedAt := time.Now()
	releaseAll()
	for i, ch := range slow {
		r := wait(t, ch, "a slow request's response")
		if r.err != nil || r.resp.StatusCode != http.StatusOK {
			t.Errorf("slow request %d in flight during the drain: %v, want 200", i, r)
		}
	}
	err = <-s0.done
	s0.done <- err
	if at := <-returned; at.Before(releasedAt) {
		t.Errorf("Serve returned %v before the slow requests were released", releasedAt.Sub(at))
	}
	if !errors.Is(err, drain.ErrPanicked) || errors.Is(err, drain.ErrForced) || err.Error() != "drain: panic: "+panicValue {
		t.Errorf("Serve: %v, want only ErrPanicked naming the panic", err)
	}
	if n := s0.open.Load(); n != 0 {
		t.Errorf("Serve returned with %d connections open", n)
	}
	s0.mu.Lock()
	states := slices.Clone(s0.states)
	s0.mu.Unlock()
	if want := []string{"READY=1", "STOPPING=1"}; !slices.Equal(states, want) {
		t.Errorf("notified %q, want %q", states, want)
	}
	reports.check(t, panicValue)

	s1.waitHits(t, s1.hits.Load()+300)
	r := g.Stop()
	t.Logf("load: %v; ok by server: %v; s0 had %d connections open at STOPPING=1", r, r.PIDs, s0.atStop)
	for _, s := range r.Samples {
		t.Logf("failure: %s", s)
	}
	if r.Failed() != 0 {
		t.Errorf("%d of %d requests failed across the panic", r.Failed(), r.Requests)
	}
	if r.PIDs["s0"] == 0 || r.PIDs["s1"] == 0 {
		t.Errorf("ok by server %v: want both to have served", r.PIDs)
	}
}

// TestPanicResponse: how the request that panicked fails depends on how far
// its response got; an http.ErrAbortHandler panic is no failure of the
// worker.
func TestPanicResponse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request)
		want    string // "500", "cut" (a 200 whose body ends early), or "EOF" (closed before a response)
		trips   bool
	}{
		{"before the response", func(w http.ResponseWriter, r *http.Request) {
			// None of these belong on the 500.
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Set-Cookie", "session=half-made")
			panicNow(panicValue)
		}, "500", true},
		{"after 103 early hints", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			panicNow(panicValue)
		}, "500", true},
		{"after the header", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusAccepted)
			panicNow(panicValue)
		}, "EOF", true},
		{"after a flushed part", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "part of it")
			w.(http.Flusher).Flush()
			panicNow(panicValue)
		}, "cut", true},
		{"after a ResponseController flush", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "part of it")
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
			panicNow(panicValue)
		}, "cut", true},
		{"after a hijack", func(w http.ResponseWriter, r *http.Request) {
			// The connection is left to the guard to close.
			_, brw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				panic(err)
			}
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart of it")
			brw.Flush()
			panicNow(panicValue)
		}, "cut", true},
		{"http.ErrAbortHandler", func(w http.ResponseWriter, r *http.Request) {
			panic(http.ErrAbortHandler)
		}, "EOF", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := listen(t)
			guard, reports := newGuard()
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/p" {
					tc.handler(w, r)
					return
				}
				io.WriteString(w, "ok\n")
			})
			s := startServer(t, base, "p", drain.Options{Guard: guard, IdleGrace: 50 * time.Millisecond}, h)
			r := wait(t, fetch(t, base.Addr().String(), "/p"), "the response")
			switch tc.want {
			case "500":
				if r.err != nil || r.resp.StatusCode != http.StatusInternalServerError || !r.resp.Close ||
					r.body != "Internal Server Error\n" || r.resp.Header.Get("Content-Encoding") != "" || r.resp.Header.Get("Set-Cookie") != "" {
					t.Errorf("got %v, want a plain 500 with Connection: close", r)
				}
			case "cut":
				// Not a timeout: the connection must be closed.
				if !errors.Is(r.err, io.ErrUnexpectedEOF) || r.resp == nil || r.resp.StatusCode != http.StatusOK {
					t.Errorf("got %v, want a 200 cut short", r)
				}
			case "EOF":
				if !errors.Is(r.err, io.ErrUnexpectedEOF) && !errors.Is(r.err, io.EOF) {
					t.Errorf("got %v, want the connection closed before a response", r)
				}
			}
			if !tc.trips {
				// The handler's goroutine had finished with the panic
				// when the connection closed; the guard would have
				// tripped by then.
				if err := guard.Err(); err != nil {
					t.Errorf("the guard tripped: %v", err)
				}
				reports.check(t)
				get(t, base.Addr().String()) // serving on
				if err := s.drain(t); err != nil {
					t.Errorf("Serve: %v, want nil", err)
				}
				return
			}
			waitFor(t, s.stopping, "STOPPING=1")
			err := wait(t, s.done, "Serve's return")
			s.done <- err
			if !errors.Is(err, drain.ErrPanicked) || errors.Is(err, drain.ErrForced) {
				t.Errorf("Serve: %v, want only ErrPanicked", err)
			}
			reports.check(t, panicValue)
		})
	}
}

// TestPanicDuringDrain: a handler that panics while the server drains
// anyway (SIGTERM) still gets its 500, and the program still learns of
// the panic.
func TestPanicDuringDrain(t *testing.T) {
	base := listen(t)
	guard, reports := newGuard()
	held := make(chan struct{}, 1)
	release, releaseAll := releaser(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held <- struct{}{}
		<-release
		panicNow(panicValue)
	})
	s := startServer(t, base, "d", drain.Options{Guard: guard}, h)
	resp := fetch(t, base.Addr().String(), "/")
	waitFor(t, held, "the request in the handler")
	s.cancel()
	waitFor(t, s.stopping, "STOPPING=1")
	releaseAll()
	if r := wait(t, resp, "the response"); r.err != nil || r.resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("got %v, want a 500", r)
	}
	if err := s.drain(t); !errors.Is(err, drain.ErrPanicked) {
		t.Errorf("Serve: %v, want ErrPanicked", err)
	}
	reports.check(t, panicValue)
}

// TestNoHandlerGuard: with the handler guard off, net/http deals with a
// panicking handler and the server serves on; a guarded goroutine's
// panic still drains it.
func TestNoHandlerGuard(t *testing.T) {
	base := listen(t)
	guard, reports := newGuard()
	s := startServer(t, base, "n", drain.Options{Guard: guard, NoHandlerGuard: true}, guardHandler("n", nil, nil))
	addr := base.Addr().String()
	if r := wait(t, fetch(t, addr, "/panic"), "the response"); r.err == nil {
		t.Errorf("/panic: %v, want the connection closed by net/http", r)
	}
	get(t, addr)
	if err := guard.Err(); err != nil {
		t.Errorf("the guard tripped: %v", err)
	}
	reports.check(t)

	guard.Go(func() { panicNow(panicValue) })
	waitFor(t, s.stopping, "STOPPING=1")
	err := wait(t, s.done, "Serve's return")
	s.done <- err
	if !errors.Is(err, drain.ErrPanicked) {
		t.Errorf("Serve: %v, want ErrPanicked", err)
	}
	reports.check(t, panicValue)
}

// TestPanicBeforeServe: a guard that tripped before Serve was called makes
// it drain at once, without READY=1.
func TestPanicBeforeServe(t *testing.T) {
	guard, reports := newGuard()
	guard.Go(func() { panicNow(panicValue) })
	waitFor(t, guard.Done(), "the guard to trip")
	var states []string
	err := drain.Serve(context.Background(), &http.Server{ErrorLog: testLogger(t)}, listen(t), drain.Options{
		Guard:   guard,
		Signals: []os.Signal{syscall.SIGUSR2},
		Notify:  func(s string) error { states = append(states, s); return nil },
	})
	if !errors.Is(err, drain.ErrPanicked) {
		t.Errorf("Serve: %v, want ErrPanicked", err)
	}
	if want := []string{"STOPPING=1"}; !slices.Equal(states, want) {
		t.Errorf("notified %q, want %q", states, want)
	}
	reports.check(t, panicValue)
}

// TestGuard: Err and Done tell of the first panic; every panic is
// reported.
func TestGuard(t *testing.T) {
	guard, reports := newGuard()
	select {
	case <-guard.Done():
		t.Fatal("Done is closed before any panic")
	default:
	}
	if err := guard.Err(); err != nil {
		t.Fatalf("Err before any panic: %v", err)
	}
	first := errors.New("first")
	guard.Go(func() { panicNow(first) })
	waitFor(t, guard.Done(), "the guard to trip")
	guard.Go(func() { panicNow(42) })
	waitFor(t, reports.got, "the first report")
	waitFor(t, reports.got, "the second report")
	reports.check(t, first, 42)
	err := guard.Err()
	if !errors.Is(err, drain.ErrPanicked) || !errors.Is(err, first) || err.Error() != "drain: panic: first" {
		t.Errorf("Err: %v, want ErrPanicked wrapping the first panic's error", err)
	}
	// The zero Guard works, and reports to stderr by default (the hello
	// example's test checks what it writes).
	var zero drain.Guard
	if err := zero.Err(); err != nil || zero.Done() == nil {
		t.Errorf("zero Guard: Err %v, Done %v", err, zero.Done())
	}
}

// TestGuardDo: Do runs f on the calling goroutine and says whether it
// panicked; the guard trips as with Go.
func TestGuardDo(t *testing.T) {
	guard, reports := newGuard()
	ran := false
	if guard.Do(func() { ran = true }) || !ran {
		t.Fatalf("Do of a function that returns: ran %t, want true and not panicked", ran)
	}
	if guard.Err() != nil {
		t.Fatal("the guard tripped without a panic")
	}
	if !guard.Do(func() { panicNow("in Do") }) {
		t.Fatal("Do of a function that panics said it did not")
	}
	waitFor(t, reports.got, "the report")
	reports.check(t, "in Do")
	waitFor(t, guard.Done(), "the guard to trip")
}
