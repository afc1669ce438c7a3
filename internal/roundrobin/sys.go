package roundrobin

import (
	"encoding/binary"
	"io"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/wire"
)

// The system calls made for each connection (accept4, sendmsg, the read
// of the answers, the close of baton's copy) are raw. They do not block
// (the sockets are non-blocking, sendmsg is MSG_DONTWAIT), and a Syscall
// tells the Go runtime that they might: the first after baton was idle
// wakes the runtime's monitor thread, which then looks every 20 µs for a
// millisecond. At every burst of connections that was a sixth of
// baton's CPU on this path. One close can wait: that of the last copy of
// a socket a worker set SO_LINGER on, whose data has not gone yet. It
// holds one goroutine and its thread, not the accept loop (it is not
// under the lock), until the signal the runtime sends a goroutine that
// has run for 10 ms ends the wait (measured: 13 ms with GOMAXPROCS=1,
// for a linger of 5 s); the data still goes, as after any close.

// accept4 accepts a connection on the non-blocking listening socket fd,
// non-blocking itself, and returns the client's address (zero for one
// not TCP/IP, or with an IPv6 zone) from sa, which it fills; raw, and
// without x/sys's Accept4, which decodes the address at an allocation per
// connection. The address saves the worker asking the kernel for it, and
// the mode saves it setting it: Go's and Node's both make a socket
// non-blocking, and baton's copy is only ever closed.
func accept4(fd uintptr, sa *unix.RawSockaddrAny) (int, netip.AddrPort, error) {
	n := uint32(unix.SizeofSockaddrAny)
	nfd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, fd, uintptr(unsafe.Pointer(sa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(nfd), peerOf(sa, n), nil
}

// peerOf reads a TCP/IP address of n bytes in sa; zero if it is not one,
// or has a zone (a worker finds the zone's name from its number).
func peerOf(sa *unix.RawSockaddrAny, n uint32) netip.AddrPort {
	switch {
	case sa.Addr.Family == unix.AF_INET && n >= unix.SizeofSockaddrInet4:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), port(in.Port))
	case sa.Addr.Family == unix.AF_INET6 && n >= unix.SizeofSockaddrInet6:
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		if in.Scope_id == 0 {
			return netip.AddrPortFrom(netip.AddrFrom16(in.Addr), port(in.Port))
		}
	}
	return netip.AddrPort{}
}

// port reads a port in network order.
func port(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// closeFd closes a descriptor, raw.
func closeFd(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// sender sends lines with their descriptors on a unix stream socket,
// from buffers it keeps.
type sender struct {
	oob []byte
	iov unix.Iovec
	hdr unix.Msghdr
}

// send sends data with fds (at most wire.MaxBatch) on the socket to,
// without waiting; n is how much of data went (the descriptors go with
// the first byte).
func (s *sender) send(to int, data []byte, fds []int) (int, error) {
	if s.oob == nil {
		s.oob = make([]byte, unix.CmsgSpace(wire.MaxBatch*4))
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&s.oob[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SCM_RIGHTS
	h.SetLen(unix.CmsgLen(len(fds) * 4))
	for i, fd := range fds {
		binary.NativeEndian.PutUint32(s.oob[unix.CmsgLen(i*4):], uint32(fd))
	}
	s.iov.Base = &data[0]
	s.iov.SetLen(len(data))
	s.hdr = unix.Msghdr{Iov: &s.iov, Control: &s.oob[0]}
	s.hdr.SetIovlen(1)
	s.hdr.SetControllen(unix.CmsgSpace(len(fds) * 4))
	n, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(to), uintptr(unsafe.Pointer(&s.hdr)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
	s.iov.Base, s.hdr.Iov, s.hdr.Control = nil, nil, nil // keeps nothing alive
	if e != 0 {
		return 0, os.NewSyscallError("sendmsg", e)
	}
	return int(n), nil
}

// reader reads a non-blocking descriptor that the runtime polls,
// waiting in the poller while there is nothing to read.
type reader struct{ rc syscall.RawConn }

func (r reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n uintptr
	var e unix.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			n, _, e = unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			if e != unix.EINTR {
				return e != unix.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case e != 0:
		return 0, os.NewSyscallError("read", e)
	case n == 0:
		return 0, io.EOF
	}
	return int(n), nil
}

// setInherited gives the stream listening socket fd what Go's net sets on
// a TCP connection it accepts (wire.KeepAliveIdle and the rest), so that
// every connection baton accepts there and passes on has it from the
// start, and a Go worker need not set it on each one. Nothing for a unix
// socket.
func setInherited(fd int) error {
	if domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || domain == unix.AF_UNIX {
		return os.NewSyscallError("getsockopt", err)
	}
	for _, o := range []struct{ level, opt, value int }{
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(wire.KeepAliveIdle / time.Second)},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(wire.KeepAliveInterval / time.Second)},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, wire.KeepAliveCount},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.value); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
	}
	return nil
}
