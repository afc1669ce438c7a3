package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/drain"
	"github.com/batonhq/baton/drain/draintest"
	"github.com/batonhq/baton/loadtest"
)

// roleEnv makes the re-executed test binary run main instead of the tests.
const roleEnv = "HELLO_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// noRaceExitSleep spares a child built with -race the race runtime's
// one-second sleep at exit.
var noRaceExitSleep = "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")

// hello is a running hello process.
type hello struct {
	*draintest.Worker
	addr string
}

// startHello runs hello (this test binary as main) with args and sockets.
// With want == "", it returns once hello serves; else once hello said want,
// which the test checks, and exited 1.
func startHello(t *testing.T, sockets []draintest.Socket, want string, args ...string) *hello {
	t.Helper()
	w := draintest.Start(t, append([]string{os.Args[0]}, args...), sockets, roleEnv+"=1", noRaceExitSleep)
	if want != "" {
		if line := w.Line(t); line != want {
			t.Errorf("hello said %q, want %q", line, want)
		}
		if st := w.Wait(t); st != 1 {
			t.Errorf("exit status %d, want 1", st)
		}
		return nil
	}
	line := w.Line(t)
	var addr string
	var pid int
	if _, err := fmt.Sscanf(line, "hello: serving on %s pid %d", &addr, &pid); err != nil || pid != w.Pid {
		t.Fatalf("start line %q, want \"hello: serving on ADDR pid %d\"", line, w.Pid)
	}
	return &hello{w, addr}
}

// get fetches path from addr on a new connection.
func get(t *testing.T, addr, path string) (*http.Response, string) {
	t.Helper()
	c := http.Client{Timeout: draintest.EventTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestRoutes(t *testing.T) {
	h := startHello(t, nil, "", "-listen", "127.0.0.1:0")
	hi := fmt.Sprintf("hello from pid %d\n", h.Pid)
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/", 200, hi},
		{"/any/path", 200, hi},
		{"/slow?ms=20", 200, hi},
		{"/stream?s=1", 200, ""}, // ten lines, checked below
		{"/slow?ms=soon", 400, "hello: /slow wants ms=N (milliseconds, N >= 0)\n"},
		{"/stream", 400, "hello: /stream wants s=N (seconds, N >= 0)\n"},
	} {
		resp, body := get(t, h.addr, tc.path)
		if resp.StatusCode != tc.status || resp.Header.Get("X-Pid") != strconv.Itoa(h.Pid) {
			t.Errorf("%s: status %d X-Pid %q, want %d %d", tc.path, resp.StatusCode, resp.Header.Get("X-Pid"), tc.status, h.Pid)
		}
		if tc.path == "/stream?s=1" {
			lines := strings.SplitAfter(strings.TrimSuffix(body, "\n"), "\n")
			if len(lines) != 10 || lines[9] != "9 "+strings.TrimSuffix(hi, "\n") {
				t.Errorf("%s: %q, want 10 lines", tc.path, body)
			}
			continue
		}
		if body != tc.body {
			t.Errorf("%s: body %q, want %q", tc.path, body, tc.body)
		}
	}
	h.Signal(t, syscall.SIGTERM)
	if st := h.Wait(t); st != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", st)
	}
}

// TestReusePort runs two copies on one address, as -listen allows.
func TestReusePort(t *testing.T) {
	a := startHello(t, nil, "", "-listen", "127.0.0.1:0")
	b := startHello(t, nil, "", "-listen", a.addr)
	if b.addr != a.addr {
		t.Errorf("second copy serves on %s, want %s", b.addr, a.addr)
	}
}

func TestInheritedListener(t *testing.T) {
	for _, tc := range []struct {
		test  string
		names []string // one socket each
		args  []string
		serve string // the name of the socket it should serve
		want  string // or the line it should exit with
	}{
		{test: "by name", names: []string{"admin", "http"}, serve: "http"},
		{test: "by -name", names: []string{"admin", "web"}, args: []string{"-name", "web"}, serve: "web"},
		{test: "the only one", names: []string{"web"}, serve: "web"},
		{test: "unnamed", names: []string{""}, serve: ""},
		{test: "none fits", names: []string{"admin", "web"}, want: `hello: handoff: no listener named "http" (have "admin", "web")`},
		{test: "none", want: "hello: handoff: no inherited listeners (LISTEN_FDS unset): run under baton or systemd socket activation, or use -listen ADDR"},
	} {
		t.Run(tc.test, func(t *testing.T) {
			var socks []draintest.Socket
			addrs := map[string]string{} // address -> name
			for _, name := range tc.names {
				ln, s := draintest.Listen(t, name)
				socks = append(socks, s)
				addrs[ln.Addr().String()] = name
			}
			h := startHello(t, socks, tc.want, tc.args...)
			if tc.want != "" {
				return
			}
			if name, ok := addrs[h.addr]; !ok || name != tc.serve {
				t.Fatalf("hello serves on %s (%q), want the socket named %q of %v", h.addr, name, tc.serve, addrs)
			}
			if _, body := get(t, h.addr, "/"); body != fmt.Sprintf("hello from pid %d\n", h.Pid) {
				t.Errorf("body %q", body)
			}
		})
	}
}

