package steer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file asks the kernel which connections a worker has accepted and
// not begun to serve (Kernel.Unserved), for the signal of a worker left
// out of the program: its queue being empty says it accepted what was
// dealt to it, not that it read the requests. A server that closes at
// SIGTERM what it accepted and has read nothing of (stock uvicorn and
// Puma do, docs/languages.md) would fail those requests.

// Port is where a listener is bound, as sock_diag filters on it: its
// address family and TCP port.
type Port struct {
	Family int
	Port   uint16
}

// PortOf is where the listening socket fd is bound.
func PortOf(fd int) (Port, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return Port{}, os.NewSyscallError("getsockname", err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return Port{unix.AF_INET, uint16(a.Port)}, nil
	case *unix.SockaddrInet6:
		return Port{unix.AF_INET6, uint16(a.Port)}, nil
	}
	return Port{}, fmt.Errorf("not a TCP socket")
}

// Unserved reports whether a process of the tree at pid (a server may
// serve from a child, as gunicorn does) holds a TCP connection accepted
// at one of ports of which it has read nothing yet: its first bytes wait
// unread, or none has arrived and it was established less than young
// ago (a client sends its request right after its handshake; one idle
// longer is a preconnect or a pool's, which waiting would not serve). A
// connection it has read from (a keep-alive one between requests) is
// being served, whatever its state. Only pid's own descriptors being
// unreadable is an error; a child's are skipped.
func (Kernel) Unserved(pid int, ports []Port, young time.Duration) (bool, error) {
	fresh := map[uint32]bool{} // the inodes of such connections, whoever holds them
	for _, p := range ports {
		err := established(p, func(c diagConn) {
			// Inode 0: still in a queue, accepted by no one.
			if c.inode != 0 && c.readNothing(young) {
				fresh[c.inode] = true
			}
		})
		if err != nil {
			return false, err
		}
	}
	if len(fresh) == 0 {
		return false, nil // the common case: no look at the worker's descriptors
	}
	for _, p := range tree(pid) {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		switch {
		case err == nil:
		case p == pid && !errors.Is(err, fs.ErrNotExist):
			return false, err
		default:
			continue // exited meanwhile, or a child of another user's
		}
		for _, e := range ents {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p, e.Name()))
			if !strings.HasPrefix(link, "socket:[") || err != nil {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(link[len("socket:["):], "]"), 10, 32)
			if err == nil && fresh[uint32(inode)] {
				return true, nil
			}
		}
	}
	return false, nil
}

// tree is pid and its descendants, from /proc/PID/task/TID/children.
func tree(pid int) []int {
	pids := []int{pid}
	for i := 0; i < len(pids); i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pids[i]))
		for _, task := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pids[i], task.Name()))
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, c) {
					pids = append(pids, c)
				}
			}
		}
	}
	return pids
}

// diagConn is what sock_diag says of a connection: its socket's inode
// (0 while no process has accepted it), the bytes waiting unread
// (idiag_rqueue), and from its tcp_info (info is false if the kernel's
// is too short to say) the bytes received in all (tcpi_bytes_received;
// both count a FIN as one) and the time since data last arrived, or
// since it was established if none has (tcpi_last_data_recv).
type diagConn struct {
	inode    uint32
	rqueue   uint32
	received uint64
	lastRecv time.Duration
	info     bool
}

// readNothing reports whether the server has read none of c's bytes,
// and either some wait or c is younger than young.
func (c diagConn) readNothing(young time.Duration) bool {
	switch {
	case !c.info:
		return c.rqueue > 0
	case c.received == 0:
		return c.lastRecv < young
	}
	return uint64(c.rqueue) >= c.received
}

// The parts of linux/inet_diag.h and linux/sock_diag.h this file uses.
const (
	inetDiagReqBytecode = 1 // INET_DIAG_REQ_BYTECODE
	inetDiagInfo        = 2 // INET_DIAG_INFO
	inetDiagBcSGe       = 2 // INET_DIAG_BC_S_GE
	inetDiagBcSLe       = 3 // INET_DIAG_BC_S_LE
	sizeofDiagReq       = 56
	sizeofDiagMsg       = 72
	tcpEstablished      = 1
	tcpCloseWait        = 8
)

// The places in struct tcp_info of tcpi_bytes_received and
// tcpi_last_data_recv.
var (
	received = int(unsafe.Offsetof(unix.TCPInfo{}.Bytes_received))
	lastRecv = int(unsafe.Offsetof(unix.TCPInfo{}.Last_data_recv))
)

