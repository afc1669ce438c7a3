package drain

import (
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// socketPair returns a connected unix stream pair: the server side wrapped
// the way listener.Accept wraps connections, and the client side. A write
// on a unix socket is in the peer's receive queue when it returns, which
// makes the races below deterministic.
func socketPair(t *testing.T) (*conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		cs[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs[i].Close() })
	}
	l := &listener{Listener: oneConn{cs[0]}}
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c, ok := nc.(*conn)
	if !ok || c.raw == nil {
		t.Fatalf("accepted %T, want a wrapped conn with a raw conn", nc)
	}
	return c, cs[1]
}

// oneConn is a listener that accepts c.
type oneConn struct{ c net.Conn }

func (l oneConn) Accept() (net.Conn, error) { return l.c, nil }
func (l oneConn) Close() error              { return nil }
func (l oneConn) Addr() net.Addr            { return l.c.LocalAddr() }

// idle puts c in the state net/http leaves an idle keep-alive connection
// in, idle for an hour, and kicks it.
func idle(t *testing.T, c *conn) {
	t.Helper()
	c.setState(http.StateIdle)
	c.SetReadDeadline(time.Time{}) // as net/http does before waiting for a request
	c.mu.Lock()
	c.since = time.Now().Add(-time.Hour)
	c.mu.Unlock()
	if _, kicked := c.closeIfIdle(time.Now(), time.Second); !kicked {
		t.Fatal("an hour-idle connection was not kicked")
	}
}

func TestKickEndsIdleRead(t *testing.T) {
	c, _ := socketPair(t)
	idle(t, c)
	// net/http may set a deadline after the kick (it does so right after
	// marking a connection idle); the kick must stick.
	c.SetReadDeadline(time.Now().Add(time.Hour))
	_, err := c.Read(make([]byte, 4))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read of a kicked idle connection: %v, want %v", err, os.ErrDeadlineExceeded)
	}
}

// TestKickRacesRequest is the race the kick is built for: the next request
// reaches the kernel just before or after the drain decides the connection
// is idle. It must be read and served, not dropped.
func TestKickRacesRequest(t *testing.T) {
	for _, when := range []string{"before", "after"} {
		t.Run(when, func(t *testing.T) {
			c, client := socketPair(t)
			if when == "after" {
				idle(t, c)
			}
			if _, err := client.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
				t.Fatal(err)
			}
			if when == "before" {
				// The request waits in the queue, net/http has not read it yet.
				idle(t, c)
			}
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			if err != nil || !strings.HasPrefix(string(buf[:n]), "GET") {
				t.Fatalf("Read = %q, %v; want the request", buf[:n], err)
			}
			// The kick is taken back: a later read waits as net/http asked.
			c.mu.Lock()
			kicked, readSince := c.kicked, c.readSince
			c.mu.Unlock()
			if kicked || !readSince {
				t.Errorf("after reading a request: kicked=%t readSince=%t, want false true", kicked, readSince)
			}
			if _, kicked := c.closeIfIdle(time.Now(), time.Second); kicked {
				t.Error("a connection reading a request was kicked")
			}
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("second Read: %v, want net/http's own deadline", err)
			}
		})
	}
}

func TestCloseIfIdleWaitsForGrace(t *testing.T) {
	c, _ := socketPair(t)
	c.setState(http.StateNew)
	now := time.Now()
	due, kicked := c.closeIfIdle(now, time.Minute)
	if kicked || due.Before(now.Add(59*time.Second)) {
		t.Fatalf("new connection: due %v kicked %t; want due in a minute, not kicked", due.Sub(now), kicked)
	}
	c.setState(http.StateActive)
	if due, kicked := c.closeIfIdle(now.Add(time.Hour), time.Minute); kicked || !due.IsZero() {
		t.Fatalf("active connection: due %v kicked %t; want neither", due, kicked)
	}
}

// TestHTTP2FramesAreNotARequest: an idle HTTP/2 connection sent its final
// GOAWAY is closed once it lingered, even if the client sent frames meanwhile
// (settings, pings, window updates: Go's client does on a connection it
// never used). Before, they counted as a request being read, and the
// connection waited for net/http's own close a second after the GOAWAY.
func TestHTTP2FramesAreNotARequest(t *testing.T) {
	c, _ := socketPair(t)
	c.setState(http.StateIdle)
	now := time.Now()
	c.mu.Lock()
	c.h2, c.goneAway, c.readSince = new(h2conn), now, true
	c.mu.Unlock()
	if due, kicked := c.closeIfIdle(now, time.Minute); kicked || !due.Equal(now.Add(http2Linger)) {
		t.Fatalf("just sent its final GOAWAY: due %v kicked %t; want due after %v", due.Sub(now), kicked, http2Linger)
	}
	if _, kicked := c.closeIfIdle(now.Add(http2Linger), time.Minute); !kicked {
		t.Fatal("idle for the linger after its GOAWAY, with frames read since: not kicked")
	}
}

func TestOptionsDefaults(t *testing.T) {
	tests := []struct {
		env     string
		opts    Options
		want    time.Duration
		wantErr string
	}{
		{"", Options{}, DefaultTimeout, ""},
		{"5s", Options{}, 5 * time.Second, ""},
		{"5s", Options{Timeout: time.Minute}, time.Minute, ""},
		{"soon", Options{}, 0, `drain: BATON_DRAIN_TIMEOUT: time: invalid duration "soon"`},
		{"0s", Options{}, 0, `drain: BATON_DRAIN_TIMEOUT="0s": not a positive duration`},
		{"", Options{Timeout: -time.Second}, 0, "drain: negative timeout -1s"},
		{"", Options{IdleGrace: -time.Second}, 0, "drain: negative idle grace -1s"},
	}
	for _, tc := range tests {
		t.Setenv(TimeoutEnv, tc.env)
		got, err := tc.opts.withDefaults()
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("env %q opts %+v: error %v, want %q", tc.env, tc.opts, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.Timeout != tc.want || got.IdleGrace != DefaultIdleGrace || len(got.Signals) != 2 || got.Notify == nil || got.Guard == nil {
			t.Errorf("env %q opts %+v: got %+v, %v; want timeout %v and defaults", tc.env, tc.opts, got, err, tc.want)
		}
	}
}
