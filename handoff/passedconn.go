package handoff

import (
	"cmp"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/wire"
)

// passedConn is a connection baton passed under round-robin. It is not a
// *net.TCPConn: net.FileConn, the only way to make one of a descriptor,
// duplicates it and asks the kernel for its type, both addresses and five
// socket options, ten system calls a connection that accept(2) under the
// other modes does without (and each one a Go system call, which keeps
// the runtime's monitor thread polling). That made a worker's side of a
// passed connection cost more than baton's and round-robin serve 0.77 of
// shared with a new connection per request (BENCHMARKS.md). A passedConn
// is the descriptor itself, made non-blocking and given to the runtime's
// poller: one fcntl(2) and the poller's epoll_ctl(2), as for a connection
// accepted under the other modes. What the other system calls set, it
// gets from baton's listening socket, which baton gave TCP_NODELAY and
// the keepalive net sets (an accepted socket inherits them); its
// addresses are asked for when first wanted.
//
// It has what *net.TCPConn and *net.UnixConn have that servers use:
// net.Conn, syscall.Conn, CloseRead and CloseWrite, and SetNoDelay,
// SetKeepAlive, SetKeepAlivePeriod and SetLinger; its errors are
// *net.OpError, with net.ErrClosed once closed, as net's are. A program
// that asserts *net.TCPConn gets false: assert the methods it needs.
type passedConn struct {
	f *os.File

	mu             sync.Mutex // guards the addresses, asked for once
	local, remote  net.Addr
	localOK, remOK bool
	peer           netip.AddrPort // the client's, if baton said
}

// newPassedConn makes a connection of a descriptor baton passed, from the
// client at peer (if valid: baton read it off accept(2), else it is
// asked for when wanted); it owns fd from then on, error or not. Baton
// accepts the descriptor non-blocking, so os.NewFile gives it to the
// poller as it is; one from a baton that did not (an older one, during a
// self-upgrade) is made non-blocking and given to it anew.
func newPassedConn(fd int, peer netip.AddrPort) (*passedConn, error) {
	f := os.NewFile(uintptr(fd), "baton-conn")
	if f.SetDeadline(time.Time{}) == os.ErrNoDeadline {
		var err error
		if f, err = pollable(f); err != nil {
			return nil, err
		}
	}
	return &passedConn{f: f, peer: peer}, nil
}

// pollable returns a file for f's descriptor, made non-blocking, that the
// runtime polls; f is closed, error or not.
func pollable(f *os.File) (*os.File, error) {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup, callErr := -1, error(nil)
	err = rc.Control(func(fd uintptr) {
		// A socket's other status flags are none that F_SETFL keeps
		// (no O_APPEND, O_ASYNC, O_DIRECT or O_NOATIME on an accepted
		// socket): one call, not F_GETFL first. The mode is the open
		// file's, which the duplicate shares.
		if _, callErr = unix.FcntlInt(fd, unix.F_SETFL, unix.O_NONBLOCK); callErr != nil {
			callErr = os.NewSyscallError("fcntl", callErr)
		} else if dup, callErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3); callErr != nil {
			callErr = os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", callErr)
		}
	})
	if err = cmp.Or(err, callErr); err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(dup), "baton-conn"), nil
}

func (c *passedConn) Read(b []byte) (int, error) {
	n, err := c.f.Read(b)
	return n, c.opError("read", err)
}

func (c *passedConn) Write(b []byte) (int, error) {
	n, err := c.f.Write(b)
	return n, c.opError("write", err)
}

func (c *passedConn) Close() error { return c.opError("close", c.f.Close()) }

func (c *passedConn) SetDeadline(t time.Time) error {
	return c.opError("set", c.f.SetDeadline(t))
}

func (c *passedConn) SetReadDeadline(t time.Time) error {
	return c.opError("set", c.f.SetReadDeadline(t))
}

func (c *passedConn) SetWriteDeadline(t time.Time) error {
	return c.opError("set", c.f.SetWriteDeadline(t))
}

// SyscallConn gives the descriptor, as (*net.TCPConn).SyscallConn does.
func (c *passedConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }

