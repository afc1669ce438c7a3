package drain_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/drain"
	"github.com/batonhq/baton/drain/draintest"
	"github.com/batonhq/baton/loadtest"
)

// eventTimeout bounds every wait for an event; reaching it fails the test.
const eventTimeout = 20 * time.Second

// TestMain fails the run if a connection, server or load goroutine outlives
// the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := checkGoroutines(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// checkGoroutines waits up to 5s for the goroutines of the code under test
// to end: connection goroutines may still be on their way out.
func checkGoroutines() error {
	suspects := []string{"net/http.(*conn).serve", "net/http.(*Server).Serve", "baton/drain.", "baton/loadtest."}
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "checkGoroutines") {
				continue
			}
			for _, s := range suspects {
				if strings.Contains(g, s) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d goroutines outlived the tests:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// server is one drain.Serve running in the test.
type server struct {
	id       string
	cancel   context.CancelFunc
	done     chan error    // Serve's result
	ready    chan struct{} // closed on READY=1
	stopping chan struct{} // closed on STOPPING=1

	mu     sync.Mutex
	states []string // every Notify, in order

	hits   atomic.Int64  // requests answered
	hit    chan struct{} // poked on every request
	open   atomic.Int64  // connections open, from the test's own ConnState hook
	opened chan struct{} // poked on every connection accepted
	atStop int64         // connections open when the drain started
}

// startServer runs drain.Serve on ln with h (nil: answer "hello from ID"
// with X-Pid: ID) and returns once it notified READY=1. Unset Notify and
// Signals in opts are filled in; configure, if any, sets up the server
// further; the server is drained when the test ends.
func startServer(t *testing.T, ln net.Listener, id string, opts drain.Options, h http.Handler, configure ...func(*http.Server)) *server {
	t.Helper()
	s := &server{
		id:       id,
		done:     make(chan error, 1),
		ready:    make(chan struct{}),
		stopping: make(chan struct{}),
		hit:      make(chan struct{}, 1),
		opened:   make(chan struct{}, 1),
	}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Pid", id)
			io.WriteString(w, "hello from "+id+"\n")
		})
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r)
			s.hits.Add(1)
			select {
			case s.hit <- struct{}{}:
			default:
			}
		}),
		// Also checks that Serve keeps calling the server's own hook.
		ConnState: func(c net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.open.Add(1)
				select {
				case s.opened <- struct{}{}:
				default:
				}
			case http.StateClosed, http.StateHijacked:
				s.open.Add(-1)
			}
		},
		ErrorLog: testLogger(t),
	}
	for _, c := range configure {
		c(srv)
	}
	if opts.Signals == nil {
		// Not SIGTERM or SIGINT: a test must not take those from go test.
		opts.Signals = []os.Signal{syscall.SIGUSR2}
	}
	notify := opts.Notify
	opts.Notify = func(state string) error {
		s.mu.Lock()
		s.states = append(s.states, state)
		s.mu.Unlock()
		switch state {
		case "READY=1", readyDeclared: // the latter with an idle grace of 1s or more
			close(s.ready)
		case "STOPPING=1":
			s.atStop = s.open.Load()
			close(s.stopping)
		}
		if notify != nil {
			return notify(state)
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- drain.Serve(ctx, srv, ln, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(eventTimeout):
			t.Errorf("server %s: Serve did not return after the test", id)
		}
	})
	waitFor(t, s.ready, "READY=1 from "+id)
	return s
}

// drain cancels Serve's context and returns Serve's result.
func (s *server) drain(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(eventTimeout):
		t.Fatalf("server %s: Serve did not return within %v of the drain", s.id, eventTimeout)
		return nil
	}
}

// waitOpen waits until s has n connections open: a connection the
// client has dialled may still wait in the listener's queue.
func (s *server) waitOpen(t *testing.T, n int64) {
	t.Helper()
	waitCount(t, &s.open, s.opened, n, "server "+s.id+": connections open")
}

// waitHits waits until s has answered n requests in all.
func (s *server) waitHits(t *testing.T, n int64) {
	t.Helper()
	waitCount(t, &s.hits, s.hit, n, "server "+s.id+": requests answered")
}

