package steer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/deal"
)

// Kernel is Env's part that the kernel answers: the syscalls on a
// group's sockets. RecheckLater is the shell's.
type Kernel struct {
	// MigrateReq is the file that says whether the kernel moves the
	// queue of a closed SO_REUSEPORT socket to its siblings.
	MigrateReq string
}

// Classic BPF's ancillary load of a random number (linux/filter.h).
const (
	skfAdOff    = 0xfffff000 // SKF_AD_OFF, -0x1000
	skfAdRandom = 56         // SKF_AD_RANDOM
)

// NewGroup makes the group of the listener fd, with a dealer if dealt
// and the kernel loads one. detach drops the program another baton may
// have left attached to it (a socket from systemd), so that its maps,
// which hold the socket, are freed; never while that baton still steers.
func NewGroup(name string, fd int, detach, dealt bool) *Group {
	g := &Group{Name: name, Socks: []*Socket{{FD: fd}}}
	if detach {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
	}
	g.Seat(dealt, detach)
	return g
}

// Seat gives g a dealer holding all its sockets if dealt, or says in
// Random why it has none. retry waits for the maps of a program just
// detached to let go of the sockets (the kernel frees them shortly after).
func (g *Group) Seat(dealt, retry bool) {
	if !dealt {
		g.Random = "turned off"
		return
	}
	d, err := deal.New()
	if err != nil {
		g.Random = err.Error()
		return
	}
	for _, gs := range g.Socks {
		key, err := d.Add(gs.FD)
		for deadline := time.Now().Add(time.Second); retry && errors.Is(err, unix.EBUSY) && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			key, err = d.Add(gs.FD)
		}
		if err != nil {
			d.Close()
			g.Random = err.Error()
			return
		}
		gs.Key = key
	}
	g.Deal, g.Random = d, ""
}

// DealerFds returns the descriptors of g's dealer, to pass on.
func (g *Group) DealerFds() (deal.Fds, bool) {
	d, ok := g.Deal.(*deal.Dealer)
	if !ok {
		return deal.Fds{}, false
	}
	return d.Fds(), true
}

// Queued is the number of connections waiting in a listening socket's
// accept queue (TCP_INFO's tcpi_unacked, for a listener).
func (Kernel) Queued(fd int) uint32 {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0
	}
	return info.Unacked
}

// Bind is BindBeside.
func (Kernel) Bind(beside int) (int, error) { return BindBeside(beside) }

// Census counts the TCP sockets listening where fds[0] is bound
// (ListenersAt), and asks each of fds whether it listens.
func (Kernel) Census(fds []int) (int, []bool, error) {
	n, err := ListenersAt(fds[0])
	if err != nil {
		return 0, nil, err
	}
	listening := make([]bool, len(fds))
	for i, fd := range fds {
		on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		listening[i] = err == nil && on == 1
	}
	return n, listening, nil
}

// AttachRandom attaches program(to) to fd's group.
func (Kernel) AttachRandom(fd int, to []int) error {
	prog := program(to)
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog); err != nil {
		return os.NewSyscallError("setsockopt SO_ATTACH_REUSEPORT_CBPF", err)
	}
	return nil
}

// Detach drops the program attached to fd's group.
func (Kernel) Detach(fd int) {
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
}

// Close shuts fd down, which takes it out of its group, and closes it.
func (Kernel) Close(fd int) {
	unix.Shutdown(fd, unix.SHUT_RDWR)
	unix.Close(fd)
}

// MigrateOff reports whether k.MigrateReq says 0.
func (k Kernel) MigrateOff() bool {
	b, err := os.ReadFile(k.MigrateReq)
	return err == nil && strings.TrimSpace(string(b)) == "0"
}

// program returns the classic BPF program that picks one of the sockets
// at indices to, at random.
func program(to []int) []unix.SockFilter {
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdOff + skfAdRandom},
		{Code: unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K, K: uint32(len(to))},
	}
	for i, idx := range to {
		if i < len(to)-1 {
			// A == i: the next instruction; else skip it.
			prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(i), Jt: 0, Jf: 1})
		}
		prog = append(prog, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: uint32(idx)})
	}
	return prog
}

// ListenersAt counts the TCP sockets listening where fd is bound, from
// /proc/net/tcp or tcp6, which lists listening sockets first.
func ListenersAt(fd int) (int, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, os.NewSyscallError("getsockname", err)
	}
	var path, local string
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		path, local = "/proc/net/tcp", fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(a.Addr[:]), a.Port)
	case *unix.SockaddrInet6:
		var b strings.Builder
		for i := 0; i < 16; i += 4 {
			fmt.Fprintf(&b, "%08X", binary.NativeEndian.Uint32(a.Addr[i:]))
		}
		path, local = "/proc/net/tcp6", fmt.Sprintf("%s:%04X", b.String(), a.Port)
	default:
		return 0, fmt.Errorf("not a TCP socket")
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	n := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "0A" {
			break
		}
		if fields[1] == local {
			n++
		}
	}
	return n, sc.Err()
}

// BindBeside binds a new SO_REUSEPORT socket where fd is bound, with its
// options, and makes it listen: the kernel then spreads new connections
// over both.
func BindBeside(fd int) (int, error) {
	nfd, err := BindNear(fd)
	if err != nil {
		return -1, err
	}
	if err := unix.Listen(nfd, listenBacklog()); err != nil {
		unix.Close(nfd)
		return -1, os.NewSyscallError("listen", err)
	}
	return nfd, nil
}

// BindNear binds, without listening, a new SO_REUSEPORT socket where fd
// is bound, with its options.
func BindNear(fd int) (int, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return -1, os.NewSyscallError("getsockname", err)
	}
	family := unix.AF_INET
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		family = unix.AF_INET6
	}
	nfd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	opt := func(level, name int) error {
		v := 1
		if level == unix.IPPROTO_IPV6 {
			if v, err = unix.GetsockoptInt(fd, level, name); err != nil {
				return os.NewSyscallError("getsockopt", err)
			}
		}
		return os.NewSyscallError("setsockopt", unix.SetsockoptInt(nfd, level, name, v))
	}
	err = errors.Join(opt(unix.SOL_SOCKET, unix.SO_REUSEADDR), opt(unix.SOL_SOCKET, unix.SO_REUSEPORT))
	if err == nil && family == unix.AF_INET6 {
		err = opt(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
	}
	if err == nil {
		if err = unix.Bind(nfd, sa); errors.Is(err, unix.EADDRINUSE) {
			err = fmt.Errorf("%w (a socket per worker must be bound by the same user as the listener: run baton as the user systemd binds the .socket as)", os.NewSyscallError("bind", err))
		} else if err != nil {
			err = os.NewSyscallError("bind", err)
		}
	}
	if err != nil {
		unix.Close(nfd)
		return -1, err
	}
	return nfd, nil
}

// listenBacklog is the kernel's limit, as Go's own listeners use it.
func listenBacklog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err == nil {
		var n int
		if _, err := fmt.Sscan(string(b), &n); err == nil && n > 0 {
			return n
		}
	}
	return unix.SOMAXCONN
}
