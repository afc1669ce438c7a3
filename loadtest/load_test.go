package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testWait bounds every wait in these tests; reaching it is a failure.
const testWait = 30 * time.Second

var modes = []Mode{KeepAlive, PerRequest}

func TestMain(m *testing.M) {
	// Initialise the network poller (epoll fd, eventfd) before any fd count.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	os.Exit(m.Run())
}

// checkLeaks fails t if, after its other cleanups, goroutines of this package
// are left or more fds are open than when it was called. Call it first.
func checkLeaks(t *testing.T) {
	t.Helper()
	fds := openFDs(t)
	t.Cleanup(func() {
		// Exiting goroutines and closing servers take a moment: poll, bounded.
		deadline := time.Now().Add(testWait)
		for {
			g, n := loadGoroutines(), openFDs(t)
			if g == "" && n <= fds {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("leak: %d fds open, %d before; goroutines:\n%s", n, fds, g)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count fds: %v", err)
	}
	return len(ents)
}

// loadGoroutines returns the stacks of goroutines running this package's
// non-test code.
func loadGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "baton/loadtest.(*Generator)") || strings.Contains(g, "baton/loadtest.Start") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// start starts a generator that the test stops in its cleanup.
func start(t *testing.T, o Options) *Generator {
	t.Helper()
	g, err := Start(context.Background(), o)
	if err != nil {
		t.Fatalf("Start(%+v): %v", o, err)
	}
	t.Cleanup(func() { g.Stop() })
	return g
}

// finish waits for g's run to end by itself and returns its totals.
func finish(t *testing.T, g *Generator) Result {
	t.Helper()
	select {
	case <-g.Done():
	case <-time.After(testWait):
		t.Fatalf("run did not end within %v: %v", testWait, g.Snapshot())
	}
	r := g.Stop()
	t.Log(r)
	for _, s := range r.Samples {
		t.Log("  ", s)
	}
	if r.OK+r.Failed() != r.Requests {
		t.Errorf("ok %d + failed %d != requests %d", r.OK, r.Failed(), r.Requests)
	}
	return r
}

// httpServer serves h on 127.0.0.1 and counts the connections it accepted.
func httpServer(t *testing.T, h http.HandlerFunc) (addr string, conns *atomic.Int64) {
	t.Helper()
	conns = new(atomic.Int64)
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String(), conns
}

// rawServer runs handle on every connection accepted on 127.0.0.1, and
// closes the listener and every connection in t's cleanup.
func rawServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // listener closed
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// readRequest reads one request head byte by byte, so that nothing after it
// leaves the kernel's buffer.
func readRequest(c net.Conn) error {
	var head []byte
	b := make([]byte, 1)
	for !strings.HasSuffix(string(head), "\r\n\r\n") {
		if _, err := c.Read(b); err != nil {
			return err
		}
		head = append(head, b[0])
	}
	return nil
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func TestAllOK(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			checkLeaks(t)
			var served atomic.Int64
			addr, conns := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
				// Two "processes", to check that PIDs are told apart.
				w.Header().Set("X-Pid", fmt.Sprint(100+100*(served.Add(1)%2)))
				io.WriteString(w, "hello")
			})
			const n, c = 2000, 8
			r := finish(t, start(t, Options{Addr: addr, Mode: mode, Concurrency: c, Requests: n}))
			if r.Requests != n || r.OK != n || r.Failed() != 0 {
				t.Errorf("requests=%d ok=%d failed=%d, want %d, %d, 0", r.Requests, r.OK, r.Failed(), n, n)
			}
			if got := served.Load(); got != n {
				t.Errorf("server handled %d requests, want %d", got, n)
			}
			if r.PIDs["100"]+r.PIDs["200"] != n || r.PIDs["100"] == 0 || r.PIDs["200"] == 0 || len(r.PIDs) != 2 {
				t.Errorf("PIDs = %v, want 100 and 200 summing to %d", r.PIDs, n)
			}
			if len(r.Samples) != 0 || r.Mode != mode || r.Concurrency != c || r.Elapsed <= 0 || r.RPS() <= 0 {
				t.Errorf("result %+v", r)
			}
			got := conns.Load()
			if dealt := r.ConnPIDs["100"] + r.ConnPIDs["200"]; dealt != got || len(r.ConnPIDs) > 2 {
				t.Errorf("ConnPIDs = %v, want the server's %d connections", r.ConnPIDs, got)
			}
			switch mode {
			case KeepAlive:
				if got < 1 || got > c {
					t.Errorf("keep-alive: %d connections, want 1..%d", got, c)
				}
			case PerRequest:
				if got != n {
					t.Errorf("per-request: %d connections, want %d", got, n)
				}
			}
		})
	}
}