// waitCount waits until c is at least n, looking again each time poke
// fires.
func waitCount(t *testing.T, c *atomic.Int64, poke <-chan struct{}, n int64, what string) {
	t.Helper()
	timeout := time.After(eventTimeout)
	for c.Load() < n {
		select {
		case <-poke:
		case <-timeout:
			t.Fatalf("%s: %d, want %d", what, c.Load(), n)
		}
	}
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(eventTimeout):
		t.Fatalf("no %s within %v", what, eventTimeout)
	}
}

// listen returns a TCP listener on 127.0.0.1, closed when the test ends. It
// plays the supervisor's copy of the socket, which outlives every worker.
func listen(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// dup returns another listener on the same socket, as a worker that
// inherited it would have.
func dup(t *testing.T, ln *net.TCPListener) net.Listener {
	t.Helper()
	return dupOf(t, ln, net.FileListener)
}

// dupOf makes another c of the socket of s, with from (net.FileListener,
// net.FilePacketConn).
func dupOf[C any](t *testing.T, s interface{ File() (*os.File, error) }, from func(*os.File) (C, error)) C {
	t.Helper()
	f, err := s.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := from(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDrainUnderLoad is the promise of the package: with 32 clients that
// never retry hammering a socket, one server after another drains while a
// newer one keeps accepting on the same socket, and no request fails.
func TestDrainUnderLoad(t *testing.T) {
	const drains = 10
	for _, mode := range []loadtest.Mode{loadtest.KeepAlive, loadtest.PerRequest} {
		t.Run(mode.String(), func(t *testing.T) {
			base := listen(t)
			opts := drain.Options{Timeout: 10 * time.Second}
			old := startServer(t, dup(t, base), "s0", opts, nil)

			g, err := loadtest.Start(context.Background(), loadtest.Options{
				Addr:        base.Addr().String(),
				Concurrency: 32,
				Mode:        mode,
				Timeout:     5 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Stop()
			old.waitHits(t, 200)

			for i := 1; i <= drains; i++ {
				next := startServer(t, dup(t, base), fmt.Sprintf("s%d", i), opts, nil)
				// Drain under load: the old server is answering right now.
				old.waitHits(t, old.hits.Load()+300)
				start := time.Now()
				if err := old.drain(t); err != nil {
					t.Fatalf("drain %d: Serve: %v", i, err)
				}
				if n := old.open.Load(); n != 0 {
					t.Errorf("drain %d: Serve returned with %d connections open", i, n)
				}
				if mode == loadtest.KeepAlive && old.atStop == 0 {
					t.Errorf("drain %d: no connection was open when the drain started: it tested nothing", i)
				}
				// The survivor goes on serving.
				before := next.hits.Load()
				next.waitHits(t, before+300)
				t.Logf("drain %d: %s had %d connections open, %d requests in all, drained in %v; %s served %d since",
					i, old.id, old.atStop, old.hits.Load(), time.Since(start).Round(time.Millisecond), next.id, next.hits.Load()-before)
				if f := g.Snapshot().Failed(); f != 0 {
					t.Errorf("drain %d: %d requests failed so far", i, f)
				}
				old = next
			}
			r := g.Stop()
			t.Logf("load: %v", r)
			for _, s := range r.Samples {
				t.Logf("failure: %s", s)
			}
			if r.Failed() != 0 {
				t.Errorf("%d of %d requests failed across %d drains", r.Failed(), r.Requests, drains)
			}
			if r.OK < 200*drains {
				t.Errorf("only %d requests succeeded", r.OK)
			}
			if err := old.drain(t); err != nil {
				t.Errorf("last drain: %v", err)
			}
		})
	}
}

// TestDrainDeadline: a response that outlasts the drain timeout is cut at
// the deadline, and Serve returns then, reporting it.
func TestDrainDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	streaming := make(chan struct{})
	var once sync.Once
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := io.WriteString(w, "tick\n"); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			once.Do(func() { close(streaming) })
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
		}
	})
	base := listen(t)
	s := startServer(t, base, "stream", drain.Options{Timeout: timeout, IdleGrace: 50 * time.Millisecond}, h)

	c, err := net.Dial("tcp", base.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	ended := make(chan error, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(eventTimeout))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		ended <- err
	}()
	waitFor(t, streaming, "first chunk of the stream")

	start := time.Now()
	s.cancel()
	var serveErr error
	select {
	case serveErr = <-s.done:
		s.done <- serveErr
	case <-time.After(eventTimeout):
		t.Fatal("Serve did not return")
	}
	took := time.Since(start)
	t.Logf("Serve returned after %v: %v", took, serveErr)
	if !errors.Is(serveErr, drain.ErrForced) {
		t.Errorf("Serve: %v, want an error wrapping ErrForced", serveErr)
	}
	// Generous for a loaded machine under -race, and still far below a
	// second timeout.
	if took < timeout || took > timeout+250*time.Millisecond {
		t.Errorf("Serve returned %v after the drain started, want %v plus a little", took, timeout)
	}
	select {
	case err := <-ended:
		if err == nil {
			t.Error("the stream ended cleanly; want it cut")
		}
	case <-time.After(eventTimeout):
		t.Error("the stream was not cut")
	}
}

// readyDeclared is Serve's READY=1 with an idle grace of a second or
// more: it says that it serves what it accepted.
const readyDeclared = "READY=1\n" + drain.DrainsAcceptedField

// TestNotify: READY=1 once serving, STOPPING=1 when the drain starts,
// nothing else; a failing Notify is reported but does not stop serving.
func TestNotify(t *testing.T) {
	base := listen(t)
	fail := errors.New("no supervisor")
	s := startServer(t, dup(t, base), "n", drain.Options{Notify: func(string) error { return fail }}, nil)
	get(t, base.Addr().String())
	err := s.drain(t)
	s.mu.Lock()
	states := slices.Clone(s.states)
	s.mu.Unlock()
	if want := []string{readyDeclared, "STOPPING=1"}; !slices.Equal(states, want) {
		t.Errorf("notified %q, want %q", states, want)
	}
	if !errors.Is(err, fail) || !strings.Contains(err.Error(), "drain: notify READY=1: no supervisor") {
		t.Errorf("Serve: %v, want the notify errors", err)
	}
}

// TestSignals: a signal starts the drain; more signals during the drain
// (systemd and baton may both send SIGTERM) do not cut it short.
func TestSignals(t *testing.T) {
	const grace = 300 * time.Millisecond
	base := listen(t)
	s := startServer(t, base, "sig", drain.Options{Signals: []os.Signal{syscall.SIGUSR1}, IdleGrace: grace}, nil)
	// An idle keep-alive connection keeps the drain going for the grace.
	c, br := keepAlive(t, base.Addr().String())
	defer c.Close()
	idleSince := time.Now()
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	waitFor(t, s.stopping, "STOPPING=1")
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	select {
	case err := <-s.done:
		s.done <- err
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("Serve did not return")
	}
	if idle := time.Since(idleSince); idle < grace {
		t.Errorf("Serve returned after %v, before the idle connection's grace of %v", idle, grace)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: read %v, want EOF", err)
	}
}

// TestIdleGrace: during a drain, an idle keep-alive connection that sends
// its next request within the grace gets it answered, with
// "Connection: close"; one that stays silent, and one that never sent a
// request, are closed once the grace is over.
func TestIdleGrace(t *testing.T) {
	const grace = time.Second
	base := listen(t)
	s := startServer(t, base, "g", drain.Options{IdleGrace: grace}, nil)
	addr := base.Addr().String()
	talker, tbr := keepAlive(t, addr)
	defer talker.Close()
	beforeSilent := time.Now() // the silent connection is idle since after this
	silent, sbr := keepAlive(t, addr)
	defer silent.Close()
	mute, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	// Dial returns once the kernel has queued the connection; a mute one
	// the server has not yet accepted is not the server's to close.
	s.waitOpen(t, 3)

	s.cancel()
	waitFor(t, s.stopping, "STOPPING=1")
	resp := draintest.Request(t, talker, tbr)
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("request during the grace: status %d, close %t; want 200 and Connection: close", resp.StatusCode, resp.Close)
	}
	for name, br := range map[string]*bufio.Reader{"talker": tbr, "silent": sbr, "mute": bufio.NewReader(mute)} {
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("%s: read %v, want EOF from the server closing it", name, err)
		}
	}
	if idle := time.Since(beforeSilent); idle < grace {
		t.Errorf("the silent connection was closed after %v idle, want at least %v", idle, grace)
	}
	select {
	case err := <-s.done:
		s.done <- err
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("Serve did not return once every connection was closed")
	}
}

