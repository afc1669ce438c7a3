package draintest

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/loadtest"
)

// Spec describes a worker program for Conformance.
type Spec struct {
	Argv []string // the command; Argv[0] is looked up in $PATH
	Env  []string // added to the environment
	// Lines the worker prints (stdout or stderr), by prefix: once it
	// serves, once a drain started, and when the drain deadline cut
	// connections.
	Serving, Draining, Forced string
	// IdleGrace is the worker's grace for idle connections during a drain.
	IdleGrace time.Duration
}

// Conformance checks a socket-activated HTTP worker of any language the way
// baton uses it. It skips the test if Argv[0] is not installed. Subtests:
//
//   - drain under load, keep-alive and per-request: see DrainUnderLoad;
//   - idle grace: during a drain (SIGTERM, and another SIGTERM, which must
//     not cut it short), a keep-alive connection that sends a request gets
//     a response with "Connection: close"; a silent one, and one that
//     never sent a request, are closed after the grace, not before; the
//     worker exits 0;
//   - deadline: with BATON_DRAIN_TIMEOUT=300ms, a connection stuck in the
//     middle of a request is cut at the deadline and the worker exits
//     non-zero, saying so;
//   - no listener: without LISTEN_FDS it exits non-zero.
func Conformance(t *testing.T, spec Spec) {
	if _, err := exec.LookPath(spec.Argv[0]); err != nil {
		t.Skipf("%s is not installed: %v", spec.Argv[0], err)
	}
	start := func(t *testing.T, s Socket, env ...string) *Worker {
		w := Start(t, spec.Argv, []Socket{s}, append(env, spec.Env...)...)
		w.Serving(t, spec.Serving)
		return w
	}
	for _, mode := range []loadtest.Mode{loadtest.KeepAlive, loadtest.PerRequest} {
		t.Run("drain under load/"+mode.String(), func(t *testing.T) {
			DrainUnderLoad(t, mode, func(t *testing.T, s Socket) *Worker { return start(t, s) })
		})
	}

	t.Run("idle grace", func(t *testing.T) {
		ln, s := Listen(t, "http")
		w := start(t, s)
		addr := ln.Addr().String()
		talker, tbr := KeepAlive(t, addr)
		defer talker.Close()
		beforeSilent := time.Now() // the silent connection is idle since after this
		silent, sbr := KeepAlive(t, addr)
		defer silent.Close()
		mute := Dial(t, addr)
		defer mute.Close()
		Accepted(t, ln) // the worker holds all three, mute too

		w.Signal(t, syscall.SIGTERM)
		w.Serving(t, spec.Draining)
		// systemd and baton may both send SIGTERM: not a reason to hurry.
		w.Signal(t, syscall.SIGTERM)
		resp := Request(t, talker, tbr)
		if resp.StatusCode != http.StatusOK || !resp.Close {
			t.Errorf("request during the grace: status %d, close %t; want 200 and Connection: close", resp.StatusCode, resp.Close)
		}
		for _, c := range []net.Conn{talker, silent, mute} {
			c.SetReadDeadline(time.Now().Add(EventTimeout))
		}
		for name, br := range map[string]*bufio.Reader{"talker": tbr, "silent": sbr, "mute": bufio.NewReader(mute)} {
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("%s: read %v, want EOF from the worker closing it", name, err)
			}
		}
		// A little slack: some workers count time in milliseconds.
		if idle := time.Since(beforeSilent); idle < spec.IdleGrace-5*time.Millisecond {
			t.Errorf("the silent connection was closed after %v idle, want %v", idle, spec.IdleGrace)
		}
		if st := w.Wait(t); st != 0 {
			t.Errorf("exit status %d after the drain, want 0", st)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		const timeout = 300 * time.Millisecond
		ln, s := Listen(t, "http")
		w := start(t, s, "BATON_DRAIN_TIMEOUT="+timeout.String())
		c := Dial(t, ln.Addr().String())
		defer c.Close()
		// Half a request: not answerable, and not idle either (and the
		// deadline comes before the idle grace would end anyway).
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHo"); err != nil {
			t.Fatal(err)
		}
		// The accept queue is first in, first out: once a later
		// connection is answered, the worker holds this one (else it
		// would leave it queued for the other workers, rightly).
		probe, _ := KeepAlive(t, ln.Addr().String())
		probe.Close()
		began := time.Now()
		w.Signal(t, syscall.SIGTERM)
		w.Serving(t, spec.Draining)
		line := w.Serving(t, spec.Forced)
		took := time.Since(began)
		if st := w.Wait(t); st == 0 {
			t.Errorf("exit status 0 after a forced drain (%q), want non-zero", line)
		}
		if took < timeout || took > timeout+time.Second {
			t.Errorf("forced after %v, want at the %v deadline", took, timeout)
		}
	})

	t.Run("no listener", func(t *testing.T) {
		w := Start(t, spec.Argv, nil, spec.Env...)
		if st := w.Wait(t); st == 0 {
			t.Error("exit status 0 without a listener, want non-zero")
		}
	})
}

// Dial connects to addr.
func Dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, EventTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// KeepAlive opens a connection and completes one keep-alive request on it.
func KeepAlive(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := Dial(t, addr)
	br := bufio.NewReader(c)
	if resp := Request(t, c, br); resp.Close {
		t.Fatal("the worker closed a keep-alive connection at once")
	}
	return c, br
}

// Request sends "GET /" on c and reads the response and its body.
func Request(t testing.TB, c net.Conn, br *bufio.Reader) *http.Response {
	t.Helper()
	c.SetDeadline(time.Now().Add(EventTimeout))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+c.RemoteAddr().String()+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}