// With Nice, every client runs on a thread of its own at that nice value
// while the load runs, and no thread of the process keeps it afterwards
// (the main thread, which the runtime keeps, never has it).
func TestNiceClients(t *testing.T) {
	const nice, c = 7, 4
	release, arrived := make(chan struct{}), make(chan struct{}, c)
	addr, _ := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		<-release // every client's request in flight at once
		io.WriteString(w, "hello")
	})
	g := start(t, Options{Addr: addr, Concurrency: c, Nice: nice})
	for range c {
		select {
		case <-arrived:
		case <-time.After(testWait):
			t.Fatalf("the clients' requests never came: %s", g.Snapshot())
		}
	}
	if got := threadsAtNice(t, nice); got != c {
		t.Errorf("%d threads at nice %d while %d clients wait for their answers, want %d", got, nice, c, c)
	}
	close(release)
	if r := g.Stop(); r.OK == 0 || r.Failed() != 0 {
		t.Errorf("%s", r)
	}
	// A thread ends shortly after its goroutine: wait for it.
	deadline := time.Now().Add(testWait)
	for threadsAtNice(t, nice) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d threads still at nice %d after the run", threadsAtNice(t, nice), nice)
		}
		time.Sleep(time.Millisecond)
	}
}

// threadsAtNice counts the process's threads at nice value n.
func threadsAtNice(t *testing.T, n int) int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, task := range tasks {
		stat, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
		if err != nil {
			continue // ended meanwhile
		}
		// Fields after the command's closing parenthesis: state is 3, nice 19.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) > 16 && f[16] == fmt.Sprint(n) {
			count++
		}
	}
	return count
}

// sampleRE is a Result.Samples entry of an HTTP/1 client.
var sampleRE = regexp.MustCompile(`^[a-z ]+ \(began \d\d:\d\d:\d\d\.\d{3}, after [0-9.]+[µnm]?s, (new|kept) connection\): .`)

func TestFailures(t *testing.T) {
	closedAddr := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		return ln.Addr().String()
	}
	closeAtOnce := func(t *testing.T) string { return rawServer(t, func(net.Conn) {}) }
	unavailable := func(t *testing.T) string {
		addr, _ := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "draining", http.StatusServiceUnavailable)
		})
		return addr
	}
	for _, tc := range []struct {
		name   string
		server func(*testing.T) string
		count  func(Result) int64 // must equal Requests
		sample string
	}{
		{"refused", closedAddr, func(r Result) int64 { return r.Refused }, "connection refused"},
		{"close-on-accept", closeAtOnce, func(r Result) int64 { return r.EOF + r.Reset }, ""},
		{"status-503", unavailable, func(r Result) int64 { return r.BadStatus }, "503"},
	} {
		for _, mode := range modes {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				checkLeaks(t)
				const n = 300
				r := finish(t, start(t, Options{Addr: tc.server(t), Mode: mode, Concurrency: 4, Requests: n}))
				if r.Requests != n || r.OK != 0 || r.Failed() != n || tc.count(r) != n {
					t.Errorf("requests=%d ok=%d failed=%d counted=%d, want %d, 0, %[5]d, %[5]d", r.Requests, r.OK, r.Failed(), tc.count(r), n)
				}
				if len(r.Samples) == 0 || len(r.Samples) > MaxSamples || !strings.Contains(r.Samples[0], tc.sample) {
					t.Errorf("samples %q: want 1..%d, containing %q", r.Samples, MaxSamples, tc.sample)
				}
				for _, s := range r.Samples {
					m := sampleRE.FindStringSubmatch(s)
					if m == nil || mode == PerRequest && m[1] != "new" {
						t.Errorf("sample %q: want the outcome, when it began, how long it took and a %s connection", s, map[Mode]string{PerRequest: "new"}[mode])
					}
				}
				if len(r.PIDs) != 0 {
					t.Errorf("PIDs = %v, want none", r.PIDs)
				}
			})
		}
	}
}