// CloseRead shuts down the reading side.
func (c *passedConn) CloseRead() error { return c.control("close", shutdown(unix.SHUT_RD)) }

// CloseWrite shuts down the writing side: the peer reads the end.
func (c *passedConn) CloseWrite() error { return c.control("close", shutdown(unix.SHUT_WR)) }

// SetNoDelay sets TCP_NODELAY (on by default, as net's).
func (c *passedConn) SetNoDelay(noDelay bool) error {
	return c.control("set", sockopt(unix.IPPROTO_TCP, unix.TCP_NODELAY, boolInt(noDelay)))
}

// SetKeepAlive turns keepalive probes on or off (on by default, as net's).
func (c *passedConn) SetKeepAlive(keepalive bool) error {
	return c.control("set", sockopt(unix.SOL_SOCKET, unix.SO_KEEPALIVE, boolInt(keepalive)))
}

// SetKeepAlivePeriod sets the idle time before the first probe, in
// whole seconds rounded up, as (*net.TCPConn).SetKeepAlivePeriod does: 0
// is net's default, 15 s; a negative d changes nothing.
func (c *passedConn) SetKeepAlivePeriod(d time.Duration) error {
	if d < 0 {
		return nil
	}
	if d == 0 {
		d = wire.KeepAliveIdle
	}
	return c.control("set", sockopt(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int((d+time.Second-1)/time.Second)))
}

// SetLinger sets SO_LINGER as (*net.TCPConn).SetLinger does: sec < 0,
// the default (close returns at once, the data still goes).
func (c *passedConn) SetLinger(sec int) error {
	l := unix.Linger{Onoff: int32(boolInt(sec >= 0)), Linger: int32(max(sec, 0))}
	return c.control("set", func(fd int) error { return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l) })
}

func shutdown(how int) func(int) error {
	return func(fd int) error { return os.NewSyscallError("shutdown", unix.Shutdown(fd, how)) }
}

func sockopt(level, opt, value int) func(int) error {
	return func(fd int) error { return os.NewSyscallError("setsockopt", unix.SetsockoptInt(fd, level, opt, value)) }
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// control runs call on the descriptor.
func (c *passedConn) control(op string, call func(fd int) error) error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return c.opError(op, err)
	}
	var callErr error
	if err := rc.Control(func(fd uintptr) { callErr = call(int(fd)) }); err != nil {
		return c.opError(op, err)
	}
	return c.opError(op, callErr)
}

// LocalAddr returns the address the client connected to.
func (c *passedConn) LocalAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.localOK {
		c.local, c.localOK = c.addr(unix.Getsockname), true
	}
	return c.local
}

// RemoteAddr returns the client's address.
func (c *passedConn) RemoteAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.remOK {
		if c.peer.IsValid() {
			// As net's: an IPv4 socket's address in 4 bytes, an IPv6
			// socket's in 16 (an IPv4 client's too, mapped).
			c.remote = &net.TCPAddr{IP: c.peer.Addr().AsSlice(), Port: int(c.peer.Port())}
		} else {
			c.remote = c.addr(unix.Getpeername)
		}
		c.remOK = true
	}
	return c.remote
}

// addr asks the kernel for one of the addresses; nil if it cannot tell
// (the connection is closed), as net's are then. Under mu.
func (c *passedConn) addr(get func(int) (unix.Sockaddr, error)) net.Addr {
	var sa unix.Sockaddr
	if rc, err := c.f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { sa, _ = get(int(fd)) })
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: sa.Port}
	case *unix.SockaddrInet6:
		a := &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: sa.Port}
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: sa.Name, Net: "unix"}
	}
	return nil
}

// network is "tcp" or "unix", as the connection's address says.
func (c *passedConn) network() string {
	if _, ok := c.LocalAddr().(*net.UnixAddr); ok {
		return "unix"
	}
	return "tcp"
}

// opError makes an error of the file's what net's is: a *net.OpError
// whose Err is the system call's error, os.ErrDeadlineExceeded or
// net.ErrClosed. io.EOF stays itself.
func (c *passedConn) opError(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
		if errno, ok := err.(syscall.Errno); ok {
			err = os.NewSyscallError(pe.Op, errno)
		}
	}
	if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: c.network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
