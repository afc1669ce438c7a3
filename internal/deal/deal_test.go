package deal

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// group binds n SO_REUSEPORT sockets listening on one port of
// 127.0.0.1, in the kernel's order, and returns them and the port.
func group(t *testing.T, n int) ([]int, int) {
	t.Helper()
	var fds []int
	port := 0
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(fd, 128); err != nil {
			t.Fatal(err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			t.Fatal(err)
		}
		port = sa.(*unix.SockaddrInet4).Port
		fds = append(fds, fd)
	}
	return fds, port
}

// queued is the number of connections waiting in each socket's queue.
func queued(fds []int) []int {
	out := make([]int, len(fds))
	for i, fd := range fds {
		if info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			out[i] = int(info.Unacked)
		}
	}
	return out
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// dial opens n connections to port, closed at the test's end, and
// returns each socket's queue once the kernel has queued them all.
func dial(t *testing.T, port int, fds []int, n int) []int {
	t.Helper()
	want := sum(queued(fds)) + n
	for range n {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	for deadline := time.Now().Add(5 * time.Second); sum(queued(fds)) < want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v connections queued, want %d in all", queued(fds), want)
		}
	}
	return queued(fds)
}

// newDealer is a Dealer holding fds, attached to their group.
func newDealer(t *testing.T, fds []int) (*Dealer, []uint32) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading the program needs CAP_BPF: run as root")
	}
	d, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	var keys []uint32
	for _, fd := range fds {
		key, err := d.Add(fd)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	if err := d.Attach(fds[0]); err != nil {
		t.Fatal(err)
	}
	return d, keys
}

func TestDealsInTurn(t *testing.T) {
	fds, port := group(t, 4)
	d, keys := newDealer(t, fds)
	if !slices.Equal(keys, []uint32{0, 1, 2, 3}) {
		t.Fatalf("keys %v, want the first free each time", keys)
	}
	if err := d.Deal(keys[1:]); err != nil {
		t.Fatal(err)
	}
	if got, want := dial(t, port, fds, 64), []int{0, 22, 21, 21}; !slices.Equal(got, want) {
		t.Fatalf("queues %v after 64 connections dealt to the last three, want %v", got, want)
	}
	// Fewer, in another order: each gets its turn from there on.
	if err := d.Deal([]uint32{keys[3], keys[0]}); err != nil {
		t.Fatal(err)
	}
	if got, want := dial(t, port, fds, 10), []int{5, 22, 21, 26}; !slices.Equal(got, want) {
		t.Fatalf("queues %v after 10 more dealt to the last and first, want %v", got, want)
	}
	// None: the kernel's hash picks, over every socket.
	if err := d.Deal(nil); err != nil {
		t.Fatal(err)
	}
	if got := dial(t, port, fds, 8); sum(got) != 82 {
		t.Fatalf("queues %v, want 82 in all", got)
	}
}

func TestAdoptedDealerGoesOn(t *testing.T) {
	fds, port := group(t, 3)
	d, keys := newDealer(t, fds)
	if err := d.Deal(keys[:2]); err != nil {
		t.Fatal(err)
	}
	dial(t, port, fds, 4)
	// What another process gets: copies of the descriptors.
	var fdsOf Fds
	for _, p := range []struct{ from, to *int }{{&d.fds.Prog, &fdsOf.Prog}, {&d.fds.State, &fdsOf.State}, {&d.fds.Turns, &fdsOf.Turns}, {&d.fds.Socks, &fdsOf.Socks}} {
		fd, err := unix.FcntlInt(uintptr(*p.from), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		*p.to = fd
	}
	d.Close()
	a, err := Adopt(fdsOf)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.n != 2 {
		t.Fatalf("adopted dealer deals to %d sockets, want 2", a.n)
	}
	if got, want := dial(t, port, fds, 4), []int{4, 4, 0}; !slices.Equal(got, want) {
		t.Fatalf("queues %v once adopted, want %v: the program goes on as it was", got, want)
	}
	// A socket is in the map once: adding it again is refused.
	if key, err := a.Add(fds[2]); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("Add of a socket in the map already: key %d, %v; want EBUSY", key, err)
	}
	if err := a.Deal([]uint32{keys[2]}); err != nil {
		t.Fatal(err)
	}
	if got, want := dial(t, port, fds, 3), []int{4, 4, 3}; !slices.Equal(got, want) {
		t.Fatalf("queues %v after the adopted dealer dealt to the third, want %v", got, want)
	}
}

func TestQueueMovesWhenASocketLeaves(t *testing.T) {
	fds, port := group(t, 3)
	d, keys := newDealer(t, fds)
	if err := d.Deal(keys[1:]); err != nil {
		t.Fatal(err)
	}
	if got, want := dial(t, port, fds, 10), []int{0, 5, 5}; !slices.Equal(got, want) {
		t.Fatalf("queues %v, want %v", got, want)
	}
	if err := d.Deal(keys[2:]); err != nil {
		t.Fatal(err)
	}
	// Whatever net.ipv4.tcp_migrate_req says, the program moves them.
	if err := unix.Shutdown(fds[1], unix.SHUT_RDWR); err != nil {
		t.Fatal(err)
	}
	if got := queued([]int{fds[0], fds[2]}); !slices.Equal(got, []int{0, 10}) {
		t.Fatalf("queues %v of the sockets left, want [0 10]: the leaving socket's five move to the one dealt to", got)
	}
}

func TestSocketIsInOneMapOnly(t *testing.T) {
	fds, _ := group(t, 1)
	newDealer(t, fds)
	other, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Add(fds[0]); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("Add of a socket in another dealer's map: %v, want EBUSY", err)
	}
}

func TestVerifierSaysWhy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading a program needs CAP_BPF: run as root")
	}
	// Returns r0 without setting it.
	_, err := loadProgram([]insn{op(unix.BPF_JMP|unix.BPF_EXIT, 0, 0, 0, 0)})
	if err == nil || !strings.Contains(err.Error(), "the verifier says: ") || !strings.Contains(err.Error(), "R0") {
		t.Fatalf("load of a bad program: %v, want the verifier's reason naming R0", err)
	}
}