// TestKeepAliveRace checks the failure this package exists to catch: the
// server closes a kept-alive connection, without "Connection: close", just as
// the client sends its next request on it.
func TestKeepAliveRace(t *testing.T) {
	for _, tc := range []struct {
		name string
		// after the first response, before the server closes the connection
		wait   func(net.Conn)
		failed func(Result) int64
	}{
		{"close-after-response", func(net.Conn) {}, func(r Result) int64 { return r.EOF + r.Reset }},
		// Closing with the rest of the request unread makes the kernel send a RST.
		{"close-on-next-request", func(c net.Conn) { c.Read(make([]byte, 1)) }, func(r Result) int64 { return r.Reset }},
	} {
		for _, mode := range modes {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				checkLeaks(t)
				addr := rawServer(t, func(c net.Conn) {
					if readRequest(c) != nil {
						return
					}
					if _, err := io.WriteString(c, okResponse); err != nil {
						return
					}
					tc.wait(c)
				})
				const n = 200
				r := finish(t, start(t, Options{Addr: addr, Mode: mode, Concurrency: 1, Requests: n}))
				// Keep-alive: every second request meets a closing connection.
				// Per-request never reuses a connection, so never sees it.
				wantOK := int64(n)
				if mode == KeepAlive {
					wantOK = n / 2
				}
				if r.Requests != n || r.OK != wantOK || r.Failed() != n-wantOK || tc.failed(r) != n-wantOK {
					t.Errorf("requests=%d ok=%d failed=%d counted=%d, want %d, %d, %d, %[6]d",
						r.Requests, r.OK, r.Failed(), tc.failed(r), n, wantOK, n-wantOK)
				}
			})
		}
	}
}

func TestConnectionCloseReconnects(t *testing.T) {
	checkLeaks(t)
	addr, conns := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	const n = 200
	r := finish(t, start(t, Options{Addr: addr, Mode: KeepAlive, Concurrency: 4, Requests: n}))
	if r.Requests != n || r.OK != n || r.Failed() != 0 {
		t.Errorf("requests=%d ok=%d failed=%d, want %d, %d, 0", r.Requests, r.OK, r.Failed(), n, n)
	}
	if got := conns.Load(); got != n {
		t.Errorf("%d connections, want one per request: %d", got, n)
	}
}

func TestTimeout(t *testing.T) {
	checkLeaks(t)
	addr := rawServer(t, func(c net.Conn) {
		io.Copy(io.Discard, c) // never answer; end when the client closes
	})
	const n = 4
	r := finish(t, start(t, Options{Addr: addr, Mode: KeepAlive, Concurrency: 2, Requests: n, Timeout: 50 * time.Millisecond}))
	if r.Requests != n || r.Timeout != n || r.Failed() != n {
		t.Errorf("requests=%d timeout=%d failed=%d, want %d each", r.Requests, r.Timeout, r.Failed(), n)
	}
}

func TestRequestsLimit(t *testing.T) {
	for _, tc := range []struct {
		c int
		n int64
	}{{1, 1}, {32, 5}, {7, 1001}, {0, 333}} {
		for _, mode := range modes {
			t.Run(fmt.Sprintf("c=%d/n=%d/%v", tc.c, tc.n, mode), func(t *testing.T) {
				checkLeaks(t)
				var served atomic.Int64
				addr, _ := httpServer(t, func(w http.ResponseWriter, r *http.Request) { served.Add(1) })
				r, err := Run(context.Background(), Options{Addr: addr, Mode: mode, Concurrency: tc.c, Requests: tc.n})
				if err != nil {
					t.Fatal(err)
				}
				if r.Requests != tc.n || r.OK != tc.n || served.Load() != tc.n {
					t.Errorf("requests=%d ok=%d served=%d, want %d", r.Requests, r.OK, served.Load(), tc.n)
				}
				if tc.c == 0 && r.Concurrency != DefaultConcurrency {
					t.Errorf("concurrency %d, want default %d", r.Concurrency, DefaultConcurrency)
				}
			})
		}
	}
}

