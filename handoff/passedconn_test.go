package handoff

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpConn is what a server may ask of a *net.TCPConn beyond net.Conn.
type tcpConn interface {
	net.Conn
	syscall.Conn
	CloseRead() error
	CloseWrite() error
	SetNoDelay(bool) error
	SetKeepAlive(bool) error
	SetKeepAlivePeriod(time.Duration) error
	SetLinger(int) error
}

// acceptedPair returns a connection of each kind, with its client: one
// net's listener accepted and one baton passed under round-robin.
func acceptedPair(t *testing.T) map[string][2]net.Conn {
	t.Helper()
	out := map[string][2]net.Conn{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	b, addr, ws := rrSetup(t, 1)
	b.Route(pids(ws))
	for name, accept := range map[string]struct {
		addr string
		l    net.Listener
	}{"accepted": {l.Addr().String(), l}, "passed": {addr, ws[0].l}} {
		client, err := net.Dial("tcp", accept.addr)
		if err != nil {
			t.Fatal(err)
		}
		c, err := accept.l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			client.Close()
			c.Close()
		})
		out[name] = [2]net.Conn{c, client}
	}
	return out
}

// TestPassedConnIsLikeAccepted checks that a connection baton passed is
// what one a Go server accepts is, in everything but its type: its
// methods, addresses, socket options, errors and half-close.
func TestPassedConnIsLikeAccepted(t *testing.T) {
	options := []struct {
		name       string
		level, opt int
	}{
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
	}
	got := map[string]map[string]int{}
	for name, pair := range acceptedPair(t) {
		c, client := pair[0], pair[1]
		tc, ok := c.(tcpConn)
		if !ok {
			t.Fatalf("%s: a %T lacks a method of *net.TCPConn", name, c)
		}
		if c.RemoteAddr().String() != client.LocalAddr().String() || c.LocalAddr().String() != client.RemoteAddr().String() {
			t.Errorf("%s: addresses %v <- %v, want %v <- %v", name, c.LocalAddr(), c.RemoteAddr(), client.RemoteAddr(), client.LocalAddr())
		}
		if _, ok := c.RemoteAddr().(*net.TCPAddr); !ok {
			t.Errorf("%s: remote address is a %T, want *net.TCPAddr", name, c.RemoteAddr())
		}
		raw, err := tc.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		got[name] = map[string]int{}
		raw.Control(func(fd uintptr) {
			for _, o := range options {
				v, err := unix.GetsockoptInt(int(fd), o.level, o.opt)
				if err != nil {
					t.Fatalf("%s: %s: %v", name, o.name, err)
				}
				if o.name == "TCP_NODELAY" {
					v = min(v, 1) // on reads as any non-zero
				}
				got[name][o.name] = v
			}
		})

		if _, err := client.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("%s: read %q, %v", name, buf, err)
		}
		c.SetReadDeadline(time.Now().Add(-time.Second))
		_, err = c.Read(buf)
		var op *net.OpError
		var ne net.Error
		if !errors.As(err, &op) || op.Op != "read" || !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: read past its deadline: %#v, want a *net.OpError that times out", name, err)
		}
		c.SetReadDeadline(time.Time{})
		if err := tc.CloseWrite(); err != nil {
			t.Fatalf("%s: CloseWrite: %v", name, err)
		}
		if n, err := client.Read(buf); n != 0 || err != io.EOF {
			t.Errorf("%s: the client read %d bytes, %v after CloseWrite, want io.EOF", name, n, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("%s: Close: %v", name, err)
		}
		if _, err := c.Read(buf); !errors.As(err, &op) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s: read after Close: %v, want a *net.OpError with net.ErrClosed", name, err)
		}
	}
	for _, o := range options {
		if got["passed"][o.name] != got["accepted"][o.name] {
			t.Errorf("%s: passed %d, accepted %d", o.name, got["passed"][o.name], got["accepted"][o.name])
		}
	}
}

// TestPassedConnIdleTimeoutIsSilent checks that net/http closes an idle
// passed connection at its ReadTimeout without a word, as it does an
// accepted one: a read error that is not a net error would get a
// "400 Bad Request" written into the connection instead.
func TestPassedConnIdleTimeoutIsSilent(t *testing.T) {
	b, addr, ws := rrSetup(t, 1)
	b.Route(pids(ws))
	srv := &http.Server{ReadTimeout: 100 * time.Millisecond, Handler: http.NotFoundHandler()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ws[0].l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c) // until the server closes it
	if err != nil || len(got) != 0 {
		t.Errorf("an idle connection got %q, %v; want the end and nothing else", got, err)
	}
}

// TestPassedConnUnixAddr checks a passed unix connection's addresses.
func TestPassedConnUnixAddr(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	lf, err := l.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	// The client is in the listener's queue already: Dial returned.
	fd, _, err := unix.Accept4(int(lf.Fd()), unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	c, err := newPassedConn(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UnixAddr); !ok || a.Name != path || a.Net != "unix" {
		t.Errorf("local address %#v, want unix %s", c.LocalAddr(), path)
	}
	c.Close()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after Close: %v, want net.ErrClosed", err)
	}
}