// TestDrainUnderLoad: two hello processes share one socket, as under baton;
// one gets SIGTERM while 32 clients that never retry hammer the socket,
// in each protocol hello speaks: HTTP/1.1, HTTP/2 over TLS and h2c (each
// connection sent away by GOAWAY), and WebSocket sessions (each ended by
// the drained worker's close frame).
func TestDrainUnderLoad(t *testing.T) {
	cert := draintest.SelfSigned(t)
	certFile, keyFile := cert.Files(t)
	for _, tc := range []struct {
		o    loadtest.Options
		args []string
	}{
		{loadtest.Options{Protocol: loadtest.HTTP1}, nil},
		{loadtest.Options{Protocol: loadtest.HTTP2, TLS: &tls.Config{RootCAs: cert.Pool}}, []string{"-cert", certFile, "-key", keyFile}},
		{loadtest.Options{Protocol: loadtest.H2C}, []string{"-h2c"}},
		{loadtest.Options{Protocol: loadtest.WebSocket, Path: "/ws"}, nil},
	} {
		for _, mode := range []loadtest.Mode{loadtest.KeepAlive, loadtest.PerRequest} {
			if tc.o.TLS != nil && mode == loadtest.PerRequest {
				continue // a TLS handshake per request: slow under -race, and h2c per-request has the churn
			}
			tc.o.Mode = mode
			t.Run(tc.o.Protocol.String()+"/"+mode.String(), func(t *testing.T) {
				draintest.DrainLoad(t, tc.o, func(t *testing.T, s draintest.Socket) *draintest.Worker {
					return startHello(t, []draintest.Socket{s}, "", tc.args...).Worker
				})
			})
		}
	}
}

// ready is hello's READY=1 datagram: the drain package says beside it
// that hello serves what it accepted.
const ready = "READY=1\n" + drain.DrainsAcceptedField

// TestNotify: under a supervisor, hello reports READY=1 and STOPPING=1.
func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%t", abstract), func(t *testing.T) {
			name, msgs := draintest.NotifySocket(t, abstract)
			_, s := draintest.Listen(t, "http")
			w := draintest.Start(t, []string{os.Args[0]}, []draintest.Socket{s}, roleEnv+"=1", noRaceExitSleep, "NOTIFY_SOCKET="+name)
			var got []string
			for _, want := range []string{ready, "STOPPING=1"} {
				m, ok := <-msgs
				got = append(got, m)
				if !ok || m != want {
					t.Fatalf("notified %q, want %q then STOPPING=1", got, ready)
				}
				if want == ready {
					w.Signal(t, syscall.SIGTERM)
				}
			}
			if st := w.Wait(t); st != 0 {
				t.Errorf("exit status %d, want 0", st)
			}
			if !slices.Equal(got, []string{ready, "STOPPING=1"}) {
				t.Errorf("notified %q", got)
			}
		})
	}
}

// TestPanic: two hello processes share one socket, as under baton, with
// clients that never retry on it. /panic on a connection of the first: that
// request gets a 500; the first says STOPPING=1, reports the panic with its
// stack, finishes the stream it was sending, and exits 1; no other request
// fails.
func TestPanic(t *testing.T) {
	for _, mode := range []loadtest.Mode{loadtest.KeepAlive, loadtest.PerRequest} {
		t.Run(mode.String(), func(t *testing.T) { testPanic(t, mode) })
	}
}