// TestStopFinishesInFlight checks that Stop neither aborts nor miscounts the
// request in flight.
func TestStopFinishesInFlight(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			checkLeaks(t)
			got, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			addr, _ := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
				once.Do(func() { close(got) })
				<-release
			})
			t.Cleanup(func() {
				select {
				case <-release:
				default:
					close(release)
				}
			})
			g := start(t, Options{Addr: addr, Mode: mode, Concurrency: 1})
			<-got
			stopped := make(chan Result)
			go func() { stopped <- g.Stop() }()
			<-g.stopping // Stop has begun
			select {
			case <-g.Done():
				t.Fatal("run ended while a request was in flight")
			default:
			}
			close(release)
			r := <-stopped
			t.Log(r)
			if r.Requests != 1 || r.OK != 1 || r.Failed() != 0 {
				t.Errorf("requests=%d ok=%d failed=%d, want 1, 1, 0", r.Requests, r.OK, r.Failed())
			}
			if again := g.Stop(); again.Requests != r.Requests || again.OK != r.OK {
				t.Errorf("second Stop = %v, want %v", again, r)
			}
		})
	}
}

func TestWaitOK(t *testing.T) {
	checkLeaks(t)
	addr, _ := httpServer(t, func(w http.ResponseWriter, r *http.Request) {})
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()

	g := start(t, Options{Addr: addr, Concurrency: 4})
	if err := g.WaitOK(ctx, 500); err != nil {
		t.Fatal(err)
	}
	if s := g.Snapshot(); s.OK < 500 || s.Requests < s.OK+s.Failed() {
		t.Errorf("after WaitOK(500): %v", s)
	}
	done, stop := context.WithCancel(ctx)
	stop()
	if err := g.WaitOK(done, 1<<62); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitOK with a cancelled context = %v, want context.Canceled", err)
	}
	if r := g.Stop(); r.Failed() != 0 {
		t.Errorf("failures: %v", r)
	}
	if err := g.WaitOK(ctx, 1<<62); !errors.Is(err, ErrEnded) {
		t.Errorf("WaitOK after Stop = %v, want ErrEnded", err)
	}

	g = start(t, Options{Addr: addr, Concurrency: 4, Requests: 10})
	if err := g.WaitOK(ctx, 11); !errors.Is(err, ErrEnded) {
		t.Errorf("WaitOK beyond the request limit = %v, want ErrEnded", err)
	}
	if err := g.WaitOK(ctx, 10); err != nil {
		t.Errorf("WaitOK(10) after 10 requests: %v", err)
	}
}

// TestWaitOKMany has many waiters released by one run, none lost.
func TestWaitOKMany(t *testing.T) {
	checkLeaks(t)
	addr, _ := httpServer(t, func(w http.ResponseWriter, r *http.Request) {})
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	g := start(t, Options{Addr: addr, Concurrency: 4})
	var wg sync.WaitGroup
	for i := range int64(50) {
		wg.Go(func() {
			if err := g.WaitOK(ctx, 1+i*20); err != nil {
				t.Errorf("WaitOK(%d): %v", 1+i*20, err)
			}
		})
	}
	wg.Wait()
	g.Stop()
	if len(g.waiters) != 0 || g.nwaiters.Load() != 0 {
		t.Errorf("%d waiters left (count %d)", len(g.waiters), g.nwaiters.Load())
	}
}

