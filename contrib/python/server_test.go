package python

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
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
