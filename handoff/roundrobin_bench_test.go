package handoff

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/roundrobin"
	"github.com/batonhq/baton/internal/wire"
)

// The benchmarks below pass connections the way round-robin does, one
// side real and the other written with raw system calls that allocate
// nothing, so that allocs/op is the real side's cost per connection:
// BenchmarkRoundRobinBaton is baton's Balancer (accept, pass, answers),
// BenchmarkRoundRobinWorker the handoff listener (receive, Accept,
// answer), BenchmarkRoundRobin both. Each op is one connection, from the
// client's connect to the end of file it reads once every copy of the
// connection is closed (the worker's and baton's).

// benchWindow is how many connections the client keeps open at once.
const benchWindow = 32

// rawListener returns a blocking loopback TCP listener and its address.
func rawListener(b *testing.B) (int, *unix.SockaddrInet4) {
	b.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	sa := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if err := unix.Bind(fd, sa); err != nil {
		b.Fatal(err)
	}
	if err := unix.Listen(fd, 1024); err != nil {
		b.Fatal(err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		b.Fatal(err)
	}
	return fd, got.(*unix.SockaddrInet4)
}

// rawClients opens n connections to sa, at most benchWindow at once,
// and waits until each is closed by the server (its every copy).
func rawClients(b *testing.B, sa *unix.SockaddrInet4, n int) {
	b.Helper()
	var open [benchWindow]int
	var buf [64]byte
	waitEnd := func(fd int) {
		for {
			got, err := unix.Read(fd, buf[:])
			if err == unix.EINTR {
				continue
			}
			if err != nil && err != unix.ECONNRESET {
				b.Fatal(err)
			}
			if got <= 0 {
				break
			}
		}
		unix.Close(fd)
	}
	for i := range n {
		slot := i % benchWindow
		if i >= benchWindow {
			waitEnd(open[slot])
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.Connect(fd, sa); err != nil {
			b.Fatal(err)
		}
		open[slot] = fd
	}
	for i := max(0, n-benchWindow); i < n; i++ {
		waitEnd(open[i%benchWindow])
	}
}

// rawMsg receives one message with up to one descriptor, allocating
// nothing.
type rawMsg struct {
	buf [64 << 10]byte // whole messages (wire.BatchBytes)
	oob [128]byte      // wire.MaxBatch descriptors
	iov unix.Iovec
	hdr unix.Msghdr
}

func (m *rawMsg) recv(fd int, rights []int32) (data []byte, _ []int32, err error) {
	m.iov.Base, m.iov.Len = &m.buf[0], uint64(len(m.buf))
	m.hdr = unix.Msghdr{Iov: &m.iov, Iovlen: 1, Control: &m.oob[0], Controllen: uint64(len(m.oob))}
	n, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.hdr)), unix.MSG_CMSG_CLOEXEC)
	if e != 0 {
		return nil, nil, e
	}
	oob := m.oob[:m.hdr.Controllen]
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS {
			for p := unix.CmsgLen(0); p+4 <= int(h.Len); p += 4 {
				rights = append(rights, int32(binary.NativeEndian.Uint32(oob[p:])))
			}
		}
		next := unix.CmsgSpace(int(h.Len) - unix.CmsgLen(0))
		if next > len(oob) || next <= 0 {
			break
		}
		oob = oob[next:]
	}
	return m.buf[:n], rights, nil
}

// fakeWorker reads a worker's end of its channel as a worker would: it
// says it reads batches, closes each descriptor and answers its line
// BATON_ACK.
func fakeWorker(fd int) {
	var m rawMsg
	var rights [wire.MaxBatch]int32
	ack := make([]byte, 0, 64)
	unix.Write(fd, wire.AppendBatch(nil, wire.MaxBatch)) // as handoff does
	for {
		data, got, err := m.recv(fd, rights[:0])
		if err == unix.EINTR {
			continue
		}
		if err != nil || len(data) == 0 {
			return
		}
		for _, r := range got {
			unix.Close(int(r))
		}
		// Each line carries one connection: "seq":N}} ends it.
		for {
			_, rest, ok := bytes.Cut(data, []byte(`"seq":`))
			if !ok {
				break
			}
			end := bytes.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
			if end < 0 {
				break
			}
			ack = append(append(append(ack[:0], `{"cmd":"BATON_ACK","seq":`...), rest[:end]...), "}\n"...)
			unix.Write(fd, ack)
			data = rest[end:]
		}
	}
}