func TestEndsByDurationAndContext(t *testing.T) {
	checkLeaks(t)
	addr, _ := httpServer(t, func(w http.ResponseWriter, r *http.Request) {})

	const d = 100 * time.Millisecond
	r := finish(t, start(t, Options{Addr: addr, Concurrency: 2, Duration: d}))
	if r.Elapsed < d || r.OK == 0 || r.Failed() != 0 {
		t.Errorf("after Duration %v: %v (elapsed %v)", d, r, r.Elapsed)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, err := Start(ctx, Options{Addr: addr, Concurrency: 2, Mode: PerRequest})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Stop() })
	if err := g.WaitOK(ctx, 50); err != nil {
		t.Fatal(err)
	}
	cancel()
	if r := finish(t, g); r.OK < 50 || r.Failed() != 0 {
		t.Errorf("after cancel: %v", r)
	}

	if _, err := Run(ctx, Options{Addr: addr}); !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestOptionsRejected(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		name        string
		o           Options
		notLoopback bool
	}{
		{"documentation net", Options{Addr: "192.0.2.1:80"}, true},
		{"private net", Options{Addr: "10.0.0.1:80"}, true},
		{"any v4", Options{Addr: "0.0.0.0:80"}, true},
		{"any v6", Options{Addr: "[::]:80"}, true},
		{"empty host", Options{Addr: ":80"}, true},
		{"host name", Options{Addr: "example.com:80"}, true},
		{"no port", Options{Addr: "127.0.0.1"}, false},
		{"zero port", Options{Addr: "127.0.0.1:0"}, false},
		{"bad port", Options{Addr: "127.0.0.1:http"}, false},
		{"empty", Options{}, false},
		{"relative path", Options{Addr: "127.0.0.1:80", Path: "x"}, false},
		{"path with CRLF", Options{Addr: "127.0.0.1:80", Path: "/\r\nX: y"}, false},
		{"negative concurrency", Options{Addr: "127.0.0.1:80", Concurrency: -1}, false},
		{"negative duration", Options{Addr: "127.0.0.1:80", Duration: -1}, false},
		{"negative requests", Options{Addr: "127.0.0.1:80", Requests: -1}, false},
		{"negative timeout", Options{Addr: "127.0.0.1:80", Timeout: -1}, false},
		{"unknown mode", Options{Addr: "127.0.0.1:80", Mode: 7}, false},
		{"negative nice", Options{Addr: "127.0.0.1:80", Nice: -1}, false},
		{"nice past 19", Options{Addr: "127.0.0.1:80", Nice: 20}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Start(context.Background(), tc.o)
			if err == nil {
				g.Stop()
				t.Fatalf("Start(%+v) succeeded", tc.o)
			}
			if errors.Is(err, ErrNotLoopback) != tc.notLoopback {
				t.Errorf("Start(%+v) = %v; errors.Is ErrNotLoopback = %v, want %v", tc.o, err, !tc.notLoopback, tc.notLoopback)
			}
			if _, err := Run(context.Background(), tc.o); err == nil {
				t.Errorf("Run(%+v) succeeded", tc.o)
			}
		})
	}
}

func TestLoopbackAccepted(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:80", "127.1.2.3:8080", "[::1]:80", "localhost:80", "LocalHost:1", "[::ffff:127.0.0.1]:80"} {
		if err := checkLoopback(addr); err != nil {
			t.Errorf("checkLoopback(%q) = %v", addr, err)
		}
	}
	// The dial hook is the last line of defence, after name resolution.
	for addr, ok := range map[string]bool{"127.0.0.1:80": true, "[::1]:80": true, "192.0.2.1:80": false, "[2001:db8::1]:80": false} {
		if err := loopbackOnly(context.Background(), "tcp", addr, nil); (err == nil) != ok {
			t.Errorf("loopbackOnly(%q) = %v", addr, err)
		}
	}
}

