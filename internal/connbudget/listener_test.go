package connbudget

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPick(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sec := func(n int) time.Time { return at.Add(time.Duration(n) * time.Second) }
	tests := []struct {
		name   string
		ws     []waiting
		unread []bool
		want   int
	}{
		{"none", nil, nil, -1},
		{"the longest waiting", []waiting{{sec(3), true}, {sec(1), true}, {sec(2), true}}, []bool{false, false, false}, 1},
		{"not one whose request is in the kernel", []waiting{{sec(3), true}, {sec(1), true}, {sec(2), true}}, []bool{false, true, false}, 2},
		{"all requests in the kernel", []waiting{{sec(1), true}, {sec(2), true}}, []bool{true, true}, -1},
		// Unread bytes behind a response being written are a pipelining
		// client's that does not read: they protect nothing.
		{"finishing with unread bytes", []waiting{{sec(2), true}, {sec(1), false}}, []bool{false, true}, 1},
		{"finishing, newer than a reader", []waiting{{sec(1), true}, {sec(2), false}}, []bool{false, false}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pick(tt.ws, func(i int) bool { return tt.unread[i] }); got != tt.want {
				t.Errorf("pick = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestWholeHead(t *testing.T) {
	for in, want := range map[string]bool{
		"GET /livez HTTP/1.1\r\nHost: a\r\n\r\n":    true,
		"GET /livez HTTP/1.1\nHost: a\n\n":          true,
		"GET /livez HTTP/1.1\r\nHost: a\r\n\r\nGET": true,
		"GET /livez HTTP/1.1\r\nHost: a\r\n":        false,
		"GET /livez HTTP/1.1\r\n":                   false,
		"G":                                         false,
		"":                                          false,
	} {
		if got := wholeHead([]byte(in)); got != want {
			t.Errorf("wholeHead(%q) = %v, want %v", in, got, want)
		}
	}
}

// listen returns a Listener of budget n on 127.0.0.1, closed when the
// test ends.
func listen(t *testing.T, n int) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(ln, n)
	t.Cleanup(func() { l.Close() })
	return l
}

// serve runs handler on a Listener of budget n on 127.0.0.1, with
// timeouts long enough that only the budget closes a connection.
func serve(t *testing.T, n int, handler http.HandlerFunc) *Listener {
	t.Helper()
	l := listen(t, n)
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute}
	done := make(chan struct{})
	go func() { defer close(done); l.Serve(srv) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return l
}

// held returns how many connections l holds.
func (l *Listener) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

func dial(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// get sends one request on a new connection and returns the status line;
// the connection stays open, idle, until the test ends.
func get(t *testing.T, l *Listener, path string, within time.Duration) (string, error) {
	t.Helper()
	c := dial(t, l)
	c.SetDeadline(time.Now().Add(within))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// waitHeld waits until l holds n connections.
func waitHeld(t *testing.T, l *Listener, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); l.held() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the listener holds %d connections, want %d", l.held(), n)
		}
	}
}

// closedByServer reports whether the server closed c: a read ends with
// EOF or a reset instead of timing out.
func closedByServer(c net.Conn, within time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// Connections that started a request and stalled fill the budget; each
// new one still gets its answer at once, in the place of the one that
// has waited longest, and the others stay.
func TestStalledConnectionsMakeRoom(t *testing.T) {
	l := serve(t, 4, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	var stalled []net.Conn
	for range 4 {
		c := dial(t, l)
		io.WriteString(c, "GET / HTTP/1.1\r\n") // and nothing more
		stalled = append(stalled, c)
		waitHeld(t, l, len(stalled))
	}
	for i := range 3 {
		if line, err := get(t, l, "/", 2*time.Second); err != nil || line != "HTTP/1.1 200 OK" {
			t.Fatalf("request %d with the budget full of stalled connections: %q %v", i, line, err)
		}
		if !closedByServer(stalled[i], 2*time.Second) {
			t.Errorf("stalled connection %d, the oldest, is still open", i)
		}
	}
	if closedByServer(stalled[3], 100*time.Millisecond) {
		t.Error("the newest stalled connection was closed too: one closed connection makes room for one")
	}
}

// With the budget full, a new connection that brought no whole request
// is closed at once, and the ones held stay; one that brought a request
// is served.
func TestTricklersTurnedAway(t *testing.T) {
	l := serve(t, 2, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	var stalled []net.Conn
	for range 2 {
		c := dial(t, l)
		io.WriteString(c, "GET / HTTP/1.1\r\n")
		stalled = append(stalled, c)
		waitHeld(t, l, len(stalled))
	}
	for _, first := range []string{"GET / HTTP/1.1\r\nHost: a\r\n", "G"} {
		c := dial(t, l)
		io.WriteString(c, first)
		if !closedByServer(c, 2*time.Second) {
			t.Errorf("a connection that sent %q with the budget full is still open", first)
		}
	}
	for i, c := range stalled {
		if closedByServer(c, 100*time.Millisecond) {
			t.Errorf("stalled connection %d was closed to turn away a newer one", i)
		}
	}
	if line, err := get(t, l, "/", 2*time.Second); err != nil || line != "HTTP/1.1 200 OK" {
		t.Errorf("a whole request with the budget full: %q %v", line, err)
	}
}

// A connection whose handler runs is never closed to make room: a new
// one waits in the kernel's queue until a handler returns.
func TestBusyConnectionsStay(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	l := serve(t, 2, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	})
	type result struct {
		line string
		err  error
	}
	slow := make(chan result, 2)
	for range 2 {
		go func() {
			line, err := get(t, l, "/slow", 10*time.Second)
			slow <- result{line, err}
		}()
		<-entered
	}
	fast := make(chan result, 1)
	go func() {
		line, err := get(t, l, "/", 10*time.Second)
		fast <- result{line, err}
	}()
	select {
	case r := <-fast:
		t.Fatalf("a request was answered while both connections were in handlers: %q %v", r.line, r.err)
	case r := <-slow:
		t.Fatalf("a connection in its handler ended: %q %v", r.line, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	for _, ch := range []chan result{slow, slow, fast} {
		if r := <-ch; r.err != nil || r.line != "HTTP/1.1 200 OK" {
			t.Errorf("once the handlers returned: %q %v", r.line, r.err)
		}
	}
}

// A client that pipelines requests and never reads their answers leaves
// its connection stuck writing a response once the socket buffers are
// full; that connection makes room like an idle one.
func TestUnreadResponsesMakeRoom(t *testing.T) {
	l := serve(t, 1, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, strings.Repeat("x", 1<<10)) })
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<10) })
		return nil
	}}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		req := strings.Repeat("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1000)
		for range 20 { // 20,000 answers: 20 MiB no buffer holds
			if _, err := io.WriteString(c, req); err != nil {
				return
			}
		}
	}()
	waitHeld(t, l, 1)
	if line, err := get(t, l, "/", 5*time.Second); err != nil || line != "HTTP/1.1 200 OK" {
		t.Fatalf("a request while a pipelining client does not read: %q %v", line, err)
	}
}

