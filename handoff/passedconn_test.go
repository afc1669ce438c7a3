package handoff

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/roundrobin"
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

// TestPassedConnAddresses checks that a passed connection's addresses are
// those net gives a connection it accepts, for IPv4, IPv6, and IPv4
// clients of an IPv6 socket (whose addresses the kernel gives mapped):
// baton reads the client's off accept(2) and sends it with the
// descriptor.
func TestPassedConnAddresses(t *testing.T) {
	for _, at := range []struct{ network, addr, client string }{
		{"tcp", "127.0.0.1:0", "127.0.0.1"},
		{"tcp6", "[::1]:0", "::1"},
		{"tcp6", "[::ffff:127.0.0.1]:0", "127.0.0.1"},
	} {
		var got, clients [2]net.Conn // accepted, passed
		for i := range got {
			ln := listenAt(t, at.network, at.addr)
			l, addr := ln, ln.Addr().String()
			if i == 1 {
				b := roundrobin.New(nil, nil)
				addr = rrListenOn(t, b, 1, "http", ln)
				c, err := b.Channel(map[int]string{1: "http"}, 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Setenv(connsEnv, strconv.Itoa(c.WorkerFd))
				t.Setenv(connsListenersEnv, "http")
				ls, err := openChannel(strconv.Itoa(os.Getpid()))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ls["http"].Close() })
				b.Attach(1000, c)
				b.Route([]int{1000})
				t.Cleanup(b.Close)
				l = ls["http"]
			}
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(at.client)}}
			client, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { client.Close() })
			clients[i] = client
			if got[i], err = l.Accept(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { got[i].Close() })
		}
		accepted, passed := got[0], got[1]
		if pc, ok := passed.(*passedConn); !ok || !pc.peer.IsValid() {
			t.Errorf("%s %s: baton did not send the client's address with the connection", at.network, at.addr)
		}
		for _, a := range []struct {
			name             string
			accepted, passed net.Addr
		}{{"remote", accepted.RemoteAddr(), passed.RemoteAddr()}, {"local", accepted.LocalAddr(), passed.LocalAddr()}} {
			want, ok := a.accepted.(*net.TCPAddr)
			got, ok2 := a.passed.(*net.TCPAddr)
			if !ok || !ok2 || !want.IP.Equal(got.IP) || len(want.IP) != len(got.IP) || want.Zone != got.Zone {
				t.Errorf("%s %s: %s address %#v, want %#v", at.network, at.addr, a.name, a.passed, a.accepted)
			}
		}
		if r, ok := passed.RemoteAddr().(*net.TCPAddr); !ok || r.Port != clients[1].LocalAddr().(*net.TCPAddr).Port {
			t.Errorf("%s %s: remote address %v, the client's is %v", at.network, at.addr, passed.RemoteAddr(), clients[1].LocalAddr())
		}
	}
}

// listenAt listens on addr, on a socket of the network's family: an
// IPv4 address in IPv6 form (which net would listen on with an IPv4
// socket) takes IPv4 clients on an IPv6 socket.
func listenAt(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	if network == "tcp" || !ap.Addr().Is4In6() {
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	defer f.Close()
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	return ln
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
	c, err := newPassedConn(fd, netip.AddrPort{})
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