// established calls each for every TCP connection of family p.Family
// whose local port is p.Port, established or closed by the client only,
// from a sock_diag dump the kernel filters by port.
func established(p Port, each func(diagConn)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return os.NewSyscallError("socket AF_NETLINK", err)
	}
	defer unix.Close(fd)
	// The kernel answers at once; a reply that never comes would hold
	// the worker's signal past its bound.
	tv := unix.NsecToTimeval(int64(time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt SO_RCVTIMEO", err)
	}
	if err := unix.Sendto(fd, dumpRequest(p), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto sock_diag", err)
	}
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return os.NewSyscallError("recvfrom sock_diag", err)
		}
		if done, err := parseDump(buf[:n], each); err != nil || done {
			return err
		}
	}
}

// dumpRequest is a netlink message asking for every TCP socket of
// p.Family in the established and close-wait states with their
// tcp_info, filtered in the kernel by a bytecode that keeps local port
// p.Port (sport >= port, then sport <= port; a jump past the end by 4
// rejects).
func dumpRequest(p Port) []byte {
	ne := binary.NativeEndian
	bytecode := make([]byte, 16)
	// op: code, yes, no (u16); the next op's no holds the port.
	bytecode[0], bytecode[1] = inetDiagBcSGe, 8
	ne.PutUint16(bytecode[2:], 16+4)
	ne.PutUint16(bytecode[6:], p.Port)
	bytecode[8], bytecode[9] = inetDiagBcSLe, 8
	ne.PutUint16(bytecode[10:], 8+4)
	ne.PutUint16(bytecode[14:], p.Port)

	msg := make([]byte, unix.NLMSG_HDRLEN+sizeofDiagReq+unix.SizeofRtAttr+len(bytecode))
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req := msg[unix.NLMSG_HDRLEN:]
	req[0], req[1], req[2] = byte(p.Family), unix.IPPROTO_TCP, 1<<(inetDiagInfo-1)
	ne.PutUint32(req[4:], 1<<tcpEstablished|1<<tcpCloseWait)
	attr := req[sizeofDiagReq:]
	ne.PutUint16(attr[0:], uint16(unix.SizeofRtAttr+len(bytecode)))
	ne.PutUint16(attr[2:], inetDiagReqBytecode)
	copy(attr[unix.SizeofRtAttr:], bytecode)
	return msg
}

// parseDump calls each for every connection in one read of a dump's
// reply, and reports whether the dump is done.
func parseDump(b []byte, each func(diagConn)) (done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(ne.Uint32(b[0:]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return false, fmt.Errorf("sock_diag: a message of %d bytes in a read of %d", l, len(b))
		}
		body := b[unix.NLMSG_HDRLEN:l]
		switch ne.Uint16(b[4:]) {
		case unix.NLMSG_DONE, unix.NLMSG_ERROR:
			// Both carry an errno, negative, or 0.
			if len(body) >= 4 {
				if errno := int32(ne.Uint32(body)); errno < 0 {
					return true, os.NewSyscallError("sock_diag", unix.Errno(-errno))
				}
			}
			return true, nil
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(body) >= sizeofDiagMsg {
				each(diagMsg(body))
			}
		}
		b = b[min(nlmAlign(l), len(b)):]
	}
	return false, nil
}

// diagMsg reads a struct inet_diag_msg and its INET_DIAG_INFO.
func diagMsg(body []byte) diagConn {
	ne := binary.NativeEndian
	c := diagConn{rqueue: ne.Uint32(body[56:]), inode: ne.Uint32(body[68:])}
	for attrs := body[sizeofDiagMsg:]; len(attrs) >= unix.SizeofRtAttr; {
		l := int(ne.Uint16(attrs[0:]))
		if l < unix.SizeofRtAttr || l > len(attrs) {
			break
		}
		if data := attrs[unix.SizeofRtAttr:l]; ne.Uint16(attrs[2:]) == inetDiagInfo && len(data) >= received+8 {
			c.received, c.info = ne.Uint64(data[received:]), true
			c.lastRecv = time.Duration(ne.Uint32(data[lastRecv:])) * time.Millisecond
		}
		attrs = attrs[min(nlmAlign(l), len(attrs)):]
	}
	return c
}

// nlmAlign rounds l up to netlink's alignment of 4.
func nlmAlign(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