// Close ends an Accept that waits for room.
func TestCloseEndsWaitingAccept(t *testing.T) {
	l := listen(t, 1)
	first := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		first <- c
	}()
	dial(t, l).Write([]byte("G"))
	c := <-first
	defer c.Close()
	c.(*Conn).set(busy)
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	dial(t, l).Write([]byte("G"))
	select {
	case err := <-accepted:
		t.Fatalf("Accept returned with the budget held by a busy connection: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	l.Close()
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// unread sees a request that reached the kernel and is not read yet.
func TestUnread(t *testing.T) {
	l := listen(t, 1)
	io.WriteString(dial(t, l), "GET / HTTP/1.1\r\n")
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*Conn)
	defer c.Close()
	if !c.unread() {
		t.Error("unread is false with the client's bytes in the kernel")
	}
	c.Read(make([]byte, 64))
	if c.unread() {
		t.Error("unread once they were read")
	}
}

// The kernel holds back a connection that has sent nothing
// (TCP_DEFER_ACCEPT): one that sent its request after it is accepted first.
func TestSilentConnectionsWait(t *testing.T) {
	l := listen(t, 2)
	dial(t, l)
	io.WriteString(dial(t, l), "G")
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil || string(b) != "G" {
		t.Errorf("the first connection accepted read %q, %v: want the one that sent G, not the silent one before it", b, err)
	}
}