func testPanic(t *testing.T, mode loadtest.Mode) {
	const streamLines = 30 // /stream?s=3
	ln, sock := draintest.Listen(t, "http")
	addr := ln.Addr().String()
	notifyName, msgs := draintest.NotifySocket(t, false)
	notified := func(want string) {
		t.Helper()
		select {
		case m := <-msgs:
			if m != want {
				t.Fatalf("notified %q, want %q", m, want)
			}
		case <-time.After(draintest.EventTimeout):
			t.Fatalf("no %s within %v", want, draintest.EventTimeout)
		}
	}
	a := draintest.Start(t, []string{os.Args[0]}, []draintest.Socket{sock}, roleEnv+"=1", noRaceExitSleep, "NOTIFY_SOCKET="+notifyName)
	a.Serving(t, "hello: serving on ")
	notified(ready)
	apid := strconv.Itoa(a.Pid)

	// While a is alone on the socket, it takes two keep-alive connections:
	// one to stream on, one to ask for /panic on.
	sc, sbr := draintest.KeepAlive(t, addr)
	defer sc.Close()
	pc, pbr := draintest.KeepAlive(t, addr)
	defer pc.Close()

	// The load starts on a alone: with keep-alive, all its connections
	// are a's when a panics.
	ctx, cancel := context.WithTimeout(context.Background(), 2*draintest.EventTimeout)
	defer cancel()
	g, err := loadtest.Start(ctx, loadtest.Options{Addr: addr, Concurrency: 32, Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	if err := g.WaitOK(ctx, 500); err != nil {
		t.Fatal(err)
	}
	b := startHello(t, []draintest.Socket{sock}, "")
	if err := g.WaitOK(ctx, g.Snapshot().OK+500); err != nil {
		t.Fatal(err)
	}

	// The stream starts just before the panic, so that a is still
	// sending it when its drain begins, however long the load took.
	sc.SetDeadline(time.Now().Add(draintest.EventTimeout))
	io.WriteString(sc, "GET /stream?s=3 HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(sbr, nil)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("X-Pid") != apid {
		t.Fatalf("/stream: %v %v, want 200 from pid %s", resp, err, apid)
	}
	var lines atomic.Int64
	streamed := make(chan error, 1)
	go func() {
		br := bufio.NewReader(resp.Body)
		for {
			if _, err := br.ReadString('\n'); err != nil {
				if err == io.EOF {
					err = nil
				}
				streamed <- err
				return
			}
			lines.Add(1)
		}
	}()
	pc.SetDeadline(time.Now().Add(draintest.EventTimeout))
	io.WriteString(pc, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
	presp, err := http.ReadResponse(pbr, nil)
	if err != nil || presp.StatusCode != http.StatusInternalServerError || !presp.Close {
		t.Fatalf("/panic: %v %v, want 500 with Connection: close", presp, err)
	}
	if n := lines.Load(); n >= streamLines {
		t.Errorf("the stream had ended (%d lines) before the panic: the drain was not tested", n)
	}
	notified("STOPPING=1")

	// The report, with the stack through the handler, then the exit line.
	if l := a.Serving(t, "drain: panic: "); l != "drain: panic: hello: /panic requested" {
		t.Errorf("panic report %q", l)
	}
	var stack []string
	for {
		l := a.Line(t)
		if strings.HasPrefix(l, "hello: ") {
			if want := "hello: drain: panic: hello: /panic requested"; l != want {
				t.Errorf("last line %q, want %q", l, want)
			}
			break
		}
		stack = append(stack, l)
	}
	if s := strings.Join(stack, "\n"); !strings.Contains(s, "panic(") || !strings.Contains(s, "hello.routes.func") {
		t.Errorf("the reported stack does not show the handler:\n%s", s)
	}
	if st := a.Wait(t); st != 1 {
		t.Errorf("exit status %d after the panic, want 1", st)
	}
	select {
	case err := <-streamed:
		if err != nil || lines.Load() != streamLines {
			t.Errorf("stream: %d lines, %v; want all %d, ended cleanly", lines.Load(), err, streamLines)
		}
	case <-time.After(draintest.EventTimeout):
		t.Error("the stream did not end")
	}

	after := g.Snapshot()
	if err := g.WaitOK(ctx, after.OK+500); err != nil {
		t.Fatal(err)
	}
	r := g.Stop()
	t.Logf("load: %v; ok by pid: %v", r, r.PIDs)
	for _, s := range r.Samples {
		t.Logf("failure: %s", s)
	}
	if r.Failed() != 0 {
		t.Errorf("%d of %d requests failed across the panic", r.Failed(), r.Requests)
	}
	if bpid := strconv.Itoa(b.Pid); r.PIDs[apid] == 0 || r.PIDs[bpid]-after.PIDs[bpid] < 500-int64(r.Concurrency) {
		t.Errorf("ok by pid %v (%v when %s exited): want both to have served, and %s the last 500", r.PIDs, after.PIDs, apid, bpid)
	}
}
