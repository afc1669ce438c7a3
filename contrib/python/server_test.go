package python

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/drain/draintest"
)

var spec = draintest.Spec{
	Argv:      []string{"python3", "server.py"},
	Serving:   "python: serving on ",
	Draining:  "python: draining",
	Forced:    "python: forced close",
	IdleGrace: time.Second,
}

// TestServer runs server.py through the checks every baton worker passes;
// it skips if python3 is not installed.
func TestServer(t *testing.T) {
	draintest.Conformance(t, spec)
}

// TestNotify: READY=1 once serving, STOPPING=1 when the drain starts, to a
// NOTIFY_SOCKET given as a path or in the abstract namespace.
func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%t", abstract), func(t *testing.T) {
			name, msgs := draintest.NotifySocket(t, abstract)
			_, s := draintest.Listen(t, "http")
			w := draintest.Start(t, spec.Argv, []draintest.Socket{s}, "NOTIFY_SOCKET="+name)
			for _, want := range []string{"READY=1", "STOPPING=1"} {
				select {
				case m := <-msgs:
					if m != want {
						t.Fatalf("notified %q, want %q", m, want)
					}
				case <-time.After(draintest.EventTimeout):
					t.Fatalf("no %s", want)
				}
				if want == "READY=1" {
					w.Signal(t, syscall.SIGTERM)
				}
			}
			if st := w.Wait(t); st != 0 {
				t.Errorf("exit status %d, want 0", st)
			}
		})
	}
}

// TestWSGI: baton.py frames the app's responses on one keep-alive
// connection: a body read from wsgi.input, one the app left unread (dropped
// before the next request), a response without Content-Length (chunked to
// HTTP/1.1, the connection closed after it for HTTP/1.0), and an app that
// fails (500, connection closed).
func TestWSGI(t *testing.T) {
	ln, s := draintest.Listen(t, "http")
	w := draintest.Start(t, spec.Argv, []draintest.Socket{s})
	w.Serving(t, spec.Serving)
	c := draintest.Dial(t, ln.Addr().String())
	br := bufio.NewReader(c)
	exchange := func(req string) (*http.Response, string) {
		t.Helper()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%q: reading the body: %v", req, err)
		}
		return resp, string(body)
	}
	for _, tt := range []struct {
		req, body string
		chunked   bool
	}{
		{"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "hello", false},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nignored", "hello from pid", false},
		{"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", "part 0\npart 1\npart 2\n", true},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "hello from pid", false},
	} {
		resp, body := exchange(tt.req)
		if resp.StatusCode != 200 || !strings.HasPrefix(body, tt.body) || resp.Close {
			t.Errorf("%q: %s %q (close %t), want 200 %q on a kept connection", tt.req, resp.Status, body, resp.Close, tt.body)
		}
		if chunked := slices.Contains(resp.TransferEncoding, "chunked"); chunked != tt.chunked {
			t.Errorf("%q: chunked %t, want %t", tt.req, chunked, tt.chunked)
		}
	}
	resp, body := exchange("GET /stream HTTP/1.0\r\n\r\n")
	if resp.StatusCode != 200 || body != "part 0\npart 1\npart 2\n" || !resp.Close {
		t.Errorf("HTTP/1.0 /stream: %s %q (close %t), want 200 and the connection closed", resp.Status, body, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after an HTTP/1.0 response without a length: read %v, want EOF", err)
	}

	c = draintest.Dial(t, ln.Addr().String())
	br = bufio.NewReader(c)
	resp, _ = exchange("GET /fail HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 500 || !resp.Close {
		t.Errorf("an app that fails: %s (close %t), want 500 and the connection closed", resp.Status, resp.Close)
	}
	w.Signal(t, syscall.SIGTERM)
	if st := w.Wait(t); st != 0 {
		t.Errorf("exit status %d, want 0", st)
	}
}

// misbehaving is testdata/misbehaving.py: an app that gets everything
// wrong that baton.py must contain.
var misbehaving = []string{"python3", "testdata/misbehaving.py"}

// roundTrip sends raw on c and reads one response to method; the body is
// read whole (err is the body's read error, if any).
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, method, raw string) (resp *http.Response, body string, err error) {
	t.Helper()
	c.SetDeadline(time.Now().Add(draintest.EventTimeout))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// closed checks that the server closed c after what was read from br.
func closed(t *testing.T, c net.Conn, br *bufio.Reader, after string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(draintest.EventTimeout))
	if b, err := br.ReadByte(); err != io.EOF {
		rest, _ := br.Peek(br.Buffered())
		t.Errorf("after %s: read %q%q, %v; want the connection closed", after, b, rest, err)
	}
}