func TestClassify(t *testing.T) {
	op := func(e error) error { return &net.OpError{Op: "read", Net: "tcp", Err: e} }
	for _, tc := range []struct {
		err  error
		want outcome
	}{
		{nil, outOK},
		{op(os.NewSyscallError("connect", syscall.ECONNREFUSED)), outRefused},
		{fmt.Errorf("load: read response: %w", op(os.NewSyscallError("read", syscall.ECONNRESET))), outReset},
		{fmt.Errorf("load: write request: %w", op(os.NewSyscallError("write", syscall.EPIPE))), outReset},
		{fmt.Errorf("load: read response: %w", io.EOF), outEOF},
		{fmt.Errorf("load: read body: %w", io.ErrUnexpectedEOF), outEOF},
		{op(os.ErrDeadlineExceeded), outTimeout},
		{&statusError{"503 Service Unavailable"}, outBadStatus},
		{errors.New("malformed HTTP response"), outOther},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestResultString(t *testing.T) {
	r := Result{
		Mode: PerRequest, Concurrency: 8, Requests: 30, OK: 21,
		Refused: 1, Reset: 2, EOF: 3, Timeout: 1, BadStatus: 1, Other: 1,
		PIDs: map[string]int64{"1": 20, "2": 1}, Elapsed: 2 * time.Second,
	}
	const want = "mode=per-request c=8 requests=30 ok=21 failed=9 (refused=1 reset=2 eof=3 timeout=1 status=1 other=1) rps=15.0 pids=2"
	if got := r.String(); got != want {
		t.Errorf("String() =\n%s\nwant\n%s", got, want)
	}
	if (Result{Requests: 5}).RPS() != 0 {
		t.Error("RPS without Elapsed is not 0")
	}
}

// TestResultAdd checks that slices of a load add up to one Result, the
// latencies included.
func TestResultAdd(t *testing.T) {
	checkLeaks(t)
	slow := atomic.Bool{}
	addr, _ := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		if slow.Load() {
			time.Sleep(20 * time.Millisecond)
			w.Header().Set("X-Pid", "2")
		} else {
			w.Header().Set("X-Pid", "1")
		}
		io.WriteString(w, "hello")
	})
	fast := finish(t, start(t, Options{Addr: addr, Mode: KeepAlive, Concurrency: 2, Requests: 300}))
	slow.Store(true)
	slowR := finish(t, start(t, Options{Addr: addr, Mode: KeepAlive, Concurrency: 2, Requests: 100}))
	refused := Result{Requests: 3, Refused: 3, Elapsed: time.Second,
		Samples: []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"}}

	var sum Result
	for _, r := range []Result{fast, slowR, refused} {
		sum.Add(r)
	}
	if sum.Requests != 403 || sum.OK != 400 || sum.Refused != 3 || sum.Failed() != 3 {
		t.Errorf("sum %v, want 403 requests, 400 ok, 3 refused", sum)
	}
	if sum.Mode != KeepAlive || sum.Concurrency != 2 {
		t.Errorf("sum mode %v c=%d, want the first run's", sum.Mode, sum.Concurrency)
	}
	if sum.PIDs["1"] != 300 || sum.PIDs["2"] != 100 || len(sum.PIDs) != 2 {
		t.Errorf("PIDs = %v, want 1:300 2:100", sum.PIDs)
	}
	if sum.ConnPIDs["1"] != 2 || sum.ConnPIDs["2"] != 2 || len(sum.ConnPIDs) != 2 {
		t.Errorf("ConnPIDs = %v, want each run's 2 connections", sum.ConnPIDs)
	}
	if want := fast.Elapsed + slowR.Elapsed + time.Second; sum.Elapsed != want {
		t.Errorf("Elapsed = %v, want %v", sum.Elapsed, want)
	}
	if len(sum.Samples) != MaxSamples {
		t.Errorf("%d samples, want at most %d", len(sum.Samples), MaxSamples)
	}
	// A quarter of the requests took 20 ms or more: the median is the
	// fast run's, p90 the slow one's.
	if p50, p90 := sum.Latency.Quantile(0.5), sum.Latency.Quantile(0.9); p50 >= 20*time.Millisecond || p90 < 19*time.Millisecond {
		t.Errorf("p50 %v, p90 %v: want under 20 ms and about 20 ms", p50, p90)
	}
}

func TestMode(t *testing.T) {
	for _, m := range modes {
		if got, err := ParseMode(m.String()); got != m || err != nil {
			t.Errorf("ParseMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseMode("pipelined"); err == nil {
		t.Error("ParseMode(pipelined) succeeded")
	}
	if s := Mode(9).String(); s != "Mode(9)" {
		t.Errorf("Mode(9) = %q", s)
	}
}

// TestWireFormat checks the exact bytes a client sends in each mode.
func TestWireFormat(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			checkLeaks(t)
			reqs := make(chan string, 1)
			addr := rawServer(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				var head strings.Builder
				for !strings.HasSuffix(head.String(), "\r\n\r\n") {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					head.WriteString(line)
				}
				reqs <- head.String()
				io.WriteString(c, okResponse)
			})
			r := finish(t, start(t, Options{Addr: addr, Path: "/health?x=1", Mode: mode, Concurrency: 1, Requests: 1}))
			want := "GET /health?x=1 HTTP/1.1\r\nHost: " + addr + "\r\n"
			if mode == PerRequest {
				want += "Connection: close\r\n"
			}
			if got := <-reqs; got != want+"\r\n" {
				t.Errorf("request %q, want %q", got, want+"\r\n")
			}
			if r.OK != 1 {
				t.Errorf("%v", r)
			}
		})
	}
}