// fakeBaton accepts on ln and passes each connection over ours as baton
// does, closing its copy when the worker answers.
func fakeBaton(ln, ours int) {
	var mu sync.Mutex
	held := map[uint64]int{}
	go func() {
		r := make([]byte, 4096)
		var pending []byte
		for {
			n, err := unix.Read(ours, r)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n <= 0 {
				return
			}
			pending = append(pending, r[:n]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				_, rest, found := bytes.Cut(pending[:i], []byte(`"seq":`))
				if !found { // BATON_BATCH: this baton sends one at a time
					pending = pending[:copy(pending, pending[i+1:])]
					continue
				}
				var seq uint64
				for _, c := range rest {
					if c < '0' || c > '9' {
						break
					}
					seq = seq*10 + uint64(c-'0')
				}
				mu.Lock()
				unix.Close(held[seq])
				delete(held, seq)
				mu.Unlock()
				pending = pending[:copy(pending, pending[i+1:])]
			}
		}
	}()
	go func() {
		line := make([]byte, 0, 128)
		oob := unix.UnixRights(0)
		start := wire.ConnStart("http")
		var sa unix.RawSockaddrInet4 // the listener is IPv4
		for seq := uint64(1); ; seq++ {
			n := uint32(unix.SizeofSockaddrInet4)
			r, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(ln), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&n)),
				unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0, 0)
			if e == unix.EINTR || e == unix.ECONNABORTED {
				continue
			}
			if e != 0 {
				return
			}
			fd := int(r)
			mu.Lock()
			held[seq] = fd
			mu.Unlock()
			port := (*[2]byte)(unsafe.Pointer(&sa.Port))
			line = wire.AppendConn(line[:0], start, seq, netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(port[0])<<8|uint16(port[1])))
			binary.NativeEndian.PutUint32(oob[unix.CmsgLen(0):], uint32(fd))
			if err := unix.Sendmsg(ours, line, oob, nil, 0); err != nil {
				return
			}
		}
	}()
}

// benchWorker opens a worker's channel at fd as openChannel does and
// serves its "http" listener: every connection is closed at once.
func benchWorker(b *testing.B, fd int) {
	b.Setenv(connsEnv, strconv.Itoa(fd))
	b.Setenv(connsListenersEnv, "http")
	ls, err := openChannel(strconv.Itoa(os.Getpid()))
	if err != nil {
		b.Fatal(err)
	}
	l := ls["http"]
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// benchBalancer starts a Balancer on a new loopback listener with two
// workers' channels; worker(fd) serves each worker's end.
func benchBalancer(b *testing.B, worker func(fd int)) *unix.SockaddrInet4 {
	b.Helper()
	ln, sa := rawListener(b)
	bal := roundrobin.New(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := bal.Listen(1, ln, "http"); err != nil {
		b.Fatal(err)
	}
	var pids []int
	for i := range 2 {
		c, err := bal.Channel(map[int]string{1: "http"}, 0)
		if err != nil {
			b.Fatal(err)
		}
		worker(c.WorkerFd)
		bal.Attach(1000+i, c)
		pids = append(pids, 1000+i)
	}
	bal.Route(pids)
	b.Cleanup(bal.Close)
	return sa
}

func BenchmarkRoundRobinBaton(b *testing.B) {
	sa := benchBalancer(b, func(fd int) {
		b.Cleanup(func() { unix.Close(fd) })
		go fakeWorker(fd)
	})
	rawClients(b, sa, benchWindow) // warm up
	b.ReportAllocs()
	b.ResetTimer()
	rawClients(b, sa, b.N)
}

func BenchmarkRoundRobinWorker(b *testing.B) {
	ln, sa := rawListener(b)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fds[0]) })
	benchWorker(b, fds[1])
	fakeBaton(ln, fds[0])
	b.Cleanup(func() {
		unix.Shutdown(ln, unix.SHUT_RDWR)
		unix.Shutdown(fds[0], unix.SHUT_RDWR)
	})
	rawClients(b, sa, benchWindow)
	b.ReportAllocs()
	b.ResetTimer()
	rawClients(b, sa, b.N)
}

func BenchmarkRoundRobin(b *testing.B) {
	sa := benchBalancer(b, func(fd int) { benchWorker(b, fd) })
	rawClients(b, sa, benchWindow)
	b.ReportAllocs()
	b.ResetTimer()
	rawClients(b, sa, b.N)
}