// A request whose framing could be read two ways is refused and its
// connection closed, so that nothing smuggled after it is answered; a
// header name with an underscore cannot pose as one with a dash.
func TestRefusesAmbiguousFraming(t *testing.T) {
	ln, s := draintest.Listen(t, "http")
	draintest.Start(t, misbehaving, []draintest.Socket{s}).Serving(t, spec.Serving)
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tt := range []struct {
		name, req string
		status    int
	}{
		{"transfer-encoding", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled), 501},
		{"two lengths", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 37\r\n\r\n" + smuggled, 400},
		{"malformed length", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +1_0\r\n\r\n0123456789", 400},
		{"broken header block", "POST /echo HTTP/1.1\r\nHost: x\r\nnot a header\r\nContent-Length: 5\r\n\r\n" + smuggled, 400},
	} {
		c := draintest.Dial(t, ln.Addr().String())
		br := bufio.NewReader(c)
		resp, _, _ := roundTrip(t, c, br, "POST", tt.req)
		if resp.StatusCode != tt.status {
			t.Errorf("%s: %s, want %d", tt.name, resp.Status, tt.status)
		}
		closed(t, c, br, tt.name)
	}
	c := draintest.Dial(t, ln.Addr().String())
	resp, _, _ := roundTrip(t, c, bufio.NewReader(c), "GET", "GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n")
	if got := resp.Header.Get("X-Forwarded-For"); got != "10.0.0.1" {
		t.Errorf("the app saw X-Forwarded-For %q, want only the dashed header's 10.0.0.1", got)
	}
}

// What an app gets wrong stays inside its own response: a header that
// cannot go on the wire is a 500, a body longer than its Content-Length
// is cut and one shorter ends the connection (never a second response in
// the first), a 204 and a HEAD carry no body, a str body is a 500.
func TestContainsAppMistakes(t *testing.T) {
	ln, s := draintest.Listen(t, "http")
	draintest.Start(t, misbehaving, []draintest.Socket{s}).Serving(t, spec.Serving)
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n" }
	for _, path := range []string{"/crlf", "/latin", "/str"} {
		c := draintest.Dial(t, ln.Addr().String())
		resp, _, _ := roundTrip(t, c, bufio.NewReader(c), "GET", get(path))
		if resp.StatusCode != 500 || resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("X-Name") != "" {
			t.Errorf("%s: %s %v, want a plain 500", path, resp.Status, resp.Header)
		}
	}

	c := draintest.Dial(t, ln.Addr().String())
	br := bufio.NewReader(c)
	if resp, body, err := roundTrip(t, c, br, "GET", get("/long")); resp.StatusCode != 200 || body != "ok" || err != nil {
		t.Errorf("/long: %s %q %v, want 200 \"ok\"", resp.Status, body, err)
	}
	closed(t, c, br, "a body longer than its Content-Length")

	c = draintest.Dial(t, ln.Addr().String())
	if _, body, err := roundTrip(t, c, bufio.NewReader(c), "GET", get("/short")); err != io.ErrUnexpectedEOF {
		t.Errorf("/short: body %q, %v; want the connection closed after 5 of 10 bytes", body, err)
	}

	c = draintest.Dial(t, ln.Addr().String())
	br = bufio.NewReader(c)
	for _, tt := range []struct{ method, req string }{
		{"GET", get("/nocontent")},
		{"HEAD", "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"GET", get("/")},
	} {
		resp, body, err := roundTrip(t, c, br, tt.method, tt.req)
		if err != nil || len(resp.TransferEncoding) > 0 || tt.method == "HEAD" && body != "" || tt.req == get("/nocontent") && (resp.StatusCode != 204 || body != "") {
			t.Errorf("%q: %s %v %q %v", tt.req, resp.Status, resp.TransferEncoding, body, err)
		}
		if resp.Close {
			t.Errorf("%q: the connection was closed after it, want it kept", tt.req)
		}
	}
	if _, body, _ := roundTrip(t, c, br, "GET", get("/")); body != "fine\n" {
		t.Errorf("after a 204 and a HEAD, GET / on the same connection: %q", body)
	}
}

// A request whose headers and first body bytes came with the previous
// request (already in the server's buffer, so never seen arriving) is
// not taken for an idle connection by the drain: the rest of its body,
// sent after the idle grace, is still read and the request answered.
func TestDrainKeepsPipelinedRequest(t *testing.T) {
	ln, s := draintest.Listen(t, "http")
	w := draintest.Start(t, misbehaving, []draintest.Socket{s})
	w.Serving(t, spec.Serving)
	c := draintest.Dial(t, ln.Addr().String())
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	w.Signal(t, syscall.SIGTERM)
	for !strings.HasPrefix(w.Line(t), spec.Draining) {
	}
	// The condition under test is the grace passing.
	time.Sleep(spec.IdleGrace + 500*time.Millisecond)
	resp, body, err := roundTrip(t, c, br, "POST", "56789")
	if err != nil || body != "0123456789" {
		t.Errorf("POST /echo across the drain: %s %q %v, want the 10 bytes echoed", resp.Status, body, err)
	}
	if st := w.Wait(t); st != 0 {
		t.Errorf("exit status %d, want 0", st)
	}
}

// A thread the app leaves running does not hold the worker's exit up.
func TestAppThreadDoesNotHoldExit(t *testing.T) {
	_, s := draintest.Listen(t, "http")
	w := draintest.Start(t, misbehaving, []draintest.Socket{s}, "MISBEHAVING_THREAD=1")
	w.Serving(t, spec.Serving)
	w.Signal(t, syscall.SIGTERM)
	if st := w.Wait(t); st != 0 {
		t.Errorf("exit status %d, want 0", st)
	}
}

// A unix-socket listener (baton's unix:// address) serves too.
func TestUnixListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	_, s := draintest.ListenUnix(t, path, "http")
	w := draintest.Start(t, misbehaving, []draintest.Socket{s})
	w.Serving(t, spec.Serving)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if resp, body, err := roundTrip(t, c, bufio.NewReader(c), "GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || body != "fine\n" || err != nil {
		t.Errorf("GET / over a unix socket: %s %q %v", resp.Status, body, err)
	}
	w.Signal(t, syscall.SIGTERM)
	if st := w.Wait(t); st != 0 {
		t.Errorf("exit status %d, want 0", st)
	}
}

// Out of descriptors, the worker waits and serves on, instead of ending:
// with 64 descriptors, 80 idle connections, then a request once they go.
func TestOutOfDescriptors(t *testing.T) {
	ln, s := draintest.Listen(t, "http")
	w := draintest.Start(t, []string{"sh", "-c", `ulimit -n 64 && exec "$@"`, "sh", misbehaving[0], misbehaving[1]}, []draintest.Socket{s})
	w.Serving(t, spec.Serving)
	var idle []net.Conn
	for range 80 {
		idle = append(idle, draintest.Dial(t, ln.Addr().String()))
	}
	for !strings.Contains(w.Line(t), "Too many open files") {
	}
	for _, c := range idle {
		c.Close()
	}
	c := draintest.Dial(t, ln.Addr().String())
	if resp, body, err := roundTrip(t, c, bufio.NewReader(c), "GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || body != "fine\n" || err != nil {
		t.Errorf("GET / after running out of descriptors: %s %q %v", resp.Status, body, err)
	}
	w.Signal(t, syscall.SIGTERM)
	if st := w.Wait(t); st != 0 {
		t.Errorf("exit status %d, want 0", st)
	}
}

// The drain closes idle connections whose descriptors are above 1023
// (where select() cannot go): 1,100 idle connections, SIGTERM, exit 0.
func TestDrainManyConnections(t *testing.T) {
	ln, s := draintest.Listen(t, "http")
	w := draintest.Start(t, []string{"sh", "-c", `ulimit -n 4096 && exec "$@"`, "sh", misbehaving[0], misbehaving[1]}, []draintest.Socket{s})
	w.Serving(t, spec.Serving)
	for range 1100 {
		draintest.Dial(t, ln.Addr().String())
	}
	draintest.Accepted(t, ln)
	w.Signal(t, syscall.SIGTERM)
	if st := w.Wait(t); st != 0 {
		t.Errorf("exit status %d after draining 1,100 idle connections, want 0", st)
	}
}