// registerDefault registers the test's route on the process-wide default
// mux once, however often the test runs (-count).
var registerDefault sync.Once

// TestDefaultServeMux: a nil Handler means http.DefaultServeMux, as in
// http.Server.
func TestDefaultServeMux(t *testing.T) {
	registerDefault.Do(func() {
		http.HandleFunc("/drain-test-default-mux", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "default mux\n")
		})
	})
	base := listen(t)
	srv := &http.Server{ErrorLog: testLogger(t)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		done <- drain.Serve(ctx, srv, base, drain.Options{
			Signals: []os.Signal{syscall.SIGUSR2},
			Notify: func(s string) error {
				if s == readyDeclared {
					close(ready)
				}
				return nil
			},
		})
	}()
	waitFor(t, ready, "READY=1")
	c, err := net.Dial("tcp", base.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /drain-test-default-mux HTTP/1.1\r\nHost: x\r\n\r\n")
	resp := draintest.Request(t, c, bufio.NewReader(c))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200 from the default mux", resp.StatusCode)
	}
	c.Close()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestNaiveShutdown shows, for comparison, what http.Server.Shutdown does
// to the same load, over HTTP/1.1 and HTTP/2 (TLS and h2c). It only logs:
// the race it loses is timing-dependent.
func TestNaiveShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("comparison only")
	}
	c := draintest.SelfSigned(t)
	h2c := func(srv *http.Server) {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	for _, tc := range []struct {
		o         loadtest.Options
		configure func(*http.Server)
		tls       bool
	}{
		{o: loadtest.Options{Mode: loadtest.KeepAlive}},
		{o: loadtest.Options{Mode: loadtest.PerRequest}},
		{o: loadtest.Options{Protocol: loadtest.HTTP2, TLS: &tls.Config{RootCAs: c.Pool}}, tls: true},
		{o: loadtest.Options{Protocol: loadtest.H2C}, configure: h2c},
		{o: loadtest.Options{Protocol: loadtest.H2C, Mode: loadtest.PerRequest}, configure: h2c},
	} {
		t.Run(tc.o.Protocol.String()+"/"+tc.o.Mode.String(), func(t *testing.T) {
			base := listen(t)
			serve := func(id string) *http.Server {
				srv := &http.Server{
					Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						w.Header().Set("X-Pid", id)
						io.WriteString(w, "hello from "+id+"\n")
					}),
					ErrorLog: testLogger(t),
				}
				if tc.configure != nil {
					tc.configure(srv)
				}
				if tc.tls {
					srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{c.Pair}}
				}
				done := make(chan struct{})
				ln := dup(t, base)
				go func() {
					if tc.tls {
						srv.ServeTLS(ln, "", "")
					} else {
						srv.Serve(ln)
					}
					close(done)
				}()
				t.Cleanup(func() { srv.Close(); <-done })
				return srv
			}
			old := serve("n0")
			o := tc.o
			o.Addr, o.Concurrency = base.Addr().String(), 32
			g, err := loadtest.Start(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Stop()
			var took []string
			for i := 1; i <= 5; i++ {
				next := serve(fmt.Sprintf("n%d", i))
				if err := g.WaitOK(context.Background(), g.Snapshot().OK+500); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				began := time.Now()
				old.Shutdown(ctx)
				took = append(took, time.Since(began).Round(time.Millisecond).String())
				cancel()
				old = next
			}
			r := g.Stop()
			t.Logf("http.Server.Shutdown, 5 drains (%s): %v", strings.Join(took, ", "), r)
			for _, s := range r.Samples {
				t.Logf("failure: %s", s)
			}
		})
	}
}

// keepAlive opens a connection and completes one keep-alive request on it.
func keepAlive(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if resp := draintest.Request(t, c, br); resp.Close {
		t.Fatal("the server closed a keep-alive connection before the drain")
	}
	return c, br
}

// get does one request on a new connection.
func get(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	draintest.Request(t, c, bufio.NewReader(c))
}

// testLogger returns a logger for http.Server.ErrorLog that writes to the
// test log until the test's cleanups have run, and drops lines after that
// (net/http may log from a connection goroutine that outlives Serve).
func testLogger(t *testing.T) *log.Logger {
	var mu sync.Mutex
	over := false
	t.Cleanup(func() {
		mu.Lock()
		over = true
		mu.Unlock()
	})
	return log.New(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if !over {
			t.Logf("http.Server: %s", strings.TrimRight(string(p), "\n"))
		}
		return len(p), nil
	}), "", 0)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
